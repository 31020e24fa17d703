package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// The actions. Each is offered behind a confirmation page that says what
// will happen, then posted (with the CSRF token) to /ui/act/{name}/{id};
// the API decides whether the token may do it.
var actionNames = map[string]string{
	"rotate":   "Rotate now",
	"rollback": "Roll back",
	"extend":   "Extend grace",
	"retry":    "Retry the failed rotation",
	"abort":    "Roll back the failed rotation",
	"resolve":  "Resolve",
}

// extendChoices are the grace extensions offered.
var extendChoices = []string{"15m", "1h", "4h", "24h"}

type confirmData struct {
	ID      string
	Action  string
	Label   string
	What    []string // what will happen, step by step
	Version int      // rollback target (0: previous during grace)
	Keep    []int    // resolve: the versions that may be kept
	Extend  []string
	Cred    *credential.Credential
	Open    *rotation.Info
}

func (c *Console) confirm(rq *req) error {
	id, name := rq.r.PathValue("id"), rq.r.PathValue("action")
	label, ok := actionNames[name]
	if !ok {
		return &Error{Status: http.StatusNotFound, Message: "no console action " + strconv.Quote(name)}
	}
	if err := credential.ValidateID(id); err != nil {
		return &Error{Status: http.StatusBadRequest, Message: err.Error()}
	}
	api := c.api(rq)
	cred, err := api.Get(rq.ctx, id, client.GetOptions{})
	if err != nil {
		return apiError(err)
	}
	rots, err := api.Rotations(rq.ctx, id, true, 1)
	if err != nil {
		return apiError(err)
	}
	d := &confirmData{ID: id, Action: name, Label: label, Cred: cred}
	if len(rots) > 0 {
		d.Open = &rots[0]
	}
	grace := "the grace period"
	if pol, err := api.GetPolicy(rq.ctx, id); err == nil {
		grace = "the grace period (" + pol.Grace + ")"
	}
	switch name {
	case "rotate":
		d.What = []string{
			fmt.Sprintf("A new secret is generated and stored as version %d, labelled pending, before the target changes.", cred.Version+1),
			"It is set on the target and verified by logging in with it.",
			fmt.Sprintf("Then it becomes current; version %d stays valid for %s, and is retired after it.", cred.Version, grace),
			"If applying or verifying fails, the target is reverted and version " + strconv.Itoa(cred.Version) + " stays current.",
		}
	case "rollback":
		if v, _ := strconv.Atoi(rq.r.URL.Query().Get("version")); v > 0 {
			d.Version = v
			d.What = []string{
				fmt.Sprintf("Version %d's secret is set on the target again and verified.", v),
				fmt.Sprintf("Then version %d becomes current and version %d is kept as previous.", v, cred.Version),
				"Consumers following the watch stream switch to it.",
			}
		} else {
			if d.Open == nil || cred.State != credential.StateGrace {
				return &Error{Status: http.StatusConflict, Message: id + " is not in a grace period: choose a retained version to roll back to from its versions table"}
			}
			d.What = []string{
				fmt.Sprintf("Version %d (previous, still valid during grace) is verified against the target.", d.Open.FromVersion),
				fmt.Sprintf("It becomes current again; version %d is retired on the target.", d.Open.ToVersion),
				"Consumers following the watch stream switch back.",
			}
		}
	case "extend":
		if d.Open == nil || d.Open.GraceEndsAt == nil {
			return &Error{Status: http.StatusConflict, Message: id + " is not in a grace period"}
		}
		d.Extend = extendChoices
		d.What = []string{
			fmt.Sprintf("Version %d stays valid longer: the grace period, now ending %s, is pushed later by the amount you choose.", d.Open.FromVersion, d.Open.GraceEndsAt.UTC().Format(time.RFC3339)),
			"Grace is never shortened.",
		}
	case "retry":
		if d.Open == nil {
			return &Error{Status: http.StatusConflict, Message: id + " has no failed rotation to retry"}
		}
		d.What = []string{
			fmt.Sprintf("Rotation %d (v%d → v%d) runs again from its failed step (%s).", d.Open.RotationID, d.Open.FromVersion, d.Open.ToVersion, orDash(d.Open.FailedStep)),
			"If it fails again, it is rolled back or left for attention as before.",
		}
	case "abort":
		if d.Open == nil {
			return &Error{Status: http.StatusConflict, Message: id + " has no failed rotation to roll back"}
		}
		d.What = []string{
			fmt.Sprintf("Rotation %d is reverted: version %d is restored on the target and verified.", d.Open.RotationID, d.Open.FromVersion),
			fmt.Sprintf("Version %d stays current; pending version %d is discarded on the target.", d.Open.FromVersion, d.Open.ToVersion),
		}
	case "resolve":
		if d.Open == nil {
			return &Error{Status: http.StatusConflict, Message: id + " has no rotation that needs attention"}
		}
		d.Keep = []int{d.Open.FromVersion, d.Open.ToVersion}
		d.What = []string{
			"Closes the rotation that needs attention, after you have fixed the target by hand.",
			"The version you keep is verified against the target and made current; the other is discarded.",
		}
		if d.Open.Recovery != "" {
			d.What = append(d.What, "Recorded recovery steps: "+d.Open.Recovery)
		}
	}
	c.render(rq.w, http.StatusOK, "confirm", c.newPage(rq, label+" "+id, "credentials", d))
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// act performs a confirmed action through the API.
func (c *Console) act(rq *req) error {
	id, name := rq.r.PathValue("id"), rq.r.PathValue("action")
	if _, ok := actionNames[name]; !ok {
		return &Error{Status: http.StatusNotFound, Message: "no console action " + strconv.Quote(name)}
	}
	if err := credential.ValidateID(id); err != nil {
		return &Error{Status: http.StatusBadRequest, Message: err.Error()}
	}
	api := c.api(rq)
	reason := strings.TrimSpace(rq.r.PostFormValue("reason"))
	if len(reason) > 500 {
		return &Error{Status: http.StatusBadRequest, Message: "the reason is longer than 500 characters"}
	}
	if reason == "" {
		reason = "console"
	}
	var err error
	switch name {
	case "rotate":
		_, err = api.Rotate(rq.ctx, id, credential.RotateOptions{Reason: reason})
	case "rollback":
		v := 0
		if s := rq.r.PostFormValue("version"); s != "" {
			if v, err = strconv.Atoi(s); err != nil || v <= 0 {
				return &Error{Status: http.StatusBadRequest, Message: "version must be a version number"}
			}
		}
		_, err = api.Rollback(rq.ctx, id, credential.RollbackOptions{ToVersion: v, Reason: reason})
	case "extend":
		s := rq.r.PostFormValue("extend")
		if !slices.Contains(extendChoices, s) {
			return &Error{Status: http.StatusBadRequest, Message: "extend must be one of " + strings.Join(extendChoices, ", ")}
		}
		by, _ := time.ParseDuration(s)
		_, err = api.ExtendGrace(rq.ctx, id, by)
	case "retry":
		_, err = api.Retry(rq.ctx, id, false)
	case "abort":
		_, err = api.Retry(rq.ctx, id, true)
	case "resolve":
		keep, perr := strconv.Atoi(rq.r.PostFormValue("keep"))
		if perr != nil || keep <= 0 {
			return &Error{Status: http.StatusBadRequest, Message: "keep must be a version number"}
		}
		_, err = api.Resolve(rq.ctx, id, keep, false)
	}
	c.snap.invalidate()
	done := name
	if err != nil {
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Rotation == nil {
			return apiError(err)
		}
		// The rotation ran and ended in a failure the journal records
		// (and the page shows): show the credential, not an error page.
		done = name + " (ended with an error: see the timeline)"
	}
	http.Redirect(rq.w, rq.r, "/ui/credential/"+pathEscape(id)+"?done="+url.QueryEscape(done), http.StatusSeeOther)
	return nil
}

// pathEscape escapes each segment of a credential ID.
func pathEscape(id string) string {
	parts := strings.Split(id, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// The audit page.

type auditData struct {
	Entries       []audit.Record
	Actor, Action string
	ID, Outcome   string
	From, To      int64
	Older, Newer  string
	Verify        *client.AuditVerification
	VerifyErr     string
}

// auditWindow is how many sequence numbers one audit page covers.
const auditWindow = 200

func (c *Console) auditPage(rq *req) error {
	q := rq.r.URL.Query()
	d := &auditData{Actor: q.Get("actor"), Action: q.Get("action"), ID: q.Get("id"), Outcome: q.Get("outcome")}
	api := c.api(rq)
	if q.Get("verify") != "" {
		v, err := api.VerifyAudit(rq.ctx, nil)
		if err != nil {
			d.VerifyErr = apiError(err).Error()
		} else {
			d.Verify = v
		}
	}
	// The window ends at ?to=, or at the newest entry.
	to, err := strconv.ParseInt(q.Get("to"), 10, 64)
	if err != nil || to <= 0 {
		to, err = c.lastAuditSeq(rq)
		if err != nil {
			return err
		}
	}
	from := max(to-auditWindow, 0)
	d.From, d.To = from+1, to
	after := from
	for after < to {
		recs, next, err := api.Audit(rq.ctx, after, auditWindow)
		if err != nil {
			return apiError(err)
		}
		for _, r := range recs {
			if r.Seq > to {
				break
			}
			if matchAudit(r, d) {
				d.Entries = append(d.Entries, r)
			}
		}
		if len(recs) == 0 || next <= after {
			break
		}
		after = next
	}
	slices.Reverse(d.Entries)
	base := url.Values{}
	for k, v := range map[string]string{"actor": d.Actor, "action": d.Action, "id": d.ID, "outcome": d.Outcome} {
		if v != "" {
			base.Set(k, v)
		}
	}
	if from > 0 {
		v := cloneValues(base)
		v.Set("to", strconv.FormatInt(from, 10))
		d.Older = "/ui/audit?" + v.Encode()
	}
	if q.Get("to") != "" {
		v := cloneValues(base)
		v.Set("to", strconv.FormatInt(to+auditWindow, 10))
		d.Newer = "/ui/audit?" + v.Encode()
	}
	p := c.newPage(rq, "Audit log", "audit", d)
	c.render(rq.w, http.StatusOK, "audit", p)
	return nil
}

func matchAudit(r audit.Record, d *auditData) bool {
	return (d.Actor == "" || strings.Contains(r.Actor, d.Actor)) &&
		(d.Action == "" || strings.HasPrefix(r.Action, d.Action)) &&
		(d.ID == "" || strings.HasPrefix(r.CredentialID, d.ID)) &&
		(d.Outcome == "" || strings.HasPrefix(r.Outcome, d.Outcome))
}

// lastAuditSeq is the newest entry's sequence number (an indexed read of the
// last row; it reveals only a count).
func (c *Console) lastAuditSeq(rq *req) (int64, error) {
	var seq int64
	err := c.cfg.Manager.Store().View(rq.ctx, func(tx store.Tx) error {
		rec, err := tx.LastAudit(rq.ctx)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		seq = rec.Seq
		return nil
	})
	return seq, err
}
