package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/rotation"
)

// pageSize is the number of rows of a list or audit page.
const pageSize = 50

// page is what every template gets.
type page struct {
	Title  string
	Nav    string
	CSRF   string
	Actor  string
	Admin  bool
	Flash  string
	Error  string
	Status int
	// Live makes the page follow the watch stream (LivePrefix narrows it);
	// Poll (seconds) reloads its content while a rotation is moving.
	Live       bool
	LivePrefix string
	Poll       int
	Now        time.Time
	Data       any
}

func (c *Console) newPage(rq *req, title, nav string, data any) page {
	return page{Title: title, Nav: nav, CSRF: rq.sess.csrf, Actor: rq.p.Actor, Admin: rq.can(acl.Admin, ""), Now: rq.now, Data: data}
}

// fail answers an error as a page with its status.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, rq *req, err error) {
	status, msg := http.StatusInternalServerError, "internal error"
	var e *Error
	if errors.As(err, &e) {
		status, msg = e.Status, e.Message
	} else {
		c.cfg.Logger.Error("console request failed", "path", r.URL.Path, "err", err)
		if id := w.Header().Get("X-Request-ID"); id != "" {
			msg += " (request " + id + ")"
		}
	}
	p := page{Title: http.StatusText(status), Error: msg, Status: status, Now: c.cfg.Clock()}
	if rq != nil {
		p = c.newPage(rq, http.StatusText(status), "", nil)
		p.Error, p.Status = msg, status
	}
	if r.URL.Path == "/ui/live" {
		http.Error(w, msg, status)
		return
	}
	c.render(w, status, "error", p)
}

// viewed audits a page view that reads the store directly (overview, list).
func (c *Console) viewed(rq *req, action, detail string) error {
	err := c.cfg.Audit(rq.ctx, audit.Entry{At: rq.now, Actor: rq.p.Actor, Action: action, Outcome: "allowed", RequestID: rq.w.Header().Get("X-Request-ID"), Detail: detail})
	if err != nil {
		c.cfg.Logger.Error("audit write failed: refusing the page", "err", err)
		return &Error{Status: http.StatusInternalServerError, Message: "the audit log could not be written, so the page is not shown: check the store"}
	}
	return nil
}

// The overview.

type stateCount struct {
	State credential.State
	N     int
}

type openItem struct {
	Row  credRow
	Info *rotation.Info
}

type overviewData struct {
	Total     int
	Counts    []stateCount
	Attention []openItem
	Moving    []openItem
	Grace     []openItem
	DueNext   []credRow
	Certs     []credRow
	// Consumers is nil when consumer reporting is not available.
	Consumers    []ConsumerLag
	ConsumersOn  bool
	ConsumersErr string
	At           time.Time
}

var stateOrder = []credential.State{
	credential.StateNeedsAttention, credential.StateReauthRequired, credential.StateRolledBack,
	"rolling_back", credential.StateRotating, credential.StateGrace, credential.StateExpired, credential.StateActive,
}

func failing(s credential.State) bool {
	return s == credential.StateNeedsAttention || s == credential.StateReauthRequired || s == credential.StateRolledBack
}

func moving(s credential.State) bool { return s == credential.StateRotating || s == "rolling_back" }

func (c *Console) overview(rq *req) error {
	snap, err := c.snap.get(rq.ctx)
	if err != nil {
		return err
	}
	if err := c.viewed(rq, "console.overview", ""); err != nil {
		return err
	}
	d := buildOverview(snap, visibility(rq.p.Grants), rq.now)
	if c.cfg.Consumers != nil {
		d.ConsumersOn = true
		lags, err := c.cfg.Consumers(rq.ctx, visibility(rq.p.Grants))
		if err != nil {
			d.ConsumersErr = err.Error()
		}
		d.Consumers = lags
	}
	p := c.newPage(rq, "Overview", "overview", d)
	p.Live = true
	if len(d.Moving) > 0 {
		p.Poll = 2
	}
	c.render(rq.w, http.StatusOK, "overview", p)
	return nil
}

