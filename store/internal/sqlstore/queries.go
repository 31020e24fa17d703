package sqlstore

import "strings"

// The queries of the Tx methods, written once for both backends: ?
// placeholders, ON CONFLICT upserts, RETURNING and row values all work on
// SQLite ≥ 3.35 and PostgreSQL ≥ 10. Each backend's migrations create the
// tables and indexes they rely on:
//
//   - credentials_due (next_due_at) WHERE deleted_at IS NULL, for DueCredentials;
//   - rotations_one_open UNIQUE (credential_id) WHERE open, which enforces one
//     open rotation per credential and serves OpenRotation and DueCredentials;
//   - rotations_due (due_at) WHERE open, for DueRotations;
//   - rotations_credential (credential_id, id) and history_credential
//     (credential_id, id), for the per-credential listings;
//   - versions_kek (kek_id), for CountVersionsByKEK.

type query int

const (
	qGetMeta query = iota
	qSetMeta
	qPutKEK
	qListKEKs
	qDeleteKEK
	qCountVersionsByKEK
	qGetCredential
	qGetCredentialWrite
	qPutCredential
	qGetCredentialState
	qGetCredentialStateByNumber
	qListCredentials
	qListCredentialsRange
	qPurgeVersions
	qPurgeLabels
	qPurgeRotations
	qPurgeHistory
	qPurgeCounter
	qPurgeCredential
	qDueCredentials
	qInsertVersion
	qBumpCounter
	qGetVersion
	qListVersions
	qVersionNumbers
	qListVersionKeys
	qUpdateVersionKey
	qDeleteVersionLabels
	qDeleteVersion
	qMaxVersion
	qLabels
	qSetLabel
	qDeleteLabel
	qCreateRotation
	qGetRotation
	qOpenRotation
	qUpdateRotation
	qRotationExists
	qClaimRotation
	qListRotations
	qListRotationsByCredential
	qDueRotations
	qAppendHistory
	qListHistory
	qAppendAudit
	// qAppendAuditRows+n-1 inserts n audit records (Tx.AppendAuditsAfter),
	// n from 1 to maxAuditRows; the text is made by auditRowsText.
	qAppendAuditRows
	qLastAudit = iota + maxAuditRows - 1
	qListAudit
	qPutToken
	qGetTokenByHash
	qListTokens
	qDeleteToken
	qAppendEvent
	qListEvents
	qPutConsumer
	qListConsumers
	qListAllConsumers
	qDeleteConsumersSeenBefore
	qPutInstance
	qListInstances
	qDeleteInstancesSeenBefore
	// Notifications: the text is in notify.go.
	qPutSubscription
	qGetSubscription
	qListSubscriptions
	qDeleteSubscription
	qDeleteSubscriptionDeliveries
	qCountSubscriptionKeys
	qAppendOutbox
	qListOutbox
	qDeleteOutbox
	qInsertDelivery
	qGetDelivery
	qUpdateDelivery
	qClaimDeliveries
	qListDeliveries
	qPruneDeliveries
	qNotifyStats
	numQueries
)

const (
	credentialCols = `id, type, settings, created_at, updated_at, deleted_at, next_due_at`
	versionCols    = `credential_id, version, fields, kek_id, data_key, ciphertext, created_at, expires_at`
	rotationCols   = `id, credential_id, kind, step, open, strategy, from_version, to_version, attempt,
		error_class, last_error, actor, reason, data, grace_ends_at, due_at, started_at, updated_at,
		finished_at, lease_owner, lease_until, fence`
	historyCols = `id, credential_id, at, action, actor, reason, from_version, to_version,
		rotation_id, outcome, detail, duration_ms`
	auditCols    = `seq, at, payload, prev_hash, hash`
	tokenCols    = `id, name, hash, grants, created_at, expires_at`
	eventCols    = `seq, at, kind, credential_id, version, detail`
	instanceCols = `id, host, address, version, started_at, last_heartbeat`
	consumerCols = `id, credential_id, name, host, kind, version, action_ok, action_error, token_id,
		first_seen, last_seen, refresh_ms, drain_ms`
)

