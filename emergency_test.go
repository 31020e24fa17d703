package credential_test

import (
	"context"
	"errors"
	"testing"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
)

// auditActions returns the audit entries of action for id.
func auditActions(t *testing.T, e *env, action string) []audit.Record {
	t.Helper()
	recs, err := audit.List(context.Background(), e.m.Store(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Record
	for _, r := range recs {
		if r.Action == action {
			out = append(out, r)
		}
	}
	return out
}

func TestEndGraceRetiresPreviousAtOnce(t *testing.T) {
	e := newEnv(t, nil)
	ctx := audit.WithActor(context.Background(), "alice", "")
	v1 := e.put("app/db", nil)
	if _, err := e.m.EndGrace(ctx, "app/db", rotation.EndGraceOptions{}); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("end grace without a rotation: %v", err)
	}
	if _, err := e.m.Rotate(ctx, "app/db", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !e.auth(v1) {
		t.Fatal("previous version must work during grace")
	}
	r, err := e.m.EndGrace(ctx, "app/db", rotation.EndGraceOptions{Reason: "all consumers moved"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Step != rotation.StepRetired || r.Open {
		t.Fatalf("after end grace: step %s open %v", r.Step, r.Open)
	}
	if e.auth(v1) || !e.auth(e.get("app/db", "current")) {
		t.Fatal("after end grace: previous must fail, current must work")
	}
	recs := auditActions(t, e, "grace.end")
	if len(recs) != 1 || recs[0].Actor != "alice" || recs[0].Detail != "ended by hand: all consumers moved" {
		t.Fatalf("audit grace.end: %+v", recs)
	}
	// Nothing left to end.
	if _, err := e.m.EndGrace(ctx, "app/db", rotation.EndGraceOptions{}); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("end grace twice: %v", err)
	}
}

func TestRotateNowDuringGraceRevokesBoth(t *testing.T) {
	e := newEnv(t, nil)
	ctx := audit.WithActor(context.Background(), "oncall", "")
	v1 := e.put("app/db", nil)
	if _, err := e.m.Rotate(ctx, "app/db", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	v2 := e.get("app/db", "current")
	res, err := e.m.RotateNow(ctx, "app/db", credential.EmergencyOptions{Reason: "leaked in CI log"})
	if err != nil {
		t.Fatal(err)
	}
	if res.GraceEnded == nil || res.GraceEnded.FromVersion != 1 || res.GraceEnded.Step != rotation.StepRetired {
		t.Fatalf("grace ended: %+v", res.GraceEnded)
	}
	if r := res.Rotation; r.FromVersion != 2 || r.ToVersion != 3 || r.Step != rotation.StepRetired || r.Open {
		t.Fatalf("emergency rotation: %+v", r)
	}
	if len(res.Revoked) != 2 || res.Revoked[0].Version != 1 || res.Revoked[1].Version != 2 || res.Revoked[0].Effect == "" {
		t.Fatalf("revoked: %+v", res.Revoked)
	}
	v3 := e.get("app/db", "current")
	if e.auth(v1) || e.auth(v2) || !e.auth(v3) || v3.Version != 3 {
		t.Fatal("after an emergency rotation only the new version may log in")
	}
	if _, err := e.m.Get(ctx, "app/db", credential.GetOptions{Label: "previous"}); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("previous label after emergency: %v", err)
	}
	recs := auditActions(t, e, "rotate.emergency")
	if len(recs) != 2 || recs[0].Outcome != "started" || recs[1].Outcome != "ok" || recs[1].Actor != "oncall" || recs[1].Detail != "revoked version(s) 1, 2" {
		t.Fatalf("audit rotate.emergency: %+v", recs)
	}
	info := res.Info()
	if info.Rotation.ToVersion != 3 || info.GraceEnded.FromVersion != 1 || len(info.Revoked) != 2 {
		t.Fatalf("info: %+v", info)
	}
}

func TestRotateNowWithoutGrace(t *testing.T) {
	e := newEnv(t, nil)
	v1 := e.put("a", nil)
	res, err := e.m.RotateNow(context.Background(), "a", credential.EmergencyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.GraceEnded != nil || len(res.Revoked) != 1 || res.Revoked[0].Version != 1 {
		t.Fatalf("result: %+v", res)
	}
	if e.auth(v1) || !e.auth(e.get("a", "current")) {
		t.Fatal("old must fail, new must work")
	}
}

func TestRotateNowRefusesARotationInFlight(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", &credential.Settings{AutoRollback: new(false)})
	e.tg.FailNext("verify", rotatortest.Failure{Class: rotator.ClassRejected})
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); err == nil {
		t.Fatal("verify failure must fail the rotation")
	}
	_, err := e.m.RotateNow(context.Background(), "a", credential.EmergencyOptions{})
	if !errors.Is(err, credential.ErrRotationInProgress) {
		t.Fatalf("emergency over a rotation that needs attention: %v", err)
	}
}
