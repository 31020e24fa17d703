package sqlstore

import (
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Short names for the store types.
type (
	KEK            = store.KEK
	Credential     = store.Credential
	Version        = store.Version
	ListOptions    = store.ListOptions
	Rotation       = store.Rotation
	RotationFilter = store.RotationFilter
	HistoryEntry   = store.HistoryEntry
	AuditRecord    = store.AuditRecord
	Token          = store.Token
	Event          = store.Event
)

// scanner is *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// timeCol scans a time column: an INTEGER of Unix microseconds (SQLite) or a
// TIMESTAMPTZ (PostgreSQL). The result is in UTC.
type timeCol struct{ p *time.Time }

func (c timeCol) Scan(src any) error {
	switch v := src.(type) {
	case int64:
		*c.p = time.UnixMicro(v).UTC()
	case time.Time:
		*c.p = v.UTC()
	default:
		return fmt.Errorf("cannot scan %T into a time", src)
	}
	return nil
}

// nullTimeCol scans a nullable time column; NULL is a nil pointer.
type nullTimeCol struct{ p **time.Time }

func (c nullTimeCol) Scan(src any) error {
	if src == nil {
		*c.p = nil
		return nil
	}
	t := new(time.Time)
	if err := (timeCol{t}).Scan(src); err != nil {
		return err
	}
	*c.p = t
	return nil
}

// zeroTimeCol scans a time column that an outer join may leave NULL; NULL
// is the zero time.
type zeroTimeCol struct{ p *time.Time }

func (c zeroTimeCol) Scan(src any) error {
	if src == nil {
		*c.p = time.Time{}
		return nil
	}
	return timeCol(c).Scan(src)
}

func scanCredential(s scanner, c *Credential) error {
	return s.Scan(&c.ID, &c.Type, &c.Settings, timeCol{&c.CreatedAt}, timeCol{&c.UpdatedAt},
		nullTimeCol{&c.DeletedAt}, nullTimeCol{&c.NextDueAt})
}

func scanVersion(s scanner, v *Version) error {
	return s.Scan(&v.CredentialID, &v.Version, &v.Fields, &v.KEKID, &v.DataKey, &v.Ciphertext,
		timeCol{&v.CreatedAt}, nullTimeCol{&v.ExpiresAt})
}

func scanRotation(s scanner, r *Rotation) error {
	return s.Scan(&r.ID, &r.CredentialID, &r.Kind, &r.Step, &r.Open, &r.Strategy, &r.FromVersion,
		&r.ToVersion, &r.Attempt, &r.ErrorClass, &r.LastError, &r.Actor, &r.Reason, &r.Data,
		nullTimeCol{&r.GraceEndsAt}, timeCol{&r.DueAt}, timeCol{&r.StartedAt}, timeCol{&r.UpdatedAt},
		nullTimeCol{&r.FinishedAt}, &r.LeaseOwner, timeCol{&r.LeaseUntil}, &r.Fence)
}

func scanHistory(s scanner, h *HistoryEntry) error {
	return s.Scan(&h.ID, &h.CredentialID, timeCol{&h.At}, &h.Action, &h.Actor, &h.Reason,
		&h.FromVersion, &h.ToVersion, &h.RotationID, &h.Outcome, &h.Detail, &h.DurationMS)
}

func scanAudit(s scanner, a *AuditRecord) error {
	return s.Scan(&a.Seq, timeCol{&a.At}, &a.Payload, &a.PrevHash, &a.Hash)
}

func scanToken(s scanner, t *Token) error {
	return s.Scan(&t.ID, &t.Name, &t.Hash, &t.Grants, timeCol{&t.CreatedAt}, nullTimeCol{&t.ExpiresAt})
}

func scanEvent(s scanner, e *Event) error {
	return s.Scan(&e.Seq, timeCol{&e.At}, &e.Kind, &e.CredentialID, &e.Version, &e.Detail)
}