// credentialState is the statement of GetCredentialState up to the number
// of the version it joins. The version's number comes with the set of labels
// that name it, one bit each (stateLabels), in one column: number*8 + bits.
// One subquery and one column instead of a column for the number and a
// subquery and a column per label: every column costs the SQLite driver
// several calls. The open rotation is read only when the credential's
// rotation_open flag (kept by triggers on rotations, migration 0008) says
// there is one: a join, or an unguarded subquery, opens and seeks the
// rotations index and table for every read, about a tenth of a Get. (The
// names: the driver copies each column's name, an expression's is its text.)
const credentialState = `SELECT c.type, c.deleted_at, c.next_due_at,
		CASE WHEN c.rotation_open THEN (SELECT step FROM rotations WHERE credential_id = c.id AND open) END AS step,
		CASE WHEN c.rotation_open THEN (SELECT grace_ends_at FROM rotations WHERE credential_id = c.id AND open) END AS grace_ends_at,
		CASE WHEN c.rotation_open THEN (SELECT data FROM rotations WHERE credential_id = c.id AND open) END AS data,
		v.version * 8 + COALESCE((SELECT SUM(CASE label WHEN 'current' THEN 1 WHEN 'pending' THEN 2 WHEN 'previous' THEN 4 ELSE 0 END)
			FROM labels WHERE credential_id = c.id AND version = v.version), 0) AS version_labels,
		v.fields, v.kek_id, v.data_key, v.ciphertext, v.created_at, v.expires_at
		FROM credentials c
		LEFT JOIN versions v ON v.credential_id = c.id AND v.version = `

