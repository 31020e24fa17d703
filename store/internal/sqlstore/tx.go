package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nebula-credential/nebula-credential/store"
)

var _ store.Tx = (*Tx)(nil)

// errReadOnly is returned by a write method called in a View.
var errReadOnly = errors.New("write in a read-only (View) transaction")

// Tx implements store.Tx on one transaction of a DB.
type Tx struct {
	db       *DB
	r        runner
	readOnly bool
	// retry records that a statement failed with a retryable error: the
	// transaction is spoiled even if fn swallows the error.
	retry bool
	// queuedAudit records that QueueAudit queued an entry.
	queuedAudit bool
	// head, in a group-committed Update with DB.CacheAuditHead, is the
	// audit chain's last entry as the batch has it so far.
	head *auditHead
}

// execRaw runs dialect SQL (not one of the prepared queries) in a write
// transaction.
func (t *Tx) execRaw(ctx context.Context, q string, args ...any) error {
	r, ok := t.r.(*sqlRunner)
	if !ok {
		return errReadOnly
	}
	_, err := r.tx.ExecContext(ctx, q, args...)
	return err
}

// Statement helpers.

func (t *Tx) exec(ctx context.Context, q query, args ...any) (int64, error) {
	return t.r.exec(ctx, q, args)
}

func (t *Tx) query(ctx context.Context, q query, args ...any) (rowSet, error) {
	return t.r.query(ctx, q, args)
}

func (t *Tx) queryRow(ctx context.Context, q query, args ...any) row {
	rs, err := t.r.query(ctx, q, args)
	return row{rs, err}
}

// fail wraps err with the backend name and the step, mapping sql.ErrNoRows to
// store.ErrNotFound and noting retryable errors.
func (t *Tx) fail(err error, format string, args ...any) error {
	step := fmt.Sprintf(format, args...)
	if errors.Is(err, sql.ErrNoRows) {
		return notFound(step)
	}
	if t.db.retryable(err) {
		t.retry = true
	}
	return fmt.Errorf("%s: %s: %w", t.db.Dialect.Name, step, err)
}

// writable returns an error in a View.
func (t *Tx) writable(step string) error {
	if t.readOnly {
		return fmt.Errorf("%s: %s: %w", t.db.Dialect.Name, step, errReadOnly)
	}
	return nil
}

func (t *Tx) time(v time.Time) any { return t.db.Dialect.TimeArg(v) }

func (t *Tx) nullTime(v *time.Time) any {
	if v == nil {
		return nil
	}
	return t.db.Dialect.TimeArg(*v)
}

// blob keeps nil byte slices out of NOT NULL columns.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// limit turns "0 means no limit" into a LIMIT argument.
func limit(n int) int64 {
	if n <= 0 {
		return math.MaxInt64
	}
	return int64(n)
}