func buildOverview(snap *snapshot, visible func(string) bool, now time.Time) *overviewData {
	d := &overviewData{At: snap.at}
	counts := map[credential.State]int{}
	for i := range snap.rows {
		r := &snap.rows[i]
		if !visible(r.ID) {
			continue
		}
		d.Total++
		counts[r.State]++
		if r.Open == nil {
			continue
		}
		it := openItem{Row: *r, Info: rotation.InfoOf(r.Open)}
		switch {
		case failing(r.State):
			d.Attention = append(d.Attention, it)
		case r.State == credential.StateGrace:
			d.Grace = append(d.Grace, it)
		default:
			d.Moving = append(d.Moving, it)
		}
	}
	for _, s := range stateOrder {
		if counts[s] > 0 {
			d.Counts = append(d.Counts, stateCount{s, counts[s]})
			delete(counts, s)
		}
	}
	for s, n := range counts {
		d.Counts = append(d.Counts, stateCount{s, n})
	}
	// Failed first: needs_attention before reauth before rolled back, newest first.
	slices.SortStableFunc(d.Attention, func(a, b openItem) int {
		if x, y := slices.Index(stateOrder, a.Row.State), slices.Index(stateOrder, b.Row.State); x != y {
			return x - y
		}
		return b.Info.UpdatedAt.Compare(a.Info.UpdatedAt)
	})
	slices.SortStableFunc(d.Grace, func(a, b openItem) int {
		if a.Info.GraceEndsAt == nil || b.Info.GraceEndsAt == nil {
			return 0
		}
		return a.Info.GraceEndsAt.Compare(*b.Info.GraceEndsAt)
	})
	for _, i := range snap.byDue {
		if len(d.DueNext) == 10 {
			break
		}
		if visible(snap.rows[i].ID) {
			d.DueNext = append(d.DueNext, snap.rows[i])
		}
	}
	horizon := now.Add(30 * 24 * time.Hour)
	for _, i := range snap.certs {
		r := snap.rows[i]
		if r.ExpiresAt.After(horizon) {
			break
		}
		if visible(r.ID) {
			d.Certs = append(d.Certs, r)
		}
	}
	return d
}

// The credential list.

type listRow struct {
	ID          string
	Type        string
	State       credential.State
	Current     int
	UpdatedAt   time.Time
	NextDueAt   *time.Time
	GraceEndsAt *time.Time
}

type listData struct {
	Prefix, Type, State, Sort string
	Rows                      []listRow
	Next, Prev                string // URLs of the neighbouring pages
	Matched                   int    // -1 when not counted (sorted by ID, paged by cursor)
	Types                     []credential.Type
	States                    []credential.State
}