var queryText = [numQueries]string{
	qGetMeta: `SELECT value FROM meta WHERE name = ?`,
	qSetMeta: `INSERT INTO meta (name, value) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value`,

	qPutKEK: `INSERT INTO keks (id, wrapped, created_at, retired_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET wrapped = excluded.wrapped,
			created_at = excluded.created_at, retired_at = excluded.retired_at`,
	qListKEKs:           `SELECT id, wrapped, created_at, retired_at FROM keks ORDER BY created_at, id`,
	qDeleteKEK:          `DELETE FROM keks WHERE id = ?`,
	qCountVersionsByKEK: `SELECT COUNT(*) FROM versions WHERE kek_id = ?`,

	qGetCredential: `SELECT ` + credentialCols + ` FROM credentials WHERE id = ?`,
	qGetCredentialWrite: `SELECT c.id, c.type, c.settings, c.created_at, c.updated_at, c.deleted_at, c.next_due_at,
			c.rotation_open,
			COALESCE((SELECT m.max_version FROM version_counters m WHERE m.credential_id = c.id), 0),
			COALESCE((SELECT l.version FROM labels l WHERE l.credential_id = c.id AND l.label = 'current'), 0)
		FROM credentials c WHERE c.id = ?`,
	// qGetCredentialState finds the version by label, ByNumber by number:
	// two statements rather than one choosing with COALESCE(NULLIF(...)).
	qGetCredentialState:         credentialState + `(SELECT version FROM labels WHERE credential_id = c.id AND label = ?) WHERE c.id = ?`,
	qGetCredentialStateByNumber: credentialState + `? WHERE c.id = ?`,
	qPutCredential: `INSERT INTO credentials (` + credentialCols + `) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET type = excluded.type, settings = excluded.settings,
			created_at = excluded.created_at, updated_at = excluded.updated_at,
			deleted_at = excluded.deleted_at, next_due_at = excluded.next_due_at`,
	// Arguments: after, prefix, includeDeleted, type, type, limit.
	qListCredentials: `SELECT ` + credentialCols + ` FROM credentials
		WHERE id > ? AND id >= ? AND (? OR deleted_at IS NULL) AND (? = '' OR type = ?)
		ORDER BY id LIMIT ?`,
	// Arguments: after, prefix, upper bound, includeDeleted, type, type, limit.
	qListCredentialsRange: `SELECT ` + credentialCols + ` FROM credentials
		WHERE id > ? AND id >= ? AND id < ? AND (? OR deleted_at IS NULL) AND (? = '' OR type = ?)
		ORDER BY id LIMIT ?`,
	qPurgeVersions:   `DELETE FROM versions WHERE credential_id = ?`,
	qPurgeLabels:     `DELETE FROM labels WHERE credential_id = ?`,
	qPurgeRotations:  `DELETE FROM rotations WHERE credential_id = ?`,
	qPurgeHistory:    `DELETE FROM history WHERE credential_id = ?`,
	qPurgeCounter:    `DELETE FROM version_counters WHERE credential_id = ?`,
	qPurgeCredential: `DELETE FROM credentials WHERE id = ?`,
	qDueCredentials: `SELECT ` + credentialCols + ` FROM credentials c
		WHERE c.deleted_at IS NULL AND c.next_due_at <= ?
			AND NOT EXISTS (SELECT 1 FROM rotations r WHERE r.credential_id = c.id AND r.open)
		ORDER BY c.next_due_at LIMIT ?`,

	qInsertVersion: `INSERT INTO versions (` + versionCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT DO NOTHING`,
	// version_counters remembers the highest version ever inserted, so that
	// MaxVersion does not go back when the newest version is deleted.
	qBumpCounter: `INSERT INTO version_counters (credential_id, max_version) VALUES (?, ?)
		ON CONFLICT (credential_id) DO UPDATE SET max_version = excluded.max_version
		WHERE excluded.max_version > version_counters.max_version`,
	qGetVersion:     `SELECT ` + versionCols + ` FROM versions WHERE credential_id = ? AND version = ?`,
	qListVersions:   `SELECT ` + versionCols + ` FROM versions WHERE credential_id = ? ORDER BY version`,
	qVersionNumbers: `SELECT version FROM versions WHERE credential_id = ? ORDER BY version`,
	qListVersionKeys: `SELECT credential_id, version, fields, kek_id, data_key, created_at, expires_at
		FROM versions WHERE (credential_id, version) > (?, ?)
		ORDER BY credential_id, version LIMIT ?`,
	qUpdateVersionKey:    `UPDATE versions SET kek_id = ?, data_key = ? WHERE credential_id = ? AND version = ?`,
	qDeleteVersionLabels: `DELETE FROM labels WHERE credential_id = ? AND version = ?`,
	qDeleteVersion:       `DELETE FROM versions WHERE credential_id = ? AND version = ?`,
	qMaxVersion:          `SELECT max_version FROM version_counters WHERE credential_id = ?`,

	qLabels: `SELECT label, version FROM labels WHERE credential_id = ?`,
	// Arguments: id, label, version, id, version. Inserts nothing when the
	// version does not exist.
	qSetLabel: `INSERT INTO labels (credential_id, label, version)
		SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM versions WHERE credential_id = ? AND version = ?)
		ON CONFLICT (credential_id, label) DO UPDATE SET version = excluded.version`,
	qDeleteLabel: `DELETE FROM labels WHERE credential_id = ? AND label = ?`,

	// ON CONFLICT DO NOTHING: a second open rotation (rotations_one_open)
	// inserts no row and returns no ID, without aborting a PostgreSQL transaction.
	qCreateRotation: `INSERT INTO rotations (credential_id, kind, step, open, strategy, from_version,
			to_version, attempt, error_class, last_error, actor, reason, data, grace_ends_at, due_at,
			started_at, updated_at, finished_at, lease_owner, lease_until, fence)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT DO NOTHING RETURNING id`,
	qGetRotation:  `SELECT ` + rotationCols + ` FROM rotations WHERE id = ?`,
	qOpenRotation: `SELECT ` + rotationCols + ` FROM rotations WHERE credential_id = ? AND open`,
	qUpdateRotation: `UPDATE rotations SET kind = ?, step = ?, open = ?, strategy = ?, from_version = ?,
			to_version = ?, attempt = ?, error_class = ?, last_error = ?, actor = ?, reason = ?,
			data = ?, grace_ends_at = ?, due_at = ?, started_at = ?, updated_at = ?, finished_at = ?,
			lease_owner = ?, lease_until = ?
		WHERE id = ? AND fence = ?`,
	qRotationExists: `SELECT 1 FROM rotations WHERE id = ?`,
	// Arguments: owner, leaseUntil, id, now, owner.
	qClaimRotation: `UPDATE rotations SET lease_owner = ?, lease_until = ?, fence = fence + 1
		WHERE id = ? AND open AND (lease_until <= ? OR lease_owner = ?)
		RETURNING ` + rotationCols,
	// Arguments: all (not OpenOnly), limit.
	qListRotations: `SELECT ` + rotationCols + ` FROM rotations
		WHERE (open OR ?) ORDER BY id DESC LIMIT ?`,
	// Arguments: credential ID, all (not OpenOnly), limit.
	qListRotationsByCredential: `SELECT ` + rotationCols + ` FROM rotations
		WHERE credential_id = ? AND (open OR ?) ORDER BY id DESC LIMIT ?`,
	qDueRotations: `SELECT ` + rotationCols + ` FROM rotations
		WHERE open AND due_at <= ? AND lease_until <= ? ORDER BY due_at LIMIT ?`,

	qAppendHistory: `INSERT INTO history (credential_id, at, action, actor, reason, from_version,
			to_version, rotation_id, outcome, detail, duration_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
	qListHistory: `SELECT ` + historyCols + ` FROM history WHERE credential_id = ?
		ORDER BY id DESC LIMIT ?`,

	qAppendAudit: `INSERT INTO audit (` + auditCols + `)
		VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM audit), ?, ?, ?, ?) RETURNING seq`,
	qLastAudit: `SELECT ` + auditCols + ` FROM audit ORDER BY seq DESC LIMIT 1`,
	qListAudit: `SELECT ` + auditCols + ` FROM audit WHERE seq > ? ORDER BY seq LIMIT ?`,

	qPutToken: `INSERT INTO tokens (` + tokenCols + `) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, hash = excluded.hash,
			grants = excluded.grants, created_at = excluded.created_at, expires_at = excluded.expires_at`,
	qGetTokenByHash: `SELECT ` + tokenCols + ` FROM tokens WHERE hash = ?`,
	qListTokens:     `SELECT ` + tokenCols + ` FROM tokens ORDER BY id`,
	qDeleteToken:    `DELETE FROM tokens WHERE id = ?`,

	qAppendEvent: `INSERT INTO events (` + eventCols + `)
		VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM events), ?, ?, ?, ?, ?) RETURNING seq`,
	qListEvents: `SELECT ` + eventCols + ` FROM events WHERE seq > ? ORDER BY seq LIMIT ?`,

	qPutConsumer: `INSERT INTO consumers (` + consumerCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (credential_id, id) DO UPDATE SET name = excluded.name, host = excluded.host,
			kind = excluded.kind, version = excluded.version, action_ok = excluded.action_ok,
			action_error = excluded.action_error, token_id = excluded.token_id, last_seen = excluded.last_seen,
			refresh_ms = excluded.refresh_ms, drain_ms = excluded.drain_ms`,
	qListConsumers:             `SELECT ` + consumerCols + ` FROM consumers WHERE credential_id = ? ORDER BY id`,
	qListAllConsumers:          `SELECT ` + consumerCols + ` FROM consumers ORDER BY credential_id, id`,
	qDeleteConsumersSeenBefore: `DELETE FROM consumers WHERE last_seen < ?`,

	qPutInstance: `INSERT INTO instances (` + instanceCols + `) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET host = excluded.host, address = excluded.address,
			version = excluded.version, last_heartbeat = excluded.last_heartbeat`,
	qListInstances:             `SELECT ` + instanceCols + ` FROM instances ORDER BY id`,
	qDeleteInstancesSeenBefore: `DELETE FROM instances WHERE last_heartbeat < ?`,
}

// planned names the queries whose plans the backends' tests check: each must
// walk an index, so that its cost grows with the rows it returns.
var planned = map[string]query{
	"GetVersion":                 qGetVersion,
	"GetCredentialState":         qGetCredentialState,
	"GetCredentialStateByNumber": qGetCredentialStateByNumber,
	"ListCredentialsRange":       qListCredentialsRange,
	"DueCredentials":             qDueCredentials,
	"ListVersionKeys":            qListVersionKeys,
	"VersionNumbers":             qVersionNumbers,
	"CountVersionsByKEK":         qCountVersionsByKEK,
	"OpenRotation":               qOpenRotation,
	"ListRotationsByCredential":  qListRotationsByCredential,
	"DueRotations":               qDueRotations,
	"ListHistory":                qListHistory,
	"ListAudit":                  qListAudit,
	"ListEvents":                 qListEvents,
	"GetTokenByHash":             qGetTokenByHash,
}

// PlannedQueries returns, by method name, the text (in the dialect's
// placeholders) of the queries that must use an index. For tests.
func (db *DB) PlannedQueries() map[string]string {
	m := make(map[string]string, len(planned))
	for name, q := range planned {
		m[name] = db.queries[q]
	}
	return m
}

// maxAuditRows bounds the records of one audit insert (Tx.AppendAuditsAfter).
const maxAuditRows = 16

func init() {
	for n := 1; n <= maxAuditRows; n++ {
		queryText[qAppendAuditRows+query(n-1)] = auditRowsText(n)
	}
}

// auditRowsText inserts n audit records, given with their seq, if and only
// if the log's last entry is the one they follow. Arguments: seq, at,
// payload, prev hash, hash of each record, then the last entry they must
// follow: seq, seq, hash, and 1 (0 when the log must be empty).
func auditRowsText(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO audit (` + auditCols + `)
		SELECT * FROM (VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?)")
	}
	b.WriteString(`) AS v
		WHERE (SELECT COALESCE(MAX(seq), 0) FROM audit) = ?
			AND (SELECT COUNT(*) FROM audit WHERE seq = ? AND hash = ?) = ?`)
	return b.String()
}
