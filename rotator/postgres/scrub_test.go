package postgres

import (
	"errors"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

func TestScrubEscapedForms(t *testing.T) {
	pw := secret.New(`ab'c\d"e`)
	for _, form := range []string{`ab'c\d"e`, `ab''c\d"e`, `ab'c\d""e`, `ab\'c\\d\"e`, `ab'c\d\"e`} {
		in := &rotator.Error{Class: rotator.ClassPermission, Op: "alter role", Privilege: "CREATEROLE", Err: errors.New("near '" + form + "'")}
		err := scrub(in, pw)
		if strings.Contains(err.Error(), `c\d`) || !strings.Contains(err.Error(), secret.Redacted) {
			t.Errorf("form %q not scrubbed: %v", form, err)
		}
		if rotator.ClassOf(err) != rotator.ClassPermission || rotator.PrivilegeOf(err) != "CREATEROLE" {
			t.Errorf("class or privilege lost: %v", err)
		}
		if strings.Count(err.Error(), "missing privilege") != 1 {
			t.Errorf("privilege repeated: %v", err)
		}
	}
	plain := errors.New("nothing secret")
	if scrub(plain, pw) != plain {
		t.Error("an error without secrets must keep its chain")
	}
}
