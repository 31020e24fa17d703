package main

import (
	"github.com/nebula-credential/nebula-credential/rotator"
)

// rotators wires the built-in rotators by credential type. The generic
// rotator is always registered by the Manager.
func rotators() *rotator.Registry {
	reg := rotator.NewRegistry()
	return reg
}
