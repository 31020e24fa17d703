package credential_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
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

// TestDoctorFindsStretchedPolicy: settings stored before validation (or
// through Put) that cannot do what they say make doctor unhealthy.
func TestDoctorFindsStretchedPolicy(t *testing.T) {
	e := newEnv(t, nil)
	g := rotation.Duration(30 * time.Second)
	e.put("a", &credential.Settings{Grace: &g, Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(2 * time.Second)}}})
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
