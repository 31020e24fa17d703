package mysql

import "github.com/nebula-credential/nebula-credential/rotator"

// FieldNames lists the non-secret fields this rotator reads, from its fields
// struct (see rotator.FieldNames).
func FieldNames() []string { return rotator.FieldNames(fields{}) }
