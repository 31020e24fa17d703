package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/spf13/cobra"
	"io"
	"net"
	"os"
	"strings"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/rotation"
)

// backend is what the commands need: the store opened in-process, or a
// server reached with --addr / NEBULA_CREDENTIAL_ADDR and a token.
type backend interface {
	Put(ctx context.Context, id string, req credential.PutRequest) (*credential.Credential, error)
	// Get returns a version; without reveal a remote backend returns the secret
	// field names with empty values.
	Get(ctx context.Context, id string, opts credential.GetOptions, reveal bool) (*credential.Credential, error)
	List(ctx context.Context, opts credential.ListOptions) ([]credential.Summary, string, error)
	History(ctx context.Context, id string, limit int) ([]credential.VersionInfo, []credential.HistoryEntry, error)
	Delete(ctx context.Context, id string) error
	Purge(ctx context.Context, id string) error

	Rotate(ctx context.Context, id string, opts rotation.RotateOptions) (*rotation.Info, error)
	Rollback(ctx context.Context, id string, opts rotation.RollbackOptions) (*rotation.Info, error)
	ExtendGrace(ctx context.Context, id string, by time.Duration) (*rotation.Info, error)
	EndGrace(ctx context.Context, id, reason string) (*rotation.Info, error)
	RotateNow(ctx context.Context, id string, opts rotation.EmergencyOptions) (*rotation.EmergencyInfo, error)
	Resolve(ctx context.Context, id string, keep int, force bool) (*rotation.Info, error)
	Retry(ctx context.Context, id string, rollback bool) (*rotation.Info, error)
	Rotations(ctx context.Context, id string, openOnly bool, limit int) ([]rotation.Info, error)
	Policy(ctx context.Context, id string) (*client.Policy, error)
	SetPolicy(ctx context.Context, id string, s credential.Settings) (*client.Policy, error)
	Doctor(ctx context.Context, id string) (*rotation.Report, error)

	Backup(ctx context.Context, w io.Writer, progress func(done, total int)) (*credential.BackupInfo, error)
	Restore(ctx context.Context, r io.Reader, opts credential.RestoreOptions) (*credential.BackupInfo, error)
	RotateKEK(ctx context.Context, progress func(done, total int)) (*credential.RotateKeyResult, error)
	Keys(ctx context.Context) ([]credential.KeyInfo, error)
	VerifyAudit(ctx context.Context, anchor []byte) (*client.AuditVerification, error)
	Audit(ctx context.Context, after int64, limit int) ([]audit.Record, error)
	Close() error
}

// serverAddr is --addr, else NEBULA_CREDENTIAL_ADDR ("" = work on the store).
// Several instances are a comma-separated list; the client fails over
// between them (see client.New).
func (g *globals) serverAddr() string {
	if g.addr != "" {
		return g.addr
	}
	return os.Getenv("NEBULA_CREDENTIAL_ADDR")
}

// backend opens the store in-process, or connects to the server.
func (g *globals) backend(ctx context.Context, o openOpts) (backend, error) {
	addr := g.serverAddr()
	if addr == "" {
		m, err := g.open(ctx, o)
		if err != nil {
			return nil, err
		}
		return local{m}, nil
	}
	token := os.Getenv("NEBULA_CREDENTIAL_TOKEN")
	if token == "" {
		return nil, usagef("talking to %s needs a token: set NEBULA_CREDENTIAL_TOKEN (the admin token is in admin.token beside the server's store)", addr)
	}
	c, err := client.New(addr, strings.TrimSpace(token), nil)
	if err != nil {
		return nil, err
	}
	return remote{c}, nil
}

// unreachableHint adds what to do next to the error of a command whose
// server (every address of --addr / NEBULA_CREDENTIAL_ADDR) did not answer.
func (g *globals) unreachableHint(err error) error {
	addr := g.serverAddr()
	if addr == "" || err == nil {
		return err
	}
	var ue *client.UnreachableError
	var oe *net.OpError
	if !errors.As(err, &ue) && !(errors.As(err, &oe) && oe.Op == "dial") {
		return err
	}
	return fmt.Errorf("%w; check that `nebula-credential serve` runs at %s and that GET /readyz there answers 200 (503: its store is unreachable), "+
		"correct --addr / NEBULA_CREDENTIAL_ADDR (several instances: comma-separated, e.g. --addr a:8270,b:8270), "+
		"or unset both to work on a store file directly", err, addr)
}

// local runs commands on a Manager.
type local struct{ m *credential.Manager }

func (l local) Put(ctx context.Context, id string, req credential.PutRequest) (*credential.Credential, error) {
	return l.m.Put(ctx, id, req)
}

func (l local) Get(ctx context.Context, id string, opts credential.GetOptions, _ bool) (*credential.Credential, error) {
	return l.m.Get(ctx, id, opts)
}

