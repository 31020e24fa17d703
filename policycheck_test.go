package credential_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

func TestPolicyCheck(t *testing.T) {
	g := func(d time.Duration) *rotation.Duration { v := rotation.Duration(d); return &v }
	periodic := func(d time.Duration) []rotation.Policy {
		return []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(d)}}
	}
	for _, tc := range []struct {
		name string
		s    rotation.Settings
		in   rotation.PolicyInput
		want []string // severities
	}{
		{"2s with 30s grace", rotation.Settings{Grace: g(30 * time.Second), Policies: periodic(2 * time.Second)}, rotation.PolicyInput{Strategy: rotator.Dual}, []string{"error"}},
		{"interval eaten by rotation time", rotation.Settings{Grace: g(30 * time.Second), Policies: periodic(31 * time.Second)}, rotation.PolicyInput{Strategy: rotator.Dual, RotationTime: 2 * time.Second}, []string{"error"}},
		{"fine", rotation.Settings{Grace: g(30 * time.Second), Policies: periodic(time.Hour)}, rotation.PolicyInput{Strategy: rotator.Dual}, nil},
		{"in_place has no grace", rotation.Settings{Grace: g(30 * time.Second), Policies: periodic(2 * time.Second)}, rotation.PolicyInput{Strategy: rotator.InPlace}, nil},
		{"grace under 1s", rotation.Settings{Grace: g(500 * time.Millisecond)}, rotation.PolicyInput{Strategy: rotator.Alternating}, []string{"warning"}},
		{"pool drain longer than grace", rotation.Settings{Grace: g(30 * time.Second)}, rotation.PolicyInput{Strategy: rotator.Dual, Consumers: []rotation.ConsumerTiming{{ID: "p", Kind: "pool", DrainTimeout: 5 * time.Minute}}}, []string{"warning"}},
		{"refresh plus drain longer than grace", rotation.Settings{Grace: g(30 * time.Second)}, rotation.PolicyInput{Strategy: rotator.Alternating, Consumers: []rotation.ConsumerTiming{{ID: "p", Refresh: 20 * time.Second, DrainTimeout: 20 * time.Second}}}, []string{"warning"}},
		{"consumers inside grace", rotation.Settings{Grace: g(30 * time.Second)}, rotation.PolicyInput{Strategy: rotator.Dual, Consumers: []rotation.ConsumerTiming{{ID: "a", Refresh: 5 * time.Second}, {ID: "p", DrainTimeout: 25 * time.Second}}}, nil},
		{"in_place ignores consumer timing", rotation.Settings{Grace: g(30 * time.Second)}, rotation.PolicyInput{Strategy: rotator.InPlace, Consumers: []rotation.ConsumerTiming{{ID: "p", DrainTimeout: 5 * time.Minute}}}, nil},
		{"grace under consumer staleness", rotation.Settings{Grace: g(2 * time.Second), ConsumerMaxStaleness: rotation.Duration(5 * time.Second)}, rotation.PolicyInput{Strategy: rotator.Dual}, []string{"warning"}},
	} {
		var got []string
		for _, f := range rotation.CheckPolicy(tc.s, tc.in) {
			got = append(got, f.Severity)
		}
		if len(got) != len(tc.want) || len(got) > 0 && got[0] != tc.want[0] {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}

	// Writing such a policy is refused and changes nothing.
	e := newEnv(t, nil)
	e.put("a", nil)
	err := e.m.SetSettings(context.Background(), "a", credential.Settings{Grace: g(30 * time.Second), Policies: periodic(2 * time.Second)})
	if !errors.Is(err, rotation.ErrBadRequest) {
		t.Fatalf("2s periodic with 30s grace: %v", err)
	}
	s, err := e.m.GetSettings(context.Background(), "a")
	if err != nil || len(s.Policies) != 0 || s.Grace != nil {
		t.Fatalf("settings after a refused write: %+v %v", s, err)
	}
}

// TestDoctorFindsStretchedPolicy: settings stored before validation (by an
// older version) that cannot do what they say make doctor unhealthy.
func TestDoctorFindsStretchedPolicy(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	g := rotation.Duration(30 * time.Second)
	b, _ := json.Marshal(credential.Settings{Grace: &g, Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(2 * time.Second)}}})
	err := e.m.Store().Update(context.Background(), func(tx store.Tx) error {
		c, err := tx.GetCredential(context.Background(), "a")
		if err != nil {
			return err
		}
		c.Settings = b
		return tx.PutCredential(context.Background(), c)
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := e.m.Doctor(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range rep.Findings {
		found = found || f.Severity == "error" && strings.Contains(f.Title, "periodic interval 2s")
	}
	if rep.Healthy || !found {
		t.Fatalf("doctor: healthy %v findings %+v", rep.Healthy, rep.Findings)
	}
}
