package rotation

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// CheckSettings checks settings about to be written for a credential of type
// typ with the given fields: Settings.Validate, then that a forced strategy is
// one the type's rotator supports for these fields. Settings are checked when
// they are written, so that a mistake is refused at once rather than found by
// the first rotation. The errors are plain messages for the caller to wrap
// with its own sentinel.
func (e *Engine) CheckSettings(typ string, fields map[string]any, s Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.Strategy == "" {
		return nil
	}
	rot, err := e.reg.Lookup(typ)
	if err != nil {
		return nil // no rotator: the credential is stored but never rotates
	}
	strategies := rot.Capabilities().Strategies
	if ch, ok := rotator.Unwrap(rot).(rotator.StrategyChooser); ok {
		strategies = ch.StrategiesFor(rotator.Credential{Type: typ, Fields: fields})
	}
	if !slices.Contains(strategies, s.Strategy) {
		names := make([]string, len(strategies))
		for i, st := range strategies {
			names[i] = string(st)
		}
		return fmt.Errorf("strategy %q is not supported by the %s rotator for this credential (supported: %s)", s.Strategy, typ, strings.Join(names, ", "))
	}
	return nil
}
