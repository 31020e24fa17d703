package postgres

import "github.com/nebula-credential/nebula-credential/rotator"

var _ rotator.StrategyChooser = (*Rotator)(nil)

// StrategiesFor implements rotator.StrategyChooser: alternating when the
// credential names its two strategy_users, in place otherwise.
func (r *Rotator) StrategiesFor(c rotator.Credential) []rotator.Strategy {
	if users, ok := c.Fields["strategy_users"].([]any); ok && len(users) == 2 {
		return []rotator.Strategy{rotator.Alternating, rotator.InPlace}
	}
	return []rotator.Strategy{rotator.InPlace}
}