// collect scans every row of rows with scan.
func collect[T any](rows rowSet, scan func(scanner, *T) error) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := scan(rows, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Meta.

func (t *Tx) GetMeta(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	if err := t.queryRow(ctx, qGetMeta, key).Scan(&v); err != nil {
		return nil, t.fail(err, "get meta %q", key)
	}
	return v, nil
}

func (t *Tx) SetMeta(ctx context.Context, key string, value []byte) error {
	if err := t.writable("set meta"); err != nil {
		return err
	}
	if _, err := t.exec(ctx, qSetMeta, key, blob(value)); err != nil {
		return t.fail(err, "set meta %q", key)
	}
	return nil
}

// KEKs.

func (t *Tx) PutKEK(ctx context.Context, k *KEK) error {
	if err := t.writable("put kek"); err != nil {
		return err
	}
	if _, err := t.exec(ctx, qPutKEK, k.ID, blob(k.Wrapped), t.time(k.CreatedAt), t.nullTime(k.RetiredAt)); err != nil {
		return t.fail(err, "put kek %q", k.ID)
	}
	return nil
}

func (t *Tx) ListKEKs(ctx context.Context) ([]KEK, error) {
	rows, err := t.query(ctx, qListKEKs)
	if err != nil {
		return nil, t.fail(err, "list keks")
	}
	keks, err := collect(rows, func(s scanner, k *KEK) error {
		return s.Scan(&k.ID, &k.Wrapped, timeCol{&k.CreatedAt}, nullTimeCol{&k.RetiredAt})
	})
	if err != nil {
		return nil, t.fail(err, "list keks")
	}
	return keks, nil
}

// DeleteKEK is idempotent.
func (t *Tx) DeleteKEK(ctx context.Context, id string) error {
	if err := t.writable("delete kek"); err != nil {
		return err
	}
	if _, err := t.exec(ctx, qDeleteKEK, id); err != nil {
		return t.fail(err, "delete kek %q", id)
	}
	return nil
}

func (t *Tx) CountVersionsByKEK(ctx context.Context, kekID string) (int, error) {
	var n int
	if err := t.queryRow(ctx, qCountVersionsByKEK, kekID).Scan(&n); err != nil {
		return 0, t.fail(err, "count versions by kek %q", kekID)
	}
	subs, err := t.countSubscriptionKeys(ctx, kekID)
	return n + subs, err
}

// Credentials.

func (t *Tx) GetCredential(ctx context.Context, id string) (*Credential, error) {
	c := new(Credential)
	if err := scanCredential(t.queryRow(ctx, qGetCredential, id), c); err != nil {
		return nil, t.fail(err, "get credential %q", id)
	}
	return c, nil
}

func (t *Tx) GetCredentialWrite(ctx context.Context, id string) (*Credential, store.WriteInfo, error) {
	c := new(Credential)
	var w store.WriteInfo
	err := t.queryRow(ctx, qGetCredentialWrite, id).Scan(&c.ID, &c.Type, &c.Settings, timeCol{&c.CreatedAt},
		timeCol{&c.UpdatedAt}, nullTimeCol{&c.DeletedAt}, nullTimeCol{&c.NextDueAt}, &w.Rotating, &w.MaxVersion, &w.Current)
	if err != nil {
		return nil, store.WriteInfo{}, t.fail(err, "get credential %q", id)
	}
	return c, w, nil
}

func (t *Tx) PutCredential(ctx context.Context, c *Credential) error {
	if err := t.writable("put credential"); err != nil {
		return err
	}
	_, err := t.exec(ctx, qPutCredential, c.ID, c.Type, blob(c.Settings), t.time(c.CreatedAt),
		t.time(c.UpdatedAt), t.nullTime(c.DeletedAt), t.nullTime(c.NextDueAt))
	if err != nil {
		return t.fail(err, "put credential %q", c.ID)
	}
	return nil
}

// ListCredentials turns opts.Prefix into a range of IDs, so that it walks the
// primary key from the first match and stops after the last.
func (t *Tx) ListCredentials(ctx context.Context, opts ListOptions) ([]Credential, error) {
	var (
		rows rowSet
		err  error
	)
	if upper, ok := prefixEnd(opts.Prefix); ok {
		rows, err = t.query(ctx, qListCredentialsRange, opts.After, opts.Prefix, upper,
			opts.IncludeDeleted, opts.Type, opts.Type, limit(opts.Limit))
	} else {
		rows, err = t.query(ctx, qListCredentials, opts.After, opts.Prefix,
			opts.IncludeDeleted, opts.Type, opts.Type, limit(opts.Limit))
	}
	if err != nil {
		return nil, t.fail(err, "list credentials")
	}
	creds, err := collect(rows, scanCredential)
	if err != nil {
		return nil, t.fail(err, "list credentials")
	}
	return creds, nil
}

// prefixEnd returns the smallest string greater than every string that starts
// with prefix, in byte (= code point) order: prefix with its last character
// incremented. ok is false when there is none (empty prefix, or only
// U+10FFFF), and then every string ≥ prefix starts with it.
func prefixEnd(prefix string) (upper string, ok bool) {
	for prefix != "" {
		last := prefix[len(prefix)-1]
		r, size := utf8.DecodeLastRuneInString(prefix)
		prefix = prefix[:len(prefix)-size]
		switch {
		case r == utf8.RuneError && size == 1: // not UTF-8: compare bytes
			if last < 0xff {
				return prefix + string([]byte{last + 1}), true
			}
		case r == utf8.MaxRune:
		case r == 0xD7FF: // skip the surrogates, which UTF-8 cannot hold
			return prefix + string(rune(0xE000)), true
		default:
			return prefix + string(r+1), true
		}
	}
	return "", false
}

func (t *Tx) PurgeCredential(ctx context.Context, id string) error {
	if err := t.writable("purge credential"); err != nil {
		return err
	}
	for _, q := range []query{qPurgeLabels, qPurgeVersions, qPurgeRotations, qPurgeHistory, qPurgeCounter, qPurgeCredential} {
		if _, err := t.exec(ctx, q, id); err != nil {
			return t.fail(err, "purge credential %q", id)
		}
	}
	return nil
}

func (t *Tx) DueCredentials(ctx context.Context, now time.Time, n int) ([]Credential, error) {
	rows, err := t.query(ctx, qDueCredentials, t.time(now), limit(n))
	if err != nil {
		return nil, t.fail(err, "due credentials")
	}
	creds, err := collect(rows, scanCredential)
	if err != nil {
		return nil, t.fail(err, "due credentials")
	}
	return creds, nil
}

// Versions.

// InsertVersion inserts v and raises the credential's version counter. A
// taken number inserts nothing (ON CONFLICT DO NOTHING) and is ErrConflict.
func (t *Tx) InsertVersion(ctx context.Context, v *Version) error {
	if err := t.writable("insert version"); err != nil {
		return err
	}
	n, err := t.exec(ctx, qInsertVersion, v.CredentialID, v.Version, blob(v.Fields), v.KEKID,
		blob(v.DataKey), blob(v.Ciphertext), t.time(v.CreatedAt), t.nullTime(v.ExpiresAt))
	if err != nil {
		return t.fail(err, "insert version %q/%d", v.CredentialID, v.Version)
	}
	if n == 0 {
		return fmt.Errorf("%s: insert version %q/%d: %w", t.db.Dialect.Name, v.CredentialID, v.Version, store.ErrConflict)
	}
	if _, err := t.exec(ctx, qBumpCounter, v.CredentialID, v.Version); err != nil {
		return t.fail(err, "insert version %q/%d", v.CredentialID, v.Version)
	}
	return nil
}

// stateRow is what qGetCredentialState's arguments and columns are held in:
// one allocation for all of them, which the returned CredentialState points
// into.
type stateRow struct {
	cs        store.CredentialState
	v         Version
	step, kek sql.NullString
	grace     *time.Time
	data      []byte
	vl        sql.NullInt64 // version*8 + the bits of the labels naming it
	args      [2]any
	dest      [13]any
}

// stateLabels are the labels by their bit in qGetCredentialState, in the
// order of their names.
var stateLabels = [...]string{"current", "pending", "previous"}

func (t *Tx) GetCredentialState(ctx context.Context, id, label string, version int) (*store.CredentialState, error) {
	r := new(stateRow)
	q := qGetCredentialState
	r.args = [...]any{label, id}
	if version != 0 {
		q, r.args[0] = qGetCredentialStateByNumber, version
	}
	r.dest = [...]any{&r.cs.Type, nullTimeCol{&r.cs.DeletedAt}, nullTimeCol{&r.cs.NextDueAt},
		&r.step, nullTimeCol{&r.grace}, &r.data,
		&r.vl, &r.v.Fields, &r.kek, &r.v.DataKey, &r.v.Ciphertext, zeroTimeCol{&r.v.CreatedAt}, nullTimeCol{&r.v.ExpiresAt}}
	if err := t.queryRow(ctx, q, r.args[:]...).Scan(r.dest[:]...); err != nil {
		return nil, t.fail(err, "get credential state %q", id)
	}
	cs := &r.cs
	if r.step.Valid {
		cs.Open = &Rotation{CredentialID: id, Step: r.step.String, Open: true, GraceEndsAt: r.grace, Data: r.data}
	}
	if r.vl.Valid {
		r.v.CredentialID, r.v.Version, r.v.KEKID = id, int(r.vl.Int64>>3), r.kek.String
		cs.Version = &r.v
		if b := r.vl.Int64 & 7; b != 0 {
			cs.Labels = make([]string, 0, bits.OnesCount64(uint64(b)))
			for i, l := range stateLabels {
				if b&(1<<i) != 0 {
					cs.Labels = append(cs.Labels, l)
				}
			}
		}
	}
	return cs, nil
}

func (t *Tx) GetVersion(ctx context.Context, id string, version int) (*Version, error) {
	v := new(Version)
	if err := scanVersion(t.queryRow(ctx, qGetVersion, id, version), v); err != nil {
		return nil, t.fail(err, "get version %q/%d", id, version)
	}
	return v, nil
}

func (t *Tx) ListVersions(ctx context.Context, id string) ([]Version, error) {
	rows, err := t.query(ctx, qListVersions, id)
	if err != nil {
		return nil, t.fail(err, "list versions %q", id)
	}
	vs, err := collect(rows, scanVersion)
	if err != nil {
		return nil, t.fail(err, "list versions %q", id)
	}
	return vs, nil
}

func (t *Tx) VersionNumbers(ctx context.Context, id string) ([]int, error) {
	rows, err := t.query(ctx, qVersionNumbers, id)
	if err != nil {
		return nil, t.fail(err, "version numbers %q", id)
	}
	ns, err := collect(rows, func(s scanner, n *int) error { return s.Scan(n) })
	if err != nil {
		return nil, t.fail(err, "version numbers %q", id)
	}
	return ns, nil
}

func (t *Tx) ListVersionKeys(ctx context.Context, afterID string, afterVersion int, n int) ([]Version, error) {
	rows, err := t.query(ctx, qListVersionKeys, afterID, afterVersion, limit(n))
	if err != nil {
		return nil, t.fail(err, "list version keys")
	}
	vs, err := collect(rows, func(s scanner, v *Version) error {
		return s.Scan(&v.CredentialID, &v.Version, &v.Fields, &v.KEKID, &v.DataKey,
			timeCol{&v.CreatedAt}, nullTimeCol{&v.ExpiresAt})
	})
	if err != nil {
		return nil, t.fail(err, "list version keys")
	}
	return vs, nil
}

// UpdateVersionKey returns ErrNotFound if the version does not exist.
func (t *Tx) UpdateVersionKey(ctx context.Context, id string, version int, kekID string, wrappedKey []byte) error {
	if err := t.writable("update version key"); err != nil {
		return err
	}
	n, err := t.exec(ctx, qUpdateVersionKey, kekID, blob(wrappedKey), id, version)
	if err == nil && n == 0 {
		err = sql.ErrNoRows
	}
	if err != nil {
		return t.fail(err, "update version key %q/%d", id, version)
	}
	return nil
}

// DeleteVersion deletes a version and the labels on it. It is idempotent.
func (t *Tx) DeleteVersion(ctx context.Context, id string, version int) error {
	if err := t.writable("delete version"); err != nil {
		return err
	}
	for _, q := range []query{qDeleteVersionLabels, qDeleteVersion} {
		if _, err := t.exec(ctx, q, id, version); err != nil {
			return t.fail(err, "delete version %q/%d", id, version)
		}
	}
	return nil
}

func (t *Tx) MaxVersion(ctx context.Context, id string) (int, error) {
	var n int
	err := t.queryRow(ctx, qMaxVersion, id).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, t.fail(err, "max version %q", id)
	}
	return n, nil
}

