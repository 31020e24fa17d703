package credential

import (
	"context"
	"errors"

	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// BindingRecord is who bound a credential to an admin credential, and when.
type BindingRecord = rotation.BindingRecord

// CheckBinding checks, inside the transaction that writes them, that the
// principal in ctx may bind credential id with these fields to the admin
// credentials they name (use grant on each admin, the admin's scope covers
// the accounts, none already managed by another credential), and records
// the binding. Put, SetSettings and Restore call it; an import that writes
// through another path must too. A refusal is ErrPermission.
func (m *Manager) CheckBinding(ctx context.Context, tx store.Tx, id string, t Type, fields map[string]any) error {
	return m.engine.Bind(ctx, tx, id, string(t), fields)
}

// ApproveBindings records the binding of credential id, as it is now, to
// the admin credentials it names, for the principal in ctx (which needs use
// on each admin): for bindings made before bindings were checked (doctor
// names them) or whose binder lost its grant.
func (m *Manager) ApproveBindings(ctx context.Context, id string) ([]BindingRecord, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	return m.engine.Approve(ctx, id)
}

// rebind checks the binding of a restored credential. One the rule refuses
// is restored unapproved (its rotations are refused and doctor names it),
// never with a binding record from before the restore.
func (m *Manager) rebind(ctx context.Context, tx store.Tx, id string) error {
	err := m.engine.RebindCurrent(ctx, tx, id)
	var be *rotation.BindingError
	if errors.As(err, &be) {
		return m.engine.Unbind(ctx, tx, id)
	}
	return err
}
