package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Rotation is a journal row: one rotation, rollback or restore.
type Rotation = rotation.Info

// GetOptions selects a version (current by default) and whether to reveal
// the secret values, which needs the read permission.
type GetOptions struct {
	Version int
	Label   string
	Reveal  bool
}

// Get returns one version of a credential. Without Reveal, Secret holds the
// field names with empty values.
func (c *Client) Get(ctx context.Context, id string, opts GetOptions) (*credential.Credential, error) {
	p, err := idPath("/v1/credentials/", id)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	if opts.Version != 0 {
		q.Set("version", strconv.Itoa(opts.Version))
	}
	if opts.Label != "" {
		q.Set("label", opts.Label)
	}
	if opts.Reveal {
		q.Set("reveal", "true")
	}
	var w credential.Wire
	if err := c.call(ctx, request{method: "GET", path: p, query: q}, &w); err != nil {
		return nil, err
	}
	return w.Credential(), nil
}

// Put stores a new version and makes it current. req.Actor is ignored: the
// server records the token as the actor.
func (c *Client) Put(ctx context.Context, id string, req credential.PutRequest) (*credential.Credential, error) {
	p, err := idPath("/v1/credentials/", id)
	if err != nil {
		return nil, err
	}
	body := struct {
		Type      credential.Type      `json:"type"`
		Fields    map[string]any       `json:"fields,omitempty"`
		Secret    map[string]string    `json:"secret"`
		ExpiresAt *time.Time           `json:"expires_at,omitempty"`
		Settings  *credential.Settings `json:"settings,omitempty"`
		Reason    string               `json:"reason,omitempty"`
	}{req.Type, req.Fields, req.Secret.Reveal(), req.ExpiresAt, req.Settings, req.Reason}
	var w credential.Wire
	if err := c.call(ctx, request{method: "PUT", path: p, body: body}, &w); err != nil {
		return nil, err
	}
	return w.Credential(), nil
}

// List returns a page of the credentials the token may see, and the cursor
// of the next page ("" on the last). Limit 0 means 100.
func (c *Client) List(ctx context.Context, opts credential.ListOptions) ([]credential.Summary, string, error) {
	q := url.Values{}
	for k, v := range map[string]string{"prefix": opts.Prefix, "type": string(opts.Type), "after": opts.After} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(min(opts.Limit, 1000)))
	}
	if opts.IncludeDeleted {
		q.Set("deleted", "true")
	}
	var out struct {
		Credentials []credential.Summary `json:"credentials"`
		Next        string               `json:"next"`
	}
	if err := c.call(ctx, request{method: "GET", path: "/v1/credentials", query: q}, &out); err != nil {
		return nil, "", err
	}
	return out.Credentials, out.Next, nil
}