// Labels.

// Labels returns a non-nil map, empty if the credential has no labels.
func (t *Tx) Labels(ctx context.Context, id string) (map[string]int, error) {
	rows, err := t.query(ctx, qLabels, id)
	if err != nil {
		return nil, t.fail(err, "labels %q", id)
	}
	defer rows.Close()
	labels := make(map[string]int)
	for rows.Next() {
		var (
			label   string
			version int
		)
		if err := rows.Scan(&label, &version); err != nil {
			return nil, t.fail(err, "labels %q", id)
		}
		labels[label] = version
	}
	if err := rows.Err(); err != nil {
		return nil, t.fail(err, "labels %q", id)
	}
	return labels, nil
}

// SetLabel returns ErrNotFound if version (≠ 0) does not exist. Removing a
// label that is not set is not an error.
func (t *Tx) SetLabel(ctx context.Context, id, label string, version int) error {
	if err := t.writable("set label"); err != nil {
		return err
	}
	if version == 0 {
		if _, err := t.exec(ctx, qDeleteLabel, id, label); err != nil {
			return t.fail(err, "remove label %q of %q", label, id)
		}
		return nil
	}
	n, err := t.exec(ctx, qSetLabel, id, label, version, id, version)
	if err == nil && n == 0 {
		err = sql.ErrNoRows // no such version
	}
	if err != nil {
		return t.fail(err, "set label %q of %q to version %d", label, id, version)
	}
	return nil
}

