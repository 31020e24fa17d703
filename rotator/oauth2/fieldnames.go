package oauth2

import "github.com/nebula-credential/nebula-credential/rotator"

// FieldNames lists the non-secret fields of an oauth2 credential, from Fields
// (see rotator.FieldNames).
func FieldNames() []string { return rotator.FieldNames(Fields{}) }
