package credential_test

import (
	"context"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
)

func doctor(t *testing.T, e *env, id string) *rotation.Report {
	t.Helper()
	rep, err := e.m.Doctor(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func finding(rep *rotation.Report) rotation.Finding {
	for _, f := range rep.Findings {
		if f.Severity != "ok" {
			return f
		}
	}
	return rotation.Finding{}
}

// Doctor walks the guide's quick-diagnosis tree; each branch is set up for real.
func TestDoctorDecisionTree(t *testing.T) {
	t.Run("healthy", func(t *testing.T) {
		e := newEnv(t, nil)
		e.put("a", nil)
		if rep := doctor(t, e, "a"); !rep.Healthy || rep.Checks[0].Label != "current" || !rep.Checks[0].OK {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("new credential fails, previous works", func(t *testing.T) {
		e := newEnv(t, nil)
		v1 := e.put("a", nil)
		e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
		e.tg.AddUser("a", v1.Secret) // someone reset the password to the old one
		rep := doctor(t, e, "a")
		f := finding(rep)
		if rep.Healthy || f.Severity != "error" || f.Fix != "nebula-credential rollback a" {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("old revoked before grace ended", func(t *testing.T) {
		e := newEnv(t, nil)
		e.put("a", nil)
		e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
		cur := e.get("a", "current")
		e.tg.AddUser("a", cur.Secret) // the old password was revoked early
		rep := doctor(t, e, "a")
		if f := finding(rep); !rep.Healthy || !strings.Contains(f.Title, "revoked before the grace period ended") {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("grace expired, not retired", func(t *testing.T) {
		e := newEnv(t, nil)
		e.put("a", nil)
		e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
		e.clock.Advance(10 * time.Minute) // no scheduler ran
		rep := doctor(t, e, "a")
		if f := finding(rep); !strings.Contains(f.Title, "grace period expired") || !strings.Contains(f.Fix, "serve") {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("rollback failed", func(t *testing.T) {
		e := newEnv(t, nil)
		e.put("a", nil)
		e.tg.FailNext("verify", rotatortest.Failure{Class: rotator.ClassRejected})
		e.tg.FailNext("revert", rotatortest.Failure{Class: rotator.ClassTransient}, rotatortest.Failure{Class: rotator.ClassPermission})
		e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
		e.clock.Advance(time.Minute)
		e.tick()
		rep := doctor(t, e, "a")
		f := finding(rep)
		if rep.Healthy || !strings.Contains(f.Title, "rollback failed: manual recovery required") || !strings.Contains(f.Fix, "rotations resolve a --keep") {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("last rotation rolled back", func(t *testing.T) {
		e := newEnv(t, nil)
		e.put("a", nil)
		e.tg.FailNext("apply", rotatortest.Failure{Class: rotator.ClassPermission, Message: "permission denied to alter role"})
		e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
		rep := doctor(t, e, "a")
		if f := finding(rep); !rep.Healthy || !strings.Contains(f.Title, "rolled back") || !strings.Contains(f.Detail, "permission denied") {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("current rejected by the target", func(t *testing.T) {
		e := newEnv(t, nil)
		e.put("a", nil)
		e.tg.AddUser("a", secret.Map{"password": secret.New("changed-outside")})
		rep := doctor(t, e, "a")
		if f := finding(rep); rep.Healthy || !strings.Contains(f.Title, "current credential does not authenticate") || f.Fix == "" {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("target down", func(t *testing.T) {
		e := newEnv(t, nil)
		e.put("a", nil)
		e.tg.SetDown(true)
		rep := doctor(t, e, "a")
		if rep.Healthy || !strings.Contains(rep.Checks[0].Detail, "transient") {
			t.Fatalf("%+v", rep)
		}
	})
}