// Rotations.

func (t *Tx) rotationArgs(r *Rotation) []any {
	return []any{r.Kind, r.Step, r.Open, r.Strategy, r.FromVersion, r.ToVersion, r.Attempt,
		r.ErrorClass, r.LastError, r.Actor, r.Reason, blob(r.Data), t.nullTime(r.GraceEndsAt),
		t.time(r.DueAt), t.time(r.StartedAt), t.time(r.UpdatedAt), t.nullTime(r.FinishedAt),
		r.LeaseOwner, t.time(r.LeaseUntil)}
}

// CreateRotation inserts r and sets r.ID. An open r for a credential that
// already has an open rotation is ErrRotationInProgress (the unique index
// rotations_one_open decides, so concurrent creators cannot both win).
func (t *Tx) CreateRotation(ctx context.Context, r *Rotation) error {
	if err := t.writable("create rotation"); err != nil {
		return err
	}
	args := append([]any{r.CredentialID}, t.rotationArgs(r)...)
	args = append(args, r.Fence)
	var id int64
	err := t.queryRow(ctx, qCreateRotation, args...).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: create rotation of %q: %w", t.db.Dialect.Name, r.CredentialID, store.ErrRotationInProgress)
	}
	if err != nil {
		return t.fail(err, "create rotation of %q", r.CredentialID)
	}
	r.ID = id
	return nil
}

