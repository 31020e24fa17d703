package credential_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
)

// TestRealAdminAttackRefused is issue 10's attack against each real server
// (PostgreSQL with scram-sha-256, MariaDB, Redis): a token with read and
// write on az/ writes a credential naming the platform admin, with a
// periodic policy, for a victim's account, for the admin's own account and
// for a host of its choosing. Every write is refused with a 403 that says
// why, nothing is stored, no rotation runs (a scheduler pass included), the
// foreign host never sees a connection, and the victim and the admin still
// log in afterwards.
func TestRealAdminAttackRefused(t *testing.T) {
	for name, mk := range realTargets() {
		t.Run(name, func(t *testing.T) {
			tg := mk(t)
			m, clk := openReal(t, tg) // admin/db (manages the app's accounts) and app/db, the victim
			ctx := context.Background()
			srv, err := server.New(server.Config{Manager: m, RateLimit: rate.Inf})
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewServer(srv)
			defer func() { ts.Close(); srv.Close() }()
			token := func(grants ...string) string {
				var gs []acl.Grant
				for _, g := range grants {
					gr, _ := acl.ParseGrant(g)
					gs = append(gs, gr)
				}
				_, v, err := server.CreateToken(ctx, m.Store(), server.TokenRequest{Name: "attacker", Grants: gs})
				if err != nil {
					t.Fatal(err)
				}
				return v.Reveal()
			}
			// A foreign "server" that counts connections: the admin's
			// password must never be sent there.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var dialed atomic.Int64
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					dialed.Add(1)
					c.Close()
				}
			}()
			foreignHost, foreignPort, _ := net.SplitHostPort(ln.Addr().String())

			victim, err := m.Get(ctx, "app/db", credential.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			adminC, err := m.Get(ctx, "admin/db", credential.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			victimUser, adminUser := victim.Fields["username"].(string), adminC.Fields["username"].(string)
			fields := func(user string, extra map[string]any) map[string]any {
				f := map[string]any{}
				for k, v := range victim.Fields {
					f[k] = v
				}
				delete(f, "strategy_users")
				delete(f, "owner_role")
				f["username"], f["admin_credential"] = user, "admin/db"
				for k, v := range extra {
					f[k] = v
				}
				return f
			}
			writer := token("read:az/", "write:az/")
			user := token("read:az/", "write:az/", "use:admin/db")
			attacks := []struct {
				name, token string
				fields      map[string]any
				want        string
			}{
				{"victim role, no use grant", writer, fields(victimUser, nil), "has no use grant on admin/db"},
				{"admin's own role, no use grant", writer, fields(adminUser, nil), "has no use grant on admin/db"},
				{"foreign host, no use grant", writer, fields(victimUser, map[string]any{"host": foreignHost, "port": foreignPort}), "has no use grant on admin/db"},
				{"victim role, with use", user, fields(victimUser, nil), fmt.Sprintf("account %q", victimUser)},
				{"admin's own role, with use", user, fields(adminUser, nil), fmt.Sprintf("%q is admin credential admin/db's own login", adminUser)},
				{"foreign host, with use", user, fields(victimUser, map[string]any{"host": foreignHost, "port": foreignPort}), "targets " + net.JoinHostPort(foreignHost, foreignPort)},
				{"unmanaged role, with use", user, fields("postgres", nil), `does not manage account "postgres"`},
			}
			for _, a := range attacks {
				body, _ := json.Marshal(map[string]any{"type": string(tg.typ), "fields": a.fields, "secret": map[string]string{"password": "x"},
					"settings": map[string]any{"policies": []any{map[string]any{"kind": "periodic", "interval": "1h"}}}})
				req, _ := http.NewRequest("PUT", ts.URL+"/v1/credentials/az/evil", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+a.token)
				req.Header.Set("Content-Type", "application/json")
				res, err := ts.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				var eb struct {
					Error struct{ Message string } `json:"error"`
				}
				_ = json.Unmarshal(b, &eb)
				if res.StatusCode != http.StatusForbidden || !strings.Contains(eb.Error.Message, a.want) {
					t.Errorf("%s: %d %s\nwant 403 containing %q", a.name, res.StatusCode, b, a.want)
				}
				if strings.Contains(string(b), "x\"") && strings.Contains(string(b), "password") {
					t.Errorf("%s: the answer quotes a secret: %s", a.name, b)
				}
			}
			if _, err := m.Get(ctx, "az/evil", credential.GetOptions{}); err == nil {
				t.Fatal("a refused write stored az/evil")
			}
			clk.Advance(10 * time.Minute)
			if _, err := m.Engine().Tick(ctx); err != nil {
				t.Fatal(err)
			}
			if rots, err := m.Rotations(ctx, "", false, 100); err != nil || len(rots) != 0 {
				t.Fatalf("a rotation ran: %+v %v", rots, err)
			}
			if n := dialed.Load(); n != 0 {
				t.Fatalf("the foreign host received %d connections", n)
			}
			if err := tg.login(ctx, victim); err != nil {
				t.Fatalf("the victim no longer logs in: %v", err)
			}
			if err := tg.login(ctx, adminC); err != nil {
				t.Fatalf("the admin no longer logs in: %v", err)
			}
			// The victim's own rotation through the admin still works.
			if _, err := m.Rotate(ctx, "app/db", credential.RotateOptions{}); err != nil {
				t.Fatalf("the legitimate rotation: %v", err)
			}
		})
	}
}

// TestApproveOverHTTP: POST /v1/approve/{id} needs write on the credential
// and use on the admin; it records the token as the binder.
func TestApproveOverHTTP(t *testing.T) {
	m := openAt(t, t.TempDir(), true, withRotators)
	ctx := context.Background()
	if _, err := m.Put(ctx, "platform/pg-admin", credential.PutRequest{Type: credential.Postgres,
		Fields: map[string]any{"host": "127.0.0.1", "port": 1, "username": "platform_admin", "manages": []any{"app_*"}}, Secret: secret.Map{"password": secret.New("a")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Put(ctx, "az/app", credential.PutRequest{Type: credential.Postgres,
		Fields: map[string]any{"host": "127.0.0.1", "port": 1, "username": "app_orders", "admin_credential": "platform/pg-admin"}, Secret: secret.Map{"password": secret.New("p")}}); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Manager: m, RateLimit: rate.Inf})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer func() { ts.Close(); srv.Close() }()
	approve := func(grants ...string) (int, map[string]any) {
		var gs []acl.Grant
		for _, g := range grants {
			gr, _ := acl.ParseGrant(g)
			gs = append(gs, gr)
		}
		tok, v, err := server.CreateToken(ctx, m.Store(), server.TokenRequest{Name: "t", Grants: gs})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", ts.URL+"/v1/approve/az/app", nil)
		req.Header.Set("Authorization", "Bearer "+v.Reveal())
		res, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		out["token"] = tok.ID
		return res.StatusCode, out
	}
	if code, out := approve("use:platform/"); code != 403 || !strings.Contains(fmt.Sprint(out), "no write grant covering az/app") {
		t.Fatalf("without write: %d %v", code, out)
	}
	if code, out := approve("write:az/"); code != 403 || !strings.Contains(fmt.Sprint(out), "has no use grant on platform/pg-admin") {
		t.Fatalf("without use: %d %v", code, out)
	}
	code, out := approve("write:az/", "use:platform/pg-admin")
	bs, _ := out["bindings"].([]any)
	if code != 200 || len(bs) != 1 || bs[0].(map[string]any)["by"] != "token:"+out["token"].(string) {
		t.Fatalf("approve: %d %v", code, out)
	}
}
