package rotatortest

import (
	"path/filepath"
	"testing"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// The fake target passes the same kit real rotators pass.
func TestFakeTargetConformance(t *testing.T) {
	for name, path := range map[string]string{"memory": "", "file": filepath.Join(t.TempDir(), "target.json")} {
		t.Run(name, func(t *testing.T) {
			tg := NewTarget(path)
			n := 0
			Run(t, Harness{
				Rotator: rotator.Sanitize(tg.Rotator()),
				NewCredential: func(t *testing.T) rotator.Credential {
					n++
					c := rotator.Credential{ID: "c", Type: "fake", Version: 1, Fields: map[string]any{"username": "u" + string(rune('a'+n))}, Secret: secret.Map{"password": secret.New("initial-secret-" + string(rune('a'+n)))}}
					tg.AddUser(c.String("username"), c.Secret)
					return c
				},
				Authenticates: func(t *testing.T, c rotator.Credential) bool { return tg.Authenticates(c) },
			})
		})
	}
}
