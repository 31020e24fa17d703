package rotation

import (
	"context"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// Check is the result of testing one version against the target.
type Check struct {
	Version int    `json:"version"`
	Label   string `json:"label"`
	OK      bool   `json:"ok"`
	Detail  string `json:"detail"`
}

// Finding is one diagnosis with the command that fixes it.
type Finding struct {
	Severity string `json:"severity"` // "ok", "warning", "error"
	Title    string `json:"title"`
	Detail   string `json:"detail,omitempty"`
	Fix      string `json:"fix,omitempty"`
}

// Report is the result of Doctor.
type Report struct {
	CredentialID string      `json:"credential_id"`
	Healthy      bool        `json:"healthy"`
	State        string      `json:"state"`
	Checks       []Check     `json:"checks"`
	Findings     []Finding   `json:"findings"`
	Rotation     *RotSummary `json:"rotation,omitempty"`
}

// RotSummary describes the open or last rotation in a report.
type RotSummary struct {
	ID          int64      `json:"id"`
	Kind        string     `json:"kind"`
	Step        string     `json:"step"`
	FromVersion int        `json:"from_version"`
	ToVersion   int        `json:"to_version"`
	ErrorClass  string     `json:"error_class,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	GraceEndsAt *time.Time `json:"grace_ends_at,omitempty"`
	Attempt     int        `json:"attempt"`
}

// Doctor walks the decision tree of a failed rotation (the troubleshooting
// guide's quick diagnosis): did the new credential fail, was the old one revoked
// early, has grace expired, did rollback fail. It tests current and previous
// (and pending) against the target and says which command fixes what it finds.
func (e *Engine) Doctor(ctx context.Context, id string) (*Report, error) {
	var (
		c      *store.Credential
		labels map[string]int
		vers   = map[int]*store.Version{}
		open   *store.Rotation
		last   *store.Rotation
	)
	err := e.st.View(ctx, func(tx store.Tx) error {
		var err error
		if c, err = tx.GetCredential(ctx, id); err != nil {
			return err
		}
		if labels, err = tx.Labels(ctx, id); err != nil {
			return err
		}
		for _, n := range labels {
			v, err := tx.GetVersion(ctx, id, n)
			if err != nil {
				return err
			}
			vers[n] = v
		}
		rs, err := tx.ListRotations(ctx, store.RotationFilter{CredentialID: id, Limit: 1})
		if err != nil {
			return err
		}
		if len(rs) > 0 {
			last = &rs[0]
			if last.Open {
				open = last
			}
			if n := last.FromVersion; n > 0 && vers[n] == nil && !last.Open {
				if v, err := tx.GetVersion(ctx, id, n); err == nil {
					vers[n] = v // to check that it is refused (stale.go)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("doctor %s: %w", id, err)
	}
	rep := &Report{CredentialID: id, State: "active"}
	add := func(sev, title, detail, fix string) {
		rep.Findings = append(rep.Findings, Finding{Severity: sev, Title: title, Detail: detail, Fix: fix})
	}
	if c.DeletedAt != nil {
		rep.State = "deleted"
		add("error", "credential is deleted", "it is neither served nor rotated", fmt.Sprintf("nebula-credential put %s --type %s < values.json", id, c.Type))
		return rep, nil
	}
	if open != nil {
		rep.State = StateOf(open)
	}
	if last != nil {
		rep.Rotation = &RotSummary{ID: last.ID, Kind: last.Kind, Step: last.Step, FromVersion: last.FromVersion, ToVersion: last.ToVersion, ErrorClass: last.ErrorClass, LastError: last.LastError, GraceEndsAt: last.GraceEndsAt, Attempt: last.Attempt}
	}
	rot, err := e.reg.Lookup(c.Type)
	if err != nil {
		add("error", "no rotator for type "+c.Type, err.Error(), "")
		return rep, nil
	}
	// Test each labelled version against the target.
	ok := map[string]bool{}
	away := map[string]bool{} // the target did not answer: nothing known
	for _, label := range []string{"current", "previous", "pending"} {
		n, has := labels[label]
		if !has {
			continue
		}
		v, err := e.vault.Open(c.Type, vers[n])
		if err != nil {
			rep.Checks = append(rep.Checks, Check{Version: n, Label: label, Detail: "cannot decrypt: " + err.Error()})
			continue
		}
		sctx, cancel := e.stepCtx(ctx)
		resp, verr := rot.Verify(sctx, rotator.VerifyRequest{Credential: toRotator(v), Resolver: e.resolver(id)})
		cancel()
		chk := Check{Version: n, Label: label, OK: verr == nil, Detail: resp.Detail}
		if verr != nil {
			chk.Detail = fmt.Sprintf("%s: %v", rotator.ClassOf(verr), verr)
			away[label] = unreachable(verr)
		}
		ok[label] = verr == nil
		rep.Checks = append(rep.Checks, chk)
	}
	if ch, isChecker := rotator.Unwrap(rot).(rotator.Checker); isChecker {
		if v, err := e.vault.Open(c.Type, vers[labels["current"]]); err == nil {
			sctx, cancel := e.stepCtx(ctx)
			resp, err := ch.Check(sctx, rotator.CheckRequest{Credential: toRotator(v), Resolver: e.resolver(id)})
			cancel()
			if err == nil {
				for _, w := range resp.Warnings {
					add("warning", "target setup", w, "")
				}
			}
		}
	}

	if f := e.bindingFinding(ctx, id); f != nil {
		rep.Findings = append(rep.Findings, *f)
	}
	now := e.now()
	cur, prev := labels["current"], labels["previous"]
	switch {
	case open != nil && open.Step == StepReauthRequired:
		_, rec := Recovery(open)
		add("error", "refresh token rejected: re-authorisation required", open.LastError, rec)
	case open != nil && open.Step == StepNeedsAttention:
		failed, rec := Recovery(open)
		title := attentionTitle(open, failed)
		if decodeData(open).RevertFailed {
			title = revertFailedTitle(open)
		}
		fix := fmt.Sprintf("nebula-credential rotations resolve %s --keep %d", id, cur)
		if !ok["current"] && ok["pending"] {
			fix = fmt.Sprintf("nebula-credential rotations resolve %s --keep %d", id, open.ToVersion)
		}
		if failed == StepGrace || open.ErrorClass == string(rotator.ClassTransient) {
			// Retiring again is what revokes the old secret (resolve would
			// leave it valid); a step that failed because the target was away
			// only needs to run again.
			fix = fmt.Sprintf("nebula-credential rotations retry %s", id)
		}
		add("error", title, open.LastError+". "+rec, fix)
	case !ok["current"] && ok["previous"] && open != nil && open.Step == StepGrace:
		add("error", "the new credential does not authenticate, the previous one does",
			fmt.Sprintf("version %d (current) fails; version %d is still valid until %s", cur, prev, fmtTime(open.GraceEndsAt)),
			fmt.Sprintf("nebula-credential rollback %s", id))
	case !ok["current"] && away["current"]:
		add("error", "the target did not answer", fmt.Sprintf("version %d (current) could not be checked: %s; nothing is known about it until the target answers", cur, checkDetail(rep.Checks, "current")),
			fmt.Sprintf("nebula-credential doctor %s   # again, once the target is reachable", id))
	case !ok["current"]:
		fix := fmt.Sprintf("nebula-credential rotate %s", id)
		detail := fmt.Sprintf("version %d is current but the target rejects it (changed outside nebula-credential, or the target is down)", cur)
		if rep.Rotation != nil && rep.Rotation.FromVersion > 0 && rep.Rotation.FromVersion != cur {
			fix = fmt.Sprintf("nebula-credential rollback %s --to-version %d", id, rep.Rotation.FromVersion)
		}
		add("error", "current credential does not authenticate", detail, fix)
	case open != nil && open.Step == StepGrace && prev > 0 && !ok["previous"]:
		add("warning", "old credential revoked before the grace period ended",
			fmt.Sprintf("version %d stopped working before %s: consumers still on it fail", prev, fmtTime(open.GraceEndsAt)),
			"restart or reload consumers so they fetch the current version (nebula-credential get "+id+")")
	case open != nil && open.Step == StepGrace && open.GraceEndsAt != nil && now.After(open.GraceEndsAt.Add(time.Minute)):
		add("warning", "grace period expired but the old version is not retired",
			fmt.Sprintf("grace ended at %s; the retire job has not run (is `nebula-credential serve` running?)", fmtTime(open.GraceEndsAt)),
			"nebula-credential serve   # runs the scheduler, which retires it")
	case open != nil && open.Step != StepGrace && open.LeaseUntil.Before(now) && open.DueAt.Before(now.Add(-time.Minute)):
		add("warning", fmt.Sprintf("rotation %d is stalled at step %s", open.ID, open.Step), open.LastError, "nebula-credential serve   # or any command: recovery resumes it")
	case last != nil && last.Step == StepRolledBack && !decodeData(last).Rollback && last.LastError != "":
		add("warning", fmt.Sprintf("last rotation rolled back: %s failed (%s)", decodeData(last).FailedStep, last.ErrorClass), last.LastError+"; the current version still works",
			fmt.Sprintf("fix the cause, then: nebula-credential rotate %s", id))
	}
	if ok["current"] && staleCandidate(last, cur, now) && vers[last.FromVersion] != nil {
		// The previous version must be refused now that its grace ended.
		if v, err := e.vault.Open(c.Type, vers[last.FromVersion]); err == nil {
			sctx, cancel := e.stepCtx(ctx)
			_, verr := rot.Verify(sctx, rotator.VerifyRequest{Credential: toRotator(v), Resolver: e.resolver(id)})
			cancel()
			if verr == nil {
				rep.Findings = append(rep.Findings, staleFinding(id, last))
			}
		}
	}
	if pf, err := e.PolicyFindings(ctx, id); err == nil { // see policycheck.go
		rep.Findings = append(rep.Findings, pf...)
	}
	rep.Healthy = true
	for _, f := range rep.Findings {
		if f.Severity == "error" {
			rep.Healthy = false
		}
	}
	if !ok["current"] {
		rep.Healthy = false
	}
	if rep.Healthy && len(rep.Findings) == 0 {
		if c.Type == "generic" {
			// A generic secret has no target: nothing was authenticated.
			add("ok", "healthy", fmt.Sprintf("version %d is stored with every secret field set (a generic secret has no target to check against)", cur), "")
		} else {
			add("ok", "healthy", fmt.Sprintf("version %d authenticates", cur), "")
		}
	}
	return rep, nil
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}
