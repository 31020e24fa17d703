package apikey

import "github.com/nebula-credential/nebula-credential/rotator"

// FieldNames lists the non-secret fields of an api_key credential, from Spec
// (see rotator.FieldNames).
func FieldNames() []string { return rotator.FieldNames(Spec{}) }
