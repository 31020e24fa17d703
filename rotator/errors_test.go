package rotator

import (
	"fmt"
	"strings"
	"testing"
)

// TestErrorNamesPrivilegeOnce: an *Error wrapping another that names the
// same missing privilege says it once (doctor printed it twice).
func TestErrorNamesPrivilegeOnce(t *testing.T) {
	inner := &Error{Class: ClassPermission, Op: "alter role", Privilege: "CREATEROLE", Err: fmt.Errorf("permission denied")}
	outer := &Error{Class: ClassPermission, Op: "retire", Privilege: "CREATEROLE", Err: inner}
	if n := strings.Count(outer.Error(), "(missing privilege: CREATEROLE)"); n != 1 {
		t.Fatalf("named %d times: %s", n, outer.Error())
	}
	other := &Error{Class: ClassPermission, Op: "retire", Privilege: "ADMIN OPTION", Err: inner}
	if !strings.Contains(other.Error(), "(missing privilege: ADMIN OPTION)") {
		t.Fatalf("a different privilege is dropped: %s", other.Error())
	}
}