func (c *Console) list(rq *req) error {
	q := rq.r.URL.Query()
	d := &listData{Prefix: q.Get("prefix"), Type: q.Get("type"), State: q.Get("state"), Sort: q.Get("sort"), Types: credential.Types(), States: stateOrder, Matched: -1}
	switch d.Sort {
	case "", "id":
		d.Sort = "id"
	case "due", "age":
	default:
		return &Error{Status: http.StatusBadRequest, Message: "sort must be id, due or age"}
	}
	if d.Type != "" {
		if err := credential.ValidateType(credential.Type(d.Type)); err != nil {
			return &Error{Status: http.StatusBadRequest, Message: err.Error()}
		}
	}
	if d.State != "" && !slices.Contains(stateOrder, credential.State(d.State)) {
		return &Error{Status: http.StatusBadRequest, Message: "unknown state " + strconv.Quote(d.State)}
	}
	base := url.Values{}
	for k, v := range map[string]string{"prefix": d.Prefix, "type": d.Type, "state": d.State, "sort": d.Sort} {
		if v != "" {
			base.Set(k, v)
		}
	}
	if d.Sort == "id" && d.State == "" {
		// The API's list: a range scan of the primary key from the
		// prefix, with the token's grants applied by the API.
		after := q.Get("after")
		sums, next, err := c.api(rq).List(rq.ctx, credential.ListOptions{Prefix: d.Prefix, Type: credential.Type(d.Type), After: after, Limit: pageSize})
		if err != nil {
			return apiError(err)
		}
		for _, s := range sums {
			d.Rows = append(d.Rows, listRow{ID: s.ID, Type: string(s.Type), State: s.State, Current: s.Current, UpdatedAt: s.UpdatedAt, NextDueAt: s.NextDueAt})
		}
		if next != "" {
			v := cloneValues(base)
			v.Set("after", next)
			d.Next = "/ui/credentials?" + v.Encode()
		}
		if after != "" {
			d.Prev = "/ui/credentials?" + base.Encode()
		}
	} else {
		snap, err := c.snap.get(rq.ctx)
		if err != nil {
			return err
		}
		if err := c.viewed(rq, "console.list", "prefix="+d.Prefix); err != nil {
			return err
		}
		pg, _ := strconv.Atoi(q.Get("page"))
		pg = max(pg, 0)
		var rows []credRow
		rows, d.Matched = filterRows(snap, visibility(rq.p.Grants), d, pg*pageSize, pageSize)
		for _, r := range rows {
			lr := listRow{ID: r.ID, Type: r.Type, State: r.State, UpdatedAt: r.UpdatedAt, NextDueAt: r.NextDueAt}
			if r.Open != nil {
				lr.GraceEndsAt = r.Open.GraceEndsAt
			}
			d.Rows = append(d.Rows, lr)
		}
		if (pg+1)*pageSize < d.Matched {
			v := cloneValues(base)
			v.Set("page", strconv.Itoa(pg+1))
			d.Next = "/ui/credentials?" + v.Encode()
		}
		if pg > 0 {
			v := cloneValues(base)
			v.Set("page", strconv.Itoa(pg-1))
			d.Prev = "/ui/credentials?" + v.Encode()
		}
	}
	p := c.newPage(rq, "Credentials", "credentials", d)
	p.Live = true
	c.render(rq.w, http.StatusOK, "list", p)
	return nil
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// filterRows returns rows [skip, skip+n) of the snapshot that match d and
// are visible, in d.Sort order, and how many match in all.
func filterRows(snap *snapshot, visible func(string) bool, d *listData, skip, n int) ([]credRow, int) {
	var out []credRow
	matched := 0
	take := func(i int) {
		r := &snap.rows[i]
		if d.Prefix != "" && !strings.HasPrefix(r.ID, d.Prefix) {
			return
		}
		if d.Type != "" && r.Type != d.Type {
			return
		}
		if d.State != "" && string(r.State) != d.State {
			return
		}
		if !visible(r.ID) {
			return
		}
		if matched >= skip && len(out) < n {
			out = append(out, *r)
		}
		matched++
	}
	switch d.Sort {
	case "due":
		for _, i := range snap.byDue {
			take(i)
		}
		for i := range snap.rows {
			if snap.rows[i].NextDueAt == nil || snap.rows[i].Open != nil {
				take(i)
			}
		}
	case "age":
		for _, i := range snap.byAge {
			take(i)
		}
	default:
		for i := range snap.rows {
			take(i)
		}
	}
	return out, matched
}

// One credential.

type kv struct{ K, V string }

type step struct {
	At      time.Time
	Name    string
	Outcome string
	Detail  string
	Took    time.Duration
}

type timeline struct {
	Info  rotation.Info
	Steps []step
	Total time.Duration
}

type action struct {
	Name, Label, Query string
	Danger             bool
}

type credData struct {
	ID        string
	Cred      *credential.Credential
	Fields    []kv
	Secrets   []kv
	Revealed  bool
	Versions  []credential.VersionInfo
	Events    []credential.HistoryEntry
	Policy    *client.Policy
	Timeline  []timeline
	Open      *rotation.Info
	Doctor    *rotation.Report
	DoctorErr string
	Actions   []action
	CanRead   bool
	CanBack   bool // may roll back to a retained version
	Done      string
}

func (c *Console) credential(rq *req) error {
	return c.showCredential(rq, false)
}

// reveal is the credential page with the secret values: a POST, so that it
// needs the CSRF token and is never prefetched; the API audits the read.
func (c *Console) reveal(rq *req) error {
	return c.showCredential(rq, true)
}

func (c *Console) showCredential(rq *req, reveal bool) error {
	id := rq.r.PathValue("id")
	if err := credential.ValidateID(id); err != nil {
		return &Error{Status: http.StatusBadRequest, Message: err.Error()}
	}
	api := c.api(rq)
	d := &credData{ID: id, Revealed: reveal, CanRead: rq.can(acl.Read, id), Done: rq.r.URL.Query().Get("done")}
	// The credential first: it settles authorisation and existence.
	var err error
	if reveal {
		d.Cred, err = api.Get(rq.ctx, id, client.GetOptions{Reveal: true})
	} else {
		d.Cred, err = api.Get(rq.ctx, id, client.GetOptions{})
	}
	if err != nil {
		return apiError(err)
	}
	var (
		wg                       sync.WaitGroup
		hist                     *client.History
		rots                     []client.Rotation
		herr, perr, rerr, docErr error
	)
	wg.Add(3)
	go func() { defer wg.Done(); hist, herr = api.History(rq.ctx, id, 50) }()
	go func() { defer wg.Done(); d.Policy, perr = api.GetPolicy(rq.ctx, id) }()
	go func() { defer wg.Done(); rots, rerr = api.Rotations(rq.ctx, id, false, 10) }()
	if d.Cred.State != credential.StateActive || rq.r.URL.Query().Get("doctor") != "" {
		// The doctor tests versions against the target: run it when
		// something is wrong, or when asked.
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(rq.ctx, 20*time.Second)
			defer cancel()
			d.Doctor, docErr = api.Doctor(ctx, id)
		}()
	}
	wg.Wait()
	for _, e := range []error{herr, perr, rerr} {
		if e != nil {
			return apiError(e)
		}
	}
	if docErr != nil {
		d.DoctorErr = apiError(docErr).Error()
	}
	d.Versions, d.Events = hist.Versions, hist.Events
	for k, v := range d.Cred.Fields {
		d.Fields = append(d.Fields, kv{k, fmt.Sprint(v)})
	}
	slices.SortFunc(d.Fields, func(a, b kv) int { return strings.Compare(a.K, b.K) })
	for k, v := range d.Cred.Secret {
		val := "[REDACTED]"
		if reveal {
			val = v.Reveal()
		}
		d.Secrets = append(d.Secrets, kv{k, val})
	}
	slices.SortFunc(d.Secrets, func(a, b kv) int { return strings.Compare(a.K, b.K) })
	for i := range rots {
		if rots[i].Open && d.Open == nil {
			d.Open = &rots[i]
		}
		d.Timeline = append(d.Timeline, buildTimeline(rots[i], hist.Events))
	}
	d.Actions = actionsFor(rq, id, d.Cred.State, d.Open)
	d.CanBack = rq.can(acl.Rollback, id) && d.Open == nil
	p := c.newPage(rq, id, "credentials", d)
	if !reveal {
		p.Live, p.LivePrefix = true, id
		if moving(d.Cred.State) {
			p.Poll = 2
		}
	}
	c.render(rq.w, http.StatusOK, "credential", p)
	return nil
}