func (t *Tx) GetRotation(ctx context.Context, id int64) (*Rotation, error) {
	r := new(Rotation)
	if err := scanRotation(t.queryRow(ctx, qGetRotation, id), r); err != nil {
		return nil, t.fail(err, "get rotation %d", id)
	}
	return r, nil
}

func (t *Tx) OpenRotation(ctx context.Context, credentialID string) (*Rotation, error) {
	r := new(Rotation)
	if err := scanRotation(t.queryRow(ctx, qOpenRotation, credentialID), r); err != nil {
		return nil, t.fail(err, "open rotation of %q", credentialID)
	}
	return r, nil
}

// UpdateRotation writes every field of r but ID, CredentialID and Fence, if
// the stored fence equals r.Fence. ErrNotFound if the row does not exist,
// ErrFenced if its fence moved on, ErrRotationInProgress if r reopens a
// rotation while another one is open.
func (t *Tx) UpdateRotation(ctx context.Context, r *Rotation) error {
	if err := t.writable("update rotation"); err != nil {
		return err
	}
	args := append(t.rotationArgs(r), r.ID, r.Fence)
	n, err := t.exec(ctx, qUpdateRotation, args...)
	if err != nil {
		if t.db.Dialect.IsUniqueViolation(err) {
			return fmt.Errorf("%s: update rotation %d: %w", t.db.Dialect.Name, r.ID, store.ErrRotationInProgress)
		}
		return t.fail(err, "update rotation %d", r.ID)
	}
	if n == 1 {
		return nil
	}
	var one int
	if err := t.queryRow(ctx, qRotationExists, r.ID).Scan(&one); err != nil {
		return t.fail(err, "update rotation %d", r.ID)
	}
	return fmt.Errorf("%s: update rotation %d with fence %d: %w", t.db.Dialect.Name, r.ID, r.Fence, store.ErrFenced)
}

