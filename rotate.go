package credential

import (
	"context"
	"time"

	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// Rotation is a journal row: one rotation, rollback or restore.
type Rotation = store.Rotation

// RotateOptions tune one rotation.
type RotateOptions = rotation.RotateOptions

// RollbackOptions select a rollback.
type RollbackOptions = rotation.RollbackOptions

// Rotate rotates credential id through the journaled protocol up to its grace
// period. See rotation.Engine.Rotate.
func (m *Manager) Rotate(ctx context.Context, id string, opts RotateOptions) (*Rotation, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	return m.engine.Rotate(ctx, id, opts)
}

// Rollback moves current back (to previous during grace, or to any stored
// version with ToVersion).
func (m *Manager) Rollback(ctx context.Context, id string, opts RollbackOptions) (*Rotation, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	return m.engine.Rollback(ctx, id, opts)
}

// ExtendGrace pushes the end of a grace period later.
func (m *Manager) ExtendGrace(ctx context.Context, id string, by time.Duration) (*Rotation, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	return m.engine.ExtendGrace(ctx, id, by)
}

// Doctor diagnoses a credential and its last rotation.
func (m *Manager) Doctor(ctx context.Context, id string) (*rotation.Report, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	return m.engine.Doctor(ctx, id)
}

// Rotations lists open and recent rotations ("" for all credentials).
func (m *Manager) Rotations(ctx context.Context, id string, openOnly bool, limit int) ([]Rotation, error) {
	if id != "" {
		if err := ValidateID(id); err != nil {
			return nil, err
		}
	}
	return m.engine.Rotations(ctx, id, openOnly, limit)
}
