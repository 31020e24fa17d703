package redis

import (
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
)

// FieldNames lists the non-secret fields this rotator reads: the common
// database fields it parses (see rotator.FieldNames).
func FieldNames() []string { return rotator.FieldNames(dbrot.Fields{}) }