// ClaimRotation returns ErrNotFound for a missing rotation and ErrFenced for
// a closed one or one whose lease another owner holds.
func (t *Tx) ClaimRotation(ctx context.Context, id int64, owner string, now, leaseUntil time.Time) (*Rotation, error) {
	if err := t.writable("claim rotation"); err != nil {
		return nil, err
	}
	r := new(Rotation)
	err := scanRotation(t.queryRow(ctx, qClaimRotation, owner, t.time(leaseUntil), id, t.time(now), owner), r)
	if err == nil {
		return r, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, t.fail(err, "claim rotation %d", id)
	}
	cur, err := t.GetRotation(ctx, id)
	if err != nil {
		return nil, err
	}
	if !cur.Open {
		return nil, fmt.Errorf("%s: claim rotation %d: closed: %w", t.db.Dialect.Name, id, store.ErrFenced)
	}
	return nil, fmt.Errorf("%s: claim rotation %d: leased by %q until %s: %w", t.db.Dialect.Name, id,
		cur.LeaseOwner, cur.LeaseUntil.Format(time.RFC3339Nano), store.ErrFenced)
}

// ListRotations treats a Limit of 0 as no limit.
func (t *Tx) ListRotations(ctx context.Context, f RotationFilter) ([]Rotation, error) {
	var (
		rows rowSet
		err  error
	)
	if f.CredentialID != "" {
		rows, err = t.query(ctx, qListRotationsByCredential, f.CredentialID, !f.OpenOnly, limit(f.Limit))
	} else {
		rows, err = t.query(ctx, qListRotations, !f.OpenOnly, limit(f.Limit))
	}
	if err != nil {
		return nil, t.fail(err, "list rotations")
	}
	rs, err := collect(rows, scanRotation)
	if err != nil {
		return nil, t.fail(err, "list rotations")
	}
	return rs, nil
}

func (t *Tx) DueRotations(ctx context.Context, now time.Time, n int) ([]Rotation, error) {
	rows, err := t.query(ctx, qDueRotations, t.time(now), t.time(now), limit(n))
	if err != nil {
		return nil, t.fail(err, "due rotations")
	}
	rs, err := collect(rows, scanRotation)
	if err != nil {
		return nil, t.fail(err, "due rotations")
	}
	return rs, nil
}

// History.

// AppendHistory inserts h and sets h.ID.
func (t *Tx) AppendHistory(ctx context.Context, h *HistoryEntry) error {
	if err := t.writable("append history"); err != nil {
		return err
	}
	err := t.queryRow(ctx, qAppendHistory, h.CredentialID, t.time(h.At), h.Action, h.Actor, h.Reason,
		h.FromVersion, h.ToVersion, h.RotationID, h.Outcome, h.Detail, h.DurationMS).Scan(&h.ID)
	if err != nil {
		return t.fail(err, "append history of %q", h.CredentialID)
	}
	return nil
}

// ListHistory treats a limit of 0 as no limit.
func (t *Tx) ListHistory(ctx context.Context, credentialID string, n int) ([]HistoryEntry, error) {
	rows, err := t.query(ctx, qListHistory, credentialID, limit(n))
	if err != nil {
		return nil, t.fail(err, "list history of %q", credentialID)
	}
	hs, err := collect(rows, scanHistory)
	if err != nil {
		return nil, t.fail(err, "list history of %q", credentialID)
	}
	return hs, nil
}

// Audit.

// AppendAudit sets a.Seq to the last Seq + 1 and inserts a. Two concurrent
// appends on PostgreSQL collide on the primary key; the loser's Update is retried.
func (t *Tx) AppendAudit(ctx context.Context, a *AuditRecord) error {
	if err := t.writable("append audit"); err != nil {
		return err
	}
	var seq int64
	err := t.queryRow(ctx, qAppendAudit, t.time(a.At), blob(a.Payload), blob(a.PrevHash), blob(a.Hash)).Scan(&seq)
	if err != nil {
		if t.db.Dialect.IsUniqueViolation(err) {
			t.retry = true
		}
		return t.fail(err, "append audit")
	}
	a.Seq = seq
	t.noteAudit(a)
	return nil
}

// noteAudit records a, just appended, as the chain's last entry.
func (t *Tx) noteAudit(a *AuditRecord) {
	if t.head != nil {
		*t.head = auditHead{seq: a.Seq, hash: a.Hash, known: true}
	}
}