func (l local) List(ctx context.Context, opts credential.ListOptions) ([]credential.Summary, string, error) {
	return l.m.List(ctx, opts)
}

func (l local) History(ctx context.Context, id string, limit int) ([]credential.VersionInfo, []credential.HistoryEntry, error) {
	vs, err := l.m.Versions(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	hs, err := l.m.History(ctx, id, limit)
	return vs, hs, err
}

func (l local) Delete(ctx context.Context, id string) error {
	actor, _ := audit.ActorOf(ctx)
	return l.m.Delete(ctx, id, actor)
}

func (l local) Purge(ctx context.Context, id string) error { return l.m.Purge(ctx, id) }

func (l local) Rotate(ctx context.Context, id string, opts rotation.RotateOptions) (*rotation.Info, error) {
	r, err := l.m.Rotate(ctx, id, opts)
	return rotation.InfoOf(r), err
}

func (l local) Rollback(ctx context.Context, id string, opts rotation.RollbackOptions) (*rotation.Info, error) {
	r, err := l.m.Rollback(ctx, id, opts)
	return rotation.InfoOf(r), err
}

func (l local) ExtendGrace(ctx context.Context, id string, by time.Duration) (*rotation.Info, error) {
	r, err := l.m.ExtendGrace(ctx, id, by)
	return rotation.InfoOf(r), err
}

func (l local) Resolve(ctx context.Context, id string, keep int, force bool) (*rotation.Info, error) {
	if err := credential.ValidateID(id); err != nil {
		return nil, err
	}
	r, err := l.m.Engine().Resolve(ctx, id, keep, force)
	return rotation.InfoOf(r), err
}

func (l local) Retry(ctx context.Context, id string, rollback bool) (*rotation.Info, error) {
	if err := credential.ValidateID(id); err != nil {
		return nil, err
	}
	r, err := l.m.Engine().Retry(ctx, id, rollback)
	return rotation.InfoOf(r), err
}

func (l local) Rotations(ctx context.Context, id string, openOnly bool, limit int) ([]rotation.Info, error) {
	if id != "" {
		if _, err := l.m.Versions(ctx, id); err != nil {
			return nil, err
		}
	}
	rs, err := l.m.Rotations(ctx, id, openOnly, limit)
	out := make([]rotation.Info, 0, len(rs))
	for i := range rs {
		out = append(out, *rotation.InfoOf(&rs[i]))
	}
	return out, err
}

func (l local) Policy(ctx context.Context, id string) (*client.Policy, error) {
	s, err := l.m.GetSettings(ctx, id)
	if err != nil {
		return nil, err
	}
	c, err := l.m.Get(ctx, id, credential.GetOptions{})
	if err != nil {
		return nil, err
	}
	ws, err := l.m.PolicyFindings(ctx, id)
	if err != nil {
		return nil, err
	}
	return &client.Policy{ID: id, Settings: s, NextRotationAt: c.NextDueAt, Grace: s.GraceOrDefault().String(),
		Validate: s.ValidateOrDefault(), AutoRollback: s.AutoRollbackOrDefault(), Retention: s.RetentionOrDefault(), Warnings: ws}, nil
}

func (l local) SetPolicy(ctx context.Context, id string, s credential.Settings) (*client.Policy, error) {
	if err := l.m.SetSettings(ctx, id, s); err != nil {
		return nil, err
	}
	return l.Policy(ctx, id)
}

func (l local) Doctor(ctx context.Context, id string) (*rotation.Report, error) {
	return l.m.Doctor(ctx, id)
}

func (l local) Backup(ctx context.Context, w io.Writer, progress func(int, int)) (*credential.BackupInfo, error) {
	return l.m.Backup(ctx, w, progress)
}

func (l local) Restore(ctx context.Context, r io.Reader, opts credential.RestoreOptions) (*credential.BackupInfo, error) {
	return l.m.Restore(ctx, r, opts)
}

func (l local) RotateKEK(ctx context.Context, progress func(int, int)) (*credential.RotateKeyResult, error) {
	return l.m.RotateKEK(ctx, progress)
}

func (l local) Keys(ctx context.Context) ([]credential.KeyInfo, error) { return l.m.Keys(ctx) }

func (l local) VerifyAudit(ctx context.Context, anchor []byte) (*client.AuditVerification, error) {
	n, err := audit.Verify(ctx, l.m.Store(), anchor)
	if p, ok := err.(*audit.Problem); ok {
		return &client.AuditVerification{OK: false, Checked: n, Seq: p.Seq, Reason: p.Reason}, nil
	}
	if err != nil {
		return nil, err
	}
	return &client.AuditVerification{OK: true, Checked: n}, nil
}

func (l local) Audit(ctx context.Context, after int64, limit int) ([]audit.Record, error) {
	return audit.List(ctx, l.m.Store(), after, limit)
}

func (l local) Close() error { return l.m.Close() }

// remote runs commands through the server's API.
type remote struct{ c *client.Client }

func (r remote) Put(ctx context.Context, id string, req credential.PutRequest) (*credential.Credential, error) {
	return r.c.Put(ctx, id, req)
}

func (r remote) Get(ctx context.Context, id string, opts credential.GetOptions, reveal bool) (*credential.Credential, error) {
	return r.c.Get(ctx, id, client.GetOptions{Version: opts.Version, Label: opts.Label, Reveal: reveal})
}

func (r remote) List(ctx context.Context, opts credential.ListOptions) ([]credential.Summary, string, error) {
	return r.c.List(ctx, opts)
}

func (r remote) History(ctx context.Context, id string, limit int) ([]credential.VersionInfo, []credential.HistoryEntry, error) {
	h, err := r.c.History(ctx, id, limit)
	if err != nil {
		return nil, nil, err
	}
	return h.Versions, h.Events, nil
}

func (r remote) Delete(ctx context.Context, id string) error { return r.c.Delete(ctx, id) }
func (r remote) Purge(ctx context.Context, id string) error  { return r.c.Purge(ctx, id) }

func (r remote) Rotate(ctx context.Context, id string, opts rotation.RotateOptions) (*rotation.Info, error) {
	info, err := r.c.Rotate(ctx, id, opts)
	var ae *client.Error
	if err != nil && opts.Wait && !errors.As(err, &ae) {
		// No answer: the server may have restarted during the wait. A
		// rotation queued behind a grace period is stored, not held in the
		// request, so it still runs when the grace ends.
		err = fmt.Errorf("%w; if the server restarted while this waited for a grace period, the rotation stays queued there and runs when the grace ends. Check: `nebula-credential rotations %s`; wait again: `nebula-credential rotate %s --wait`", err, id, id)
	}
	return info, err
}

func (r remote) Rollback(ctx context.Context, id string, opts rotation.RollbackOptions) (*rotation.Info, error) {
	return r.c.Rollback(ctx, id, opts)
}

func (r remote) ExtendGrace(ctx context.Context, id string, by time.Duration) (*rotation.Info, error) {
	return r.c.ExtendGrace(ctx, id, by)
}

func (r remote) Resolve(ctx context.Context, id string, keep int, force bool) (*rotation.Info, error) {
	return r.c.Resolve(ctx, id, keep, force)
}

func (r remote) Retry(ctx context.Context, id string, rollback bool) (*rotation.Info, error) {
	return r.c.Retry(ctx, id, rollback)
}

func (r remote) Rotations(ctx context.Context, id string, openOnly bool, limit int) ([]rotation.Info, error) {
	return r.c.Rotations(ctx, id, openOnly, limit)
}

func (r remote) Policy(ctx context.Context, id string) (*client.Policy, error) {
	return r.c.GetPolicy(ctx, id)
}

func (r remote) SetPolicy(ctx context.Context, id string, s credential.Settings) (*client.Policy, error) {
	return r.c.SetPolicy(ctx, id, s)
}

func (r remote) Doctor(ctx context.Context, id string) (*rotation.Report, error) {
	return r.c.Doctor(ctx, id)
}

func (r remote) Backup(ctx context.Context, w io.Writer, _ func(int, int)) (*credential.BackupInfo, error) {
	return r.c.Backup(ctx, w)
}

func (r remote) Restore(ctx context.Context, rd io.Reader, opts credential.RestoreOptions) (*credential.BackupInfo, error) {
	return r.c.RestoreWith(ctx, rd, opts)
}

func (r remote) RotateKEK(ctx context.Context, _ func(int, int)) (*credential.RotateKeyResult, error) {
	return r.c.RotateKEK(ctx)
}

func (r remote) Keys(ctx context.Context) ([]credential.KeyInfo, error) { return r.c.Keys(ctx) }

func (r remote) VerifyAudit(ctx context.Context, anchor []byte) (*client.AuditVerification, error) {
	return r.c.VerifyAudit(ctx, anchor)
}

func (r remote) Audit(ctx context.Context, after int64, limit int) ([]audit.Record, error) {
	recs, _, err := r.c.Audit(ctx, after, limit)
	return recs, err
}

func (r remote) Close() error { return nil }

// localOnly refuses a command that needs the store itself in client mode.
func (g *globals) localOnly(what string) error {
	if addr := g.serverAddr(); addr != "" {
		return usagef("%s works on the store directly, not through a server (%s): unset NEBULA_CREDENTIAL_ADDR or drop --addr", what, addr)
	}
	return nil
}

// withBackend returns a RunE that opens the backend, runs fn and closes it.
func (g *globals) withBackend(o openOpts, fn func(cmd *cobra.Command, args []string, m backend) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		m, err := g.backend(cmd.Context(), o)
		if err != nil {
			return err
		}
		defer m.Close()
		return fn(cmd, args, m)
	}
}