// buildTimeline lays out one journal row: its start, the history entries
// of its steps (with their own durations), and where it is now.
func buildTimeline(r rotation.Info, events []credential.HistoryEntry) timeline {
	t := timeline{Info: r}
	t.Steps = append(t.Steps, step{At: r.StartedAt, Name: r.Kind + " planned", Detail: fmt.Sprintf("v%d → v%d, strategy %s", r.FromVersion, r.ToVersion, r.Strategy)})
	var hs []credential.HistoryEntry
	for _, h := range events {
		if h.RotationID == r.RotationID {
			hs = append(hs, h)
		}
	}
	slices.SortStableFunc(hs, func(a, b credential.HistoryEntry) int { return a.At.Compare(b.At) })
	for _, h := range hs {
		s := step{At: h.At, Name: h.Action, Outcome: h.Outcome, Detail: h.Detail}
		if h.DurationMS > 0 {
			s.Detail = strings.TrimSpace(s.Detail + fmt.Sprintf(" (took %s)", time.Duration(h.DurationMS)*time.Millisecond))
		}
		t.Steps = append(t.Steps, s)
	}
	end := r.UpdatedAt
	last := step{At: r.UpdatedAt, Name: "at step " + r.Step}
	if r.FinishedAt != nil {
		end = *r.FinishedAt
		last = step{At: end, Name: "finished at step " + r.Step}
	}
	if r.LastError != "" {
		last.Outcome = r.ErrorClass
		last.Detail = r.LastError
	}
	t.Steps = append(t.Steps, last)
	for i := 1; i < len(t.Steps); i++ {
		if d := t.Steps[i].At.Sub(t.Steps[i-1].At); d > 0 {
			t.Steps[i].Took = d
		}
	}
	t.Total = max(end.Sub(r.StartedAt), 0)
	return t
}

// actionsFor lists the actions the principal may take in this state.
func actionsFor(rq *req, id string, state credential.State, open *rotation.Info) []action {
	var out []action
	add := func(perm acl.Permission, a action) {
		if rq.can(perm, id) {
			out = append(out, a)
		}
	}
	switch {
	case open == nil:
		add(acl.Rotate, action{Name: "rotate", Label: "Rotate now"})
	case state == credential.StateGrace:
		add(acl.Rollback, action{Name: "rollback", Label: "Roll back", Danger: true})
		add(acl.Rotate, action{Name: "extend", Label: "Extend grace"})
	case failing(state):
		add(acl.Rollback, action{Name: "abort", Label: "Roll back", Danger: true})
		add(acl.Rotate, action{Name: "retry", Label: "Retry"})
		add(acl.Rotate, action{Name: "resolve", Label: "Resolve…"})
	}
	return out
}