// CachedAudit returns the audit chain's last entry as this process last
// appended or committed it, without reading the store; ok is false when it
// does not know it (DB.CacheAuditHead off, or not yet known). Another process
// may have appended since: pass it to AppendAuditsAfter, which checks.
func (t *Tx) CachedAudit() (seq int64, hash []byte, ok bool) {
	if t.head == nil || !t.head.known || t.readOnly {
		return 0, nil, false
	}
	return t.head.seq, t.head.hash, true
}

// AppendAuditsAfter inserts recs, chained in order, as entries prevSeq+1,
// prevSeq+2, ... if, and only if, the log's last entry is prevSeq with hash
// recs[0].PrevHash (for prevSeq 0: the log is empty), checked in the same
// statement, and reports whether it did. It is LastAudit and AppendAudit of
// each record in one statement per maxAuditRows records, when the caller
// already knows the last entry (CachedAudit); false means it did not, and
// nothing was written: read LastAudit and append after it.
func (t *Tx) AppendAuditsAfter(ctx context.Context, recs []*AuditRecord, prevSeq int64) (bool, error) {
	if err := t.writable("append audit"); err != nil {
		return false, err
	}
	args := make([]any, 0, 5*min(len(recs), maxAuditRows)+4)
	for start := 0; start < len(recs); start += maxAuditRows {
		chunk := recs[start:min(len(recs), start+maxAuditRows)]
		after := prevSeq + int64(start)
		args = args[:0]
		for i, a := range chunk {
			args = append(args, after+int64(i)+1, t.time(a.At), blob(a.Payload), blob(a.PrevHash), blob(a.Hash))
		}
		args = append(args, after, after, blob(chunk[0].PrevHash), min(after, 1))
		n, err := t.exec(ctx, qAppendAuditRows+query(len(chunk)-1), args...)
		if err != nil {
			if t.db.Dialect.IsUniqueViolation(err) {
				t.retry = true
			}
			return false, t.fail(err, "append audit")
		}
		switch {
		case n == 0 && start == 0:
			if t.head != nil {
				t.head.known = false
			}
			return false, nil
		case n != int64(len(chunk)):
			// The transaction's own earlier rows are gone: not reached
			// while it holds the write lock.
			return false, fmt.Errorf("%s: append audit: %d of %d entries after %d written", t.db.Dialect.Name, n, len(chunk), after)
		}
		for i, a := range chunk {
			a.Seq = after + int64(i) + 1
		}
		t.noteAudit(chunk[len(chunk)-1])
	}
	return true, nil
}

// QueueAudit queues an audit entry to be chained after the transaction
// commits, when the dialect does that (Dialect.QueueAudit); it reports false,
// queuing nothing, when the caller must chain the entry itself with
// LastAudit and AppendAudit.
func (t *Tx) QueueAudit(ctx context.Context, at time.Time, payload []byte) (bool, error) {
	if t.db.Dialect.QueueAudit == "" {
		return false, nil
	}
	if err := t.writable("queue audit"); err != nil {
		return false, err
	}
	if err := t.execRaw(ctx, t.db.Dialect.QueueAudit, t.time(at), blob(payload)); err != nil {
		return false, t.fail(err, "queue audit")
	}
	t.queuedAudit = true
	return true, nil
}

// QueuedAudit reports whether QueueAudit queued an entry in this transaction.
func (t *Tx) QueuedAudit() bool { return t.queuedAudit }

func (t *Tx) LastAudit(ctx context.Context) (*AuditRecord, error) {
	a := new(AuditRecord)
	if err := scanAudit(t.queryRow(ctx, qLastAudit), a); err != nil {
		return nil, t.fail(err, "last audit")
	}
	return a, nil
}

func (t *Tx) ListAudit(ctx context.Context, afterSeq int64, n int) ([]AuditRecord, error) {
	rows, err := t.query(ctx, qListAudit, afterSeq, limit(n))
	if err != nil {
		return nil, t.fail(err, "list audit")
	}
	as, err := collect(rows, scanAudit)
	if err != nil {
		return nil, t.fail(err, "list audit")
	}
	return as, nil
}

// Tokens.