// All iterates over every credential matching opts, page by page.
func (c *Client) All(ctx context.Context, opts credential.ListOptions) iter.Seq2[credential.Summary, error] {
	return func(yield func(credential.Summary, error) bool) {
		for {
			page, next, err := c.List(ctx, opts)
			if err != nil {
				yield(credential.Summary{}, err)
				return
			}
			for _, s := range page {
				if !yield(s, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			opts.After = next
		}
	}
}

// History is a credential's stored versions (newest first) and events.
type History struct {
	ID       string                    `json:"id"`
	Versions []credential.VersionInfo  `json:"versions"`
	Events   []credential.HistoryEntry `json:"events"`
}

// History returns the versions and the last limit events (0: 100).
func (c *Client) History(ctx context.Context, id string, limit int) (*History, error) {
	p, err := idPath("/v1/history/", id)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var h History
	if err := c.call(ctx, request{method: "GET", path: p, query: q}, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Delete soft-deletes a credential (Put restores it). It is idempotent.
func (c *Client) Delete(ctx context.Context, id string) error {
	p, err := idPath("/v1/credentials/", id)
	if err != nil {
		return err
	}
	return c.call(ctx, request{method: "DELETE", path: p}, nil)
}

// Purge removes a credential and all its versions for good (needs delete).
func (c *Client) Purge(ctx context.Context, id string) error {
	p, err := idPath("/v1/credentials/", id)
	if err != nil {
		return err
	}
	return c.call(ctx, request{method: "DELETE", path: p, query: url.Values{"purge": {"true"}}}, nil)
}

// rotationCall posts a rotate-like request. On failure the error is a
// *rotation.RotationError (the rotation failed on the target) or an *Error
// whose Rotation is set when the server reported the row; the row is also
// returned when known.
func (c *Client) rotationCall(ctx context.Context, prefix, id string, body any) (*Rotation, error) {
	p, err := idPath(prefix, id)
	if err != nil {
		return nil, err
	}
	var r Rotation
	if err := c.call(ctx, request{method: "POST", path: p, body: body}, &r); err != nil {
		return rotationOf(err), err
	}
	return &r, nil
}

func rotationOf(err error) *Rotation {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Rotation
	}
	return nil
}

// Rotate rotates a credential now. opts.Actor is ignored.
func (c *Client) Rotate(ctx context.Context, id string, opts credential.RotateOptions) (*Rotation, error) {
	body := map[string]any{}
	if opts.Grace != nil {
		body["grace"] = opts.Grace.String()
	}
	if opts.Reason != "" {
		body["reason"] = opts.Reason
	}
	if opts.NoValidate {
		body["no_validate"] = true
	}
	if opts.Wait {
		body["wait"] = true
	}
	return c.rotationCall(ctx, "/v1/rotate/", id, body)
}

// Rollback moves current back (to previous during grace, or re-applies
// opts.ToVersion). opts.Actor is ignored.
func (c *Client) Rollback(ctx context.Context, id string, opts credential.RollbackOptions) (*Rotation, error) {
	body := map[string]any{}
	if opts.ToVersion != 0 {
		body["to_version"] = opts.ToVersion
	}
	if opts.Reason != "" {
		body["reason"] = opts.Reason
	}
	if opts.Wait {
		body["wait"] = true
	}
	return c.rotationCall(ctx, "/v1/rollback/", id, body)
}

// ExtendGrace pushes the end of the grace period later.
func (c *Client) ExtendGrace(ctx context.Context, id string, by time.Duration) (*Rotation, error) {
	if by <= 0 {
		return nil, fmt.Errorf("%w: grace can only be extended by a positive duration", credential.ErrInvalid)
	}
	return c.rotationCall(ctx, "/v1/grace/", id, map[string]string{"extend": by.String()})
}

// Resolve closes a rotation that needs attention, keeping version keep (0:
// the version before the rotation), verified unless force.
func (c *Client) Resolve(ctx context.Context, id string, keep int, force bool) (*Rotation, error) {
	return c.rotationCall(ctx, "/v1/resolve/", id, map[string]any{"keep": keep, "force": force})
}

// Retry runs a stalled or failed rotation again (with rollback, reverts it).
func (c *Client) Retry(ctx context.Context, id string, rollback bool) (*Rotation, error) {
	return c.rotationCall(ctx, "/v1/retry/", id, map[string]any{"rollback": rollback})
}

// Rotations lists open and recent rotations, of one credential or ("") of
// every credential the token may see. Limit 0 means 50.
func (c *Client) Rotations(ctx context.Context, id string, openOnly bool, limit int) ([]Rotation, error) {
	q := url.Values{}
	if id != "" {
		if err := credential.ValidateID(id); err != nil {
			return nil, err
		}
		q.Set("id", id)
	}
	if openOnly {
		q.Set("open", "true")
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Rotations []Rotation `json:"rotations"`
	}
	if err := c.call(ctx, request{method: "GET", path: "/v1/rotations", query: q}, &out); err != nil {
		return nil, err
	}
	return out.Rotations, nil
}

// Policy is a credential's rotation settings with their effective values.
type Policy struct {
	ID             string              `json:"id"`
	Settings       credential.Settings `json:"settings"`
	NextRotationAt *time.Time          `json:"next_rotation_at"`
	Grace          string              `json:"grace"`
	Validate       bool                `json:"validate"`
	AutoRollback   bool                `json:"auto_rollback"`
	Retention      int                 `json:"retention"`
	// Warnings are what is wrong with the settings (rotation.CheckPolicy),
	// each with the command that fixes it.
	Warnings []rotation.Finding `json:"warnings"`
}

// GetPolicy returns the rotation settings.
func (c *Client) GetPolicy(ctx context.Context, id string) (*Policy, error) {
	p, err := idPath("/v1/policy/", id)
	if err != nil {
		return nil, err
	}
	var out Policy
	if err := c.call(ctx, request{method: "GET", path: p}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetPolicy replaces the rotation settings (needs write).
func (c *Client) SetPolicy(ctx context.Context, id string, s credential.Settings) (*Policy, error) {
	p, err := idPath("/v1/policy/", id)
	if err != nil {
		return nil, err
	}
	var out Policy
	if err := c.call(ctx, request{method: "PUT", path: p, body: s}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Doctor diagnoses a credential; an unhealthy one is a report with
// Healthy false, not an error.
func (c *Client) Doctor(ctx context.Context, id string) (*rotation.Report, error) {
	p, err := idPath("/v1/doctor/", id)
	if err != nil {
		return nil, err
	}
	var rep rotation.Report
	if err := c.call(ctx, request{method: "GET", path: p}, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Token describes an API token (never its value).
type Token struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Grants    []string   `json:"grants"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// TokenRequest asks for a token: grants like "read:prod/" or "admin:*", and
// an optional lifetime.
type TokenRequest struct {
	Name   string
	Grants []string
	TTL    time.Duration
}

// CreateToken makes a token (needs admin on *) and returns its value, shown
// this once.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (*Token, secret.Value, error) {
	body := map[string]any{"name": req.Name, "grants": req.Grants}
	if req.Grants == nil {
		body["grants"] = []string{}
	}
	if req.TTL > 0 {
		body["ttl"] = req.TTL.String()
	}
	var out struct {
		Token
		Value string `json:"token"`
	}
	if err := c.call(ctx, request{method: "POST", path: "/v1/tokens", body: body}, &out); err != nil {
		return nil, secret.Value{}, err
	}
	return &out.Token, secret.New(out.Value), nil
}

// Tokens lists the tokens (needs admin on *).
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	var out struct {
		Tokens []Token `json:"tokens"`
	}
	if err := c.call(ctx, request{method: "GET", path: "/v1/tokens"}, &out); err != nil {
		return nil, err
	}
	return out.Tokens, nil
}

// RevokeToken deletes a token (needs admin on *).
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.call(ctx, request{method: "DELETE", path: "/v1/tokens/" + url.PathEscape(id)}, nil)
}

// Backup streams an encrypted backup of the whole store into w (needs admin
// on *). It fails if the stream ends early or the server reports a failure
// after it started; the file is then incomplete.
func (c *Client) Backup(ctx context.Context, w io.Writer) (*credential.BackupInfo, error) {
	res, err := c.send(ctx, request{method: "POST", path: "/v1/backup"})
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if _, err := io.Copy(w, res.Body); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if code := res.Trailer.Get("X-Backup-Error"); code != "" {
		return nil, &Error{StatusCode: http.StatusInternalServerError, Code: code, Message: "the backup failed after it started: the file is incomplete", RequestID: res.Header.Get("X-Request-ID")}
	}
	creds, err1 := strconv.Atoi(res.Trailer.Get("X-Backup-Credentials"))
	vers, err2 := strconv.Atoi(res.Trailer.Get("X-Backup-Versions"))
	if err1 != nil || err2 != nil {
		return nil, &Error{StatusCode: http.StatusInternalServerError, Code: "internal", Message: "the backup stream ended without its trailer: the file is incomplete", RequestID: res.Header.Get("X-Request-ID")}
	}
	return &credential.BackupInfo{Credentials: creds, Versions: vers, CreatedAt: time.Now().UTC()}, nil
}

// Restore sends a backup file (needs admin on *); only, if set, restores one
// credential.
func (c *Client) Restore(ctx context.Context, r io.Reader, only string) (*credential.BackupInfo, error) {
	return c.RestoreWith(ctx, r, credential.RestoreOptions{Only: only})
}

// RestoreWith sends a backup file with options (Only, SkipBusy; Progress is
// not used remotely).
func (c *Client) RestoreWith(ctx context.Context, r io.Reader, opts credential.RestoreOptions) (*credential.BackupInfo, error) {
	only := opts.Only
	q := url.Values{}
	if opts.SkipBusy {
		q.Set("skip_busy", "true")
	}
	if only != "" {
		if err := credential.ValidateID(only); err != nil {
			return nil, err
		}
		q.Set("only", only)
	}
	var out struct {
		Credentials int       `json:"credentials"`
		Versions    int       `json:"versions"`
		CreatedAt   time.Time `json:"backup_created_at"`
		Skipped     []string  `json:"skipped"`
	}
	if err := c.call(ctx, request{method: "POST", path: "/v1/restore", query: q, body: r}, &out); err != nil {
		return nil, err
	}
	return &credential.BackupInfo{Credentials: out.Credentials, Versions: out.Versions, CreatedAt: out.CreatedAt, Skipped: out.Skipped}, nil
}

// Audit returns audit entries after seq and the seq to pass for the next
// page. A store-wide admin sees every entry; other tokens, those about the
// credentials their grants cover.
func (c *Client) Audit(ctx context.Context, after int64, limit int) ([]audit.Record, int64, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Entries []audit.Record `json:"entries"`
		Next    int64          `json:"next"`
	}
	if err := c.call(ctx, request{method: "GET", path: "/v1/audit", query: q}, &out); err != nil {
		return nil, 0, err
	}
	return out.Entries, out.Next, nil
}

// AuditVerification is the result of VerifyAudit.
type AuditVerification struct {
	OK      bool   `json:"ok"`
	Checked int64  `json:"checked"`
	Seq     int64  `json:"seq,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// VerifyAudit checks the audit chain on the server (needs admin on *). A
// broken chain is a result with OK false, not an error.
func (c *Client) VerifyAudit(ctx context.Context, anchor []byte) (*AuditVerification, error) {
	q := url.Values{}
	if anchor != nil {
		q.Set("anchor", hex.EncodeToString(anchor))
	}
	var out AuditVerification
	if err := c.call(ctx, request{method: "GET", path: "/v1/audit/verify", query: q}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Keys lists the key-encryption keys (needs admin on *).
func (c *Client) Keys(ctx context.Context) ([]credential.KeyInfo, error) {
	var out struct {
		Keys []credential.KeyInfo `json:"keys"`
	}
	if err := c.call(ctx, request{method: "GET", path: "/v1/keys"}, &out); err != nil {
		return nil, err
	}
	return out.Keys, nil
}

// RotateKEK adds a key-encryption key and rewraps every data key (needs
// admin on *).
func (c *Client) RotateKEK(ctx context.Context) (*credential.RotateKeyResult, error) {
	var out credential.RotateKeyResult
	if err := c.call(ctx, request{method: "POST", path: "/v1/keys/rotate"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Health checks that the server process is up.
func (c *Client) Health(ctx context.Context) error {
	return c.call(ctx, request{method: "GET", path: "/healthz"}, nil)
}

// Ready checks that the server's store answers and its scheduler runs; it
// fails with ErrUnavailable otherwise.
func (c *Client) Ready(ctx context.Context) error {
	res, err := c.send(ctx, request{method: "GET", path: "/readyz"})
	if err != nil {
		return err
	}
	res.Body.Close()
	return nil
}
