package rotator_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// leaky is a rotator whose errors echo secrets, as drivers sometimes do.
type leaky struct{ class rotator.Class }

func (l leaky) Capabilities() rotator.Capabilities {
	return rotator.Capabilities{Strategies: []rotator.Strategy{rotator.Dual}}
}
func (l leaky) Stage(_ context.Context, r rotator.StageRequest) (rotator.StageResponse, error) {
	s := secret.New("minted-secret-9999")
	return rotator.StageResponse{Secret: secret.Map{"key": s}}, &rotator.Error{Class: l.class, Op: "create", RetryAfter: time.Second, Err: errors.New("created " + s.Reveal())}
}
func (l leaky) Apply(_ context.Context, r rotator.ApplyRequest) (rotator.ApplyResponse, error) {
	return rotator.ApplyResponse{}, &rotator.Error{Class: l.class, Op: "alter", Privilege: "CREATEROLE", Err: errors.New("ALTER ROLE x PASSWORD '" + strings.ReplaceAll(r.Pending.Secret["password"].Reveal(), "'", "''") + "' failed; old was " + r.Current.Secret["password"].Reveal())}
}
func (l leaky) Verify(_ context.Context, r rotator.VerifyRequest) (rotator.VerifyResponse, error) {
	return rotator.VerifyResponse{}, errors.New("login with " + r.Credential.Secret["password"].Reveal() + " failed")
}
func (l leaky) Retire(context.Context, rotator.RetireRequest) (rotator.RetireResponse, error) {
	return rotator.RetireResponse{}, nil
}
func (l leaky) Revert(context.Context, rotator.RevertRequest) (rotator.RevertResponse, error) {
	return rotator.RevertResponse{}, nil
}

func TestSanitizeStripsSecretsKeepsClass(t *testing.T) {
	r := rotator.Sanitize(leaky{class: rotator.ClassTransient})
	cur := rotator.Credential{Secret: secret.Map{"password": secret.New("old-pass-1234")}}
	pend := rotator.Credential{Secret: secret.Map{"password": secret.New("new'pass-5678")}}
	_, err := r.Apply(context.Background(), rotator.ApplyRequest{Current: cur, Pending: pend})
	for _, s := range []string{"old-pass-1234", "new'pass-5678", "new''pass-5678"} {
		if strings.Contains(err.Error(), s) {
			t.Fatalf("leak %q in %v", s, err)
		}
	}
	if !rotator.Retryable(err) || rotator.PrivilegeOf(err) != "CREATEROLE" {
		t.Fatalf("class or privilege lost: %v", err)
	}
	_, err = r.Stage(context.Background(), rotator.StageRequest{Current: cur})
	if strings.Contains(err.Error(), "minted-secret-9999") || rotator.RetryAfter(err) != time.Second {
		t.Fatalf("stage error: %v", err)
	}
	_, err = r.Verify(context.Background(), rotator.VerifyRequest{Credential: pend})
	if strings.Contains(err.Error(), "new'pass-5678") || rotator.ClassOf(err) != rotator.ClassUnknown || rotator.Retryable(err) {
		t.Fatalf("verify error: %v", err)
	}
	if rotator.Sanitize(r) != r {
		t.Fatal("double wrap")
	}
}

func TestRegistry(t *testing.T) {
	reg := rotator.NewRegistry()
	reg.Register("x", leaky{})
	if _, err := reg.Lookup("x"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Lookup("y"); rotator.ClassOf(err) != rotator.ClassConfig {
		t.Fatalf("missing type: %v", err)
	}
	if _, ok := rotator.Unwrap(mustLookup(reg, "x")).(leaky); !ok {
		t.Fatal("Unwrap does not reach the rotator")
	}
}

func mustLookup(r *rotator.Registry, typ string) rotator.Rotator {
	rot, _ := r.Lookup(typ)
	return rot
}
