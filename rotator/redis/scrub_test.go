package redis

import (
	"errors"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

func TestScrubHashAndPlaintext(t *testing.T) {
	pw := secret.New("s3cret-value")
	for _, text := range []string{"ERR bad rule '>s3cret-value'", "ERR bad rule '#" + hash("s3cret-value") + "'"} {
		err := scrub(&rotator.Error{Class: rotator.ClassUnknown, Op: "apply", Err: errors.New(text)}, pw)
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), hash("s3cret-value")) {
			t.Errorf("not scrubbed: %v", err)
		}
	}
}
