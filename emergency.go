package credential

import (
	"context"

	"github.com/nebula-credential/nebula-credential/rotation"
)

// EmergencyOptions describe an emergency rotation (a leaked secret).
type EmergencyOptions = rotation.EmergencyOptions

// EmergencyResult is what an emergency rotation did.
type EmergencyResult = rotation.EmergencyResult

// EndGrace ends a running grace period at once, retiring the previous
// version on the target. See rotation.Engine.EndGrace.
func (m *Manager) EndGrace(ctx context.Context, id string, opts rotation.EndGraceOptions) (*Rotation, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	return m.engine.EndGrace(ctx, id, opts)
}

// RotateNow is the emergency rotation for a leaked secret: it ends any
// running grace period, then rotates with zero grace. See
// rotation.Engine.RotateNow.
func (m *Manager) RotateNow(ctx context.Context, id string, opts EmergencyOptions) (*EmergencyResult, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	return m.engine.RotateNow(ctx, id, opts)
}
