package server

import (
	"encoding/json"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
)

func (e *env) status(token string) credential.ClusterStatus {
	e.t.Helper()
	r := e.must(200, "GET", "/v1/status", token, nil)
	var st credential.ClusterStatus
	if err := json.Unmarshal(r.body, &st); err != nil {
		e.t.Fatalf("status: %v: %s", err, r.body)
	}
	return st
}

// TestPostgresStatusListsInstances: three servers on one store each record
// heartbeats; any of them lists all three alive, and one that stops is shown
// dead once its heartbeats are overdue. An open rotation shows the instance
// that leased it, and only to tokens whose grants cover the credential.
func TestPostgresStatusListsInstances(t *testing.T) {
	envs := newPGEnvs(t, 3, func(c *Config) {
		c.Instance = InstanceConfig{Version: "test", HeartbeatInterval: 50 * time.Millisecond, DeadAfter: 2 * time.Second}
	})
	a := envs[0]
	ids := map[string]bool{}
	for _, e := range envs {
		ids[e.m.Engine().Owner()] = true
	}
	alive := func(st credential.ClusterStatus) map[string]bool {
		out := map[string]bool{}
		for _, in := range st.Instances {
			if ids[in.ID] {
				out[in.ID] = in.Alive
			}
			if in.Version != "test" {
				t.Errorf("instance %s shows version %q", in.ID, in.Version)
			}
		}
		return out
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st := a.status(a.admin)
		if st.Self != a.m.Engine().Owner() {
			t.Fatalf("self %q, want %q", st.Self, a.m.Engine().Owner())
		}
		al := alive(st)
		if len(al) == 3 && al[envs[0].m.Engine().Owner()] && al[envs[1].m.Engine().Owner()] && al[envs[2].m.Engine().Owner()] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instances never all alive: %+v", st.Instances)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// An open rotation (in grace: a retire job) names who leased it.
	a.must(200, "PUT", "/v1/credentials/app/db", a.admin, pgBody("status-secret-1"))
	a.must(200, "POST", "/v1/rotate/app/db", a.admin, map[string]any{"grace": "1h"})
	st := envs[1].status(envs[1].admin)
	if len(st.Leases) != 1 || st.Leases[0].CredentialID != "app/db" || st.Leases[0].Owner != a.m.Engine().Owner() || !st.Leases[0].OwnerAlive || st.Leases[0].Step != "grace" {
		t.Fatalf("leases: %+v", st.Leases)
	}
	if st := a.status(a.token("read:other")); len(st.Leases) != 0 || len(st.Instances) < 3 {
		t.Fatalf("a token for other/ sees leases %+v, instances %d", st.Leases, len(st.Instances))
	}

	// The third stops: it is dead once DeadAfter passed without a heartbeat.
	gone := envs[2].m.Engine().Owner()
	envs[2].srv.Close()
	for {
		if al := alive(a.status(a.admin)); !al[gone] && al[envs[1].m.Engine().Owner()] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a stopped instance is still shown alive")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