// PutToken inserts or replaces a token by ID. ErrConflict if another token
// has the same hash.
func (t *Tx) PutToken(ctx context.Context, tok *Token) error {
	if err := t.writable("put token"); err != nil {
		return err
	}
	_, err := t.exec(ctx, qPutToken, tok.ID, tok.Name, blob(tok.Hash), blob(tok.Grants),
		t.time(tok.CreatedAt), t.nullTime(tok.ExpiresAt))
	if err != nil {
		if t.db.Dialect.IsUniqueViolation(err) {
			return fmt.Errorf("%s: put token %q: hash taken: %w", t.db.Dialect.Name, tok.ID, store.ErrConflict)
		}
		return t.fail(err, "put token %q", tok.ID)
	}
	return nil
}

func (t *Tx) GetTokenByHash(ctx context.Context, hash []byte) (*Token, error) {
	tok := new(Token)
	if err := scanToken(t.queryRow(ctx, qGetTokenByHash, blob(hash)), tok); err != nil {
		return nil, t.fail(err, "get token by hash")
	}
	return tok, nil
}

func (t *Tx) ListTokens(ctx context.Context) ([]Token, error) {
	rows, err := t.query(ctx, qListTokens)
	if err != nil {
		return nil, t.fail(err, "list tokens")
	}
	toks, err := collect(rows, scanToken)
	if err != nil {
		return nil, t.fail(err, "list tokens")
	}
	return toks, nil
}

// DeleteToken is idempotent.
func (t *Tx) DeleteToken(ctx context.Context, id string) error {
	if err := t.writable("delete token"); err != nil {
		return err
	}
	if _, err := t.exec(ctx, qDeleteToken, id); err != nil {
		return t.fail(err, "delete token %q", id)
	}
	return nil
}

// Events.

// AppendEvent sets e.Seq to the last Seq + 1 (or, with Dialect.EventLock, the
// next value of a sequence under a lock held to commit) and inserts e. Seq
// therefore increases in commit order, so a watcher paging with ListEvents
// misses nothing.
func (t *Tx) AppendEvent(ctx context.Context, e *Event) error {
	if err := t.writable("append event"); err != nil {
		return err
	}
	var seq int64
	var err error
	if d := t.db.Dialect; d.EventLock != "" && d.AppendEvent != "" {
		if err := t.execRaw(ctx, d.EventLock); err != nil {
			return t.fail(err, "append event: lock")
		}
		err = t.r.(*sqlRunner).tx.QueryRowContext(ctx, d.AppendEvent, t.time(e.At), e.Kind, e.CredentialID, e.Version, blob(e.Detail)).Scan(&seq)
	} else {
		err = t.queryRow(ctx, qAppendEvent, t.time(e.At), e.Kind, e.CredentialID, e.Version, blob(e.Detail)).Scan(&seq)
	}
	if err != nil {
		if t.db.Dialect.IsUniqueViolation(err) {
			t.retry = true
		}
		return t.fail(err, "append event")
	}
	e.Seq = seq
	return t.appendOutbox(ctx, e)
}

func (t *Tx) ListEvents(ctx context.Context, afterSeq int64, n int) ([]Event, error) {
	rows, err := t.query(ctx, qListEvents, afterSeq, limit(n))
	if err != nil {
		return nil, t.fail(err, "list events")
	}
	es, err := collect(rows, scanEvent)
	if err != nil {
		return nil, t.fail(err, "list events")
	}
	return es, nil
}

// notFoundError is store.ErrNotFound with a message for people: it names
// the missing thing and never the database dialect or the query step.
type notFoundError struct{ msg string }

func (e notFoundError) Error() string { return e.msg }
func (e notFoundError) Unwrap() error { return store.ErrNotFound }

// notFound turns a step like `get credential "a/b"` into `credential "a/b"
// not found`.
func notFound(step string) error {
	if rest, ok := strings.CutPrefix(step, "open rotation of "); ok {
		return notFoundError{"no open rotation for " + rest}
	}
	for _, p := range []string{"get credential state ", "get "} {
		if rest, ok := strings.CutPrefix(step, p); ok {
			if p == "get credential state " {
				rest = "credential " + rest
			}
			return notFoundError{rest + " not found"}
		}
	}
	return notFoundError{step + ": not found"}
}
