package x509

import "github.com/nebula-credential/nebula-credential/rotator"

// FieldNames lists the non-secret fields a certificate credential holds, from
// Fields (see rotator.FieldNames).
func FieldNames() []string { return rotator.FieldNames(Fields{}) }
