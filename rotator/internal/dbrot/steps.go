package dbrot

import (
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// StagePassword is Stage's response for a password rotator: a new password
// from password_policy (the default policy when it is unset), and changes as
// the pending version's fields. A policy that cannot be met is ClassConfig.
func (f Fields) StagePassword(op string, changes map[string]any) (rotator.StageResponse, error) {
	var pol secret.PasswordPolicy
	if f.PasswordPolicy != nil {
		pol = *f.PasswordPolicy
	}
	pw, err := pol.Generate()
	if err != nil {
		return rotator.StageResponse{}, rotator.Wrap(rotator.ClassConfig, op, err)
	}
	return rotator.StageResponse{Secret: secret.Map{"password": pw}, Fields: changes}, nil
}

// Version starts a rotator step on one version: check (the rotator's config,
// and the strategy where the step has one) must pass before c is parsed.
func Version[L any](op string, check func(op string) error, parse func(c rotator.Credential, op string) (L, error), c rotator.Credential) (L, error) {
	if err := check(op); err != nil {
		var zero L
		return zero, err
	}
	return parse(c, op)
}

// Versions starts a rotator step on two versions (current and pending, or old
// and current): check must pass before a, then b, are parsed.
func Versions[L any](op string, check func(op string) error, parse func(c rotator.Credential, op string) (L, error), a, b rotator.Credential) (L, L, error) {
	var zero L
	x, err := Version(op, check, parse, a)
	if err != nil {
		return zero, zero, err
	}
	y, err := parse(b, op)
	if err != nil {
		return zero, zero, err
	}
	return x, y, nil
}

// Unsupported is the ClassConfig error for a strategy the rotator (name) does
// not support; it lists the ones it does.
func Unsupported(op, name string, s rotator.Strategy, supported []rotator.Strategy) error {
	use := ""
	for i, st := range supported {
		switch {
		case i == 0:
		case i == len(supported)-1:
			use += " or "
		default:
			use += ", "
		}
		use += string(st)
	}
	return rotator.Errorf(rotator.ClassConfig, op, "strategy %q is not supported by %s (use %s)", s, name, use)
}
