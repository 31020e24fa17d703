// Package apikeytest is an in-process API-key service that behaves like real
// ones, for tests of the apikey rotator and of the engine driving it.
//
// Reach for NewService to start one on 127.0.0.1, Spec for the declarative
// description an operator would write for it, and Inject to make its next
// responses fail the way real services fail (rate limits with Retry-After,
// 503s, responses lost after the work was done). It is a real implementation
// (keys live in memory, calls authenticate with bearer keys), not a mock: it
// can be shared by a parent test process and the children it re-executes,
// since the children only talk to it over HTTP.
package apikeytest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Routes of the service, as used in Fault.Route and Service.Count.
const (
	RouteMe     = "GET /v1/me"
	RouteList   = "GET /v1/keys"
	RouteCreate = "POST /v1/keys"
	RouteRevoke = "DELETE /v1/keys/{id}"
)

// Service is the key service: keys are created, listed and revoked over HTTP
// with bearer authentication; creates honour Idempotency-Key (a replay returns
// the stored response, a reuse with other parameters is refused); an account
// holds a bounded number of keys; revocation takes effect at once. It is safe
// for concurrent use.
type Service struct {
	srv *httptest.Server

	mu      sync.Mutex
	keys    map[string]*Key // live keys by ID
	idem    map[string]idemEntry
	faults  []Fault
	next    int
	maxKeys int
	creates int // creates executed (replays excluded)
	hits    map[string]int
	// echo makes error responses quote the request's Authorization header and
	// body, as careless APIs do.
	echo bool
	// createLimit, when positive, allows that many creates per one-second
	// window; more get 429 with Retry-After until the window ends.
	createLimit  int
	windowStart  time.Time
	windowCreate int
}

// Key is one key of the account.
type Key struct {
	ID, Name, Secret, Scope string
	Created                 time.Time
}

type idemEntry struct {
	hash   string
	status int
	body   []byte
}

// Fault is returned instead of the real response of the next request that
// matches Route.
type Fault struct {
	Route      string // e.g. RouteCreate; "" matches any request
	Status     int
	RetryAfter string // the Retry-After header, if set
	// AfterCommit runs the request first and then loses its response.
	AfterCommit bool
}

// NewService starts a service on 127.0.0.1; it stops when t ends.
func NewService(t testing.TB) *Service {
	s := &Service{keys: map[string]*Key{}, idem: map[string]idemEntry{}, hits: map[string]int{}, maxKeys: 10}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the service's base URL.
func (s *Service) URL() string { return s.srv.URL }

// Spec returns the declarative description of this service (see Spec).
func (s *Service) Spec() map[string]any { return Spec(s.URL()) }

// Spec describes a service at base declaratively, as an operator would: create,
// verify, revoke and list calls, with keys this rotator created marked by the
// name prefix "nebula:<credential id>:". Each call returns a fresh map.
func Spec(base string) map[string]any {
	auth := map[string]string{"Authorization": "Bearer {{auth_key}}"}
	return map[string]any{
		"create": map[string]any{
			"method": "POST", "url": base + "/v1/keys", "headers": auth,
			"body":        `{"name":"nebula:{{credential_id}}:{{rotation_id}}"}`,
			"key_pointer": "/secret", "key_id_pointer": "/id", "expected_status": 201,
		},
		"verify": map[string]any{"url": base + "/v1/me", "headers": map[string]string{"Authorization": "Bearer {{key}}"}, "expected_status": 200},
		"revoke": map[string]any{"method": "DELETE", "url": base + "/v1/keys/{{key_id}}", "headers": map[string]string{"Authorization": "Bearer {{auth_key}}"}},
		"list": map[string]any{
			"url": base + "/v1/keys", "headers": map[string]string{"Authorization": "Bearer {{auth_key}}"},
			"items_pointer": "/data", "id_pointer": "/id", "marker_pointer": "/name", "marker_prefix": "nebula:{{credential_id}}:",
		},
	}
}

// Mint creates a key directly, as a person would in the provider's console.
// Scope "" means "admin" (may create and revoke keys); any other scope may
// only call GET /v1/me.
func (s *Service) Mint(name, scope string) *Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := *s.newKeyLocked(name, scope)
	return &k
}

func (s *Service) newKeyLocked(name, scope string) *Key {
	s.next++
	b := make([]byte, 18)
	rand.Read(b)
	if scope == "" {
		scope = "admin"
	}
	k := &Key{ID: fmt.Sprintf("key_%04d", s.next), Name: name, Secret: "sk_live_" + hex.EncodeToString(b), Scope: scope, Created: time.Now()}
	s.keys[k.ID] = k
	return k
}

// Inject queues faults; each is used once, by the first request it matches.
func (s *Service) Inject(f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f...)
}

// Live returns a copy of the live keys by ID.
func (s *Service) Live() map[string]Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Key, len(s.keys))
	for id, k := range s.keys {
		out[id] = *k
	}
	return out
}

// Authenticates reports whether key is live (what GET /v1/me would answer),
// without counting as a request.
func (s *Service) Authenticates(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.keys {
		if k.Secret == key {
			return true
		}
	}
	return false
}

// CreateCount is how many creates were executed (replays excluded).
func (s *Service) CreateCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creates
}

// Count is how many requests reached route (faults included).
func (s *Service) Count(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[route]
}

// SetEcho makes error responses quote the request's Authorization header, body
// and URL, as careless APIs do.
func (s *Service) SetEcho(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.echo = on
}

// SetMaxKeys bounds the number of live keys (default 10); a create beyond it
// is refused with 400.
func (s *Service) SetMaxKeys(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxKeys = n
}

// SetCreateLimit allows n creates per one-second window (0: unlimited); more
// get 429 with Retry-After until the window ends.
func (s *Service) SetCreateLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.createLimit = n
}

func (s *Service) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	route := r.Method + " " + r.URL.Path
	if strings.HasPrefix(r.URL.Path, "/v1/keys/") {
		route = r.Method + " /v1/keys/{id}"
	}
	s.mu.Lock()
	s.hits[route]++
	var f *Fault
	for i, q := range s.faults {
		if q.Route == "" || q.Route == route {
			f = &q
			s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			break
		}
	}
	echo := s.echo
	s.mu.Unlock()
	if f != nil && !f.AfterCommit {
		writeFault(w, *f)
		return
	}
	rec := httptest.NewRecorder()
	s.route(rec, r, route, body, echo)
	if f != nil {
		writeFault(w, *f) // the work is done, the response is lost
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func writeFault(w http.ResponseWriter, f Fault) {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.Status)
	fmt.Fprintf(w, `{"error":%q}`, http.StatusText(f.Status))
}

func fail(w http.ResponseWriter, r *http.Request, body []byte, echo bool, status int, msg string) {
	out := map[string]any{"error": msg}
	if echo {
		out["request"] = map[string]string{"authorization": r.Header.Get("Authorization"), "body": string(body), "url": r.URL.String()}
	}
	writeJSON(w, status, out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// callerLocked returns the live key presenting r's bearer token.
func (s *Service) callerLocked(r *http.Request) *Key {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return nil
	}
	for _, k := range s.keys {
		if k.Secret == tok {
			return k
		}
	}
	return nil
}

func (s *Service) route(w http.ResponseWriter, r *http.Request, route string, body []byte, echo bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	me := s.callerLocked(r)
	if me == nil {
		fail(w, r, body, echo, http.StatusUnauthorized, "invalid api key")
		return
	}
	switch route {
	case RouteMe:
		writeJSON(w, http.StatusOK, map[string]string{"id": me.ID, "name": me.Name})
	case RouteList:
		var data []map[string]string
		for _, k := range s.keys {
			data = append(data, map[string]string{"id": k.ID, "name": k.Name, "created_at": k.Created.Format(time.RFC3339), "last4": k.Secret[len(k.Secret)-4:]})
		}
		writeJSON(w, http.StatusOK, map[string]any{"data": data})
	case RouteCreate:
		if s.createLimit > 0 {
			now := time.Now()
			if now.Sub(s.windowStart) >= time.Second {
				s.windowStart, s.windowCreate = now, 0
			}
			if s.windowCreate >= s.createLimit {
				wait := s.windowStart.Add(time.Second).Sub(now)
				w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
				fail(w, r, body, echo, http.StatusTooManyRequests, "rate limit exceeded")
				return
			}
			s.windowCreate++
		}
		if me.Scope != "admin" {
			fail(w, r, body, echo, http.StatusForbidden, "this key lacks the keys:write scope")
			return
		}
		sum := sha256.Sum256(body)
		hash := hex.EncodeToString(sum[:])
		ik := r.Header.Get("Idempotency-Key")
		if e, ok := s.idem[ik]; ik != "" && ok {
			if e.hash != hash {
				fail(w, r, body, echo, http.StatusUnprocessableEntity, "idempotency key reused with different parameters")
				return
			}
			// Like Stripe: the stored response is replayed as it was, even if
			// the key it names has been revoked since.
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(e.status)
			w.Write(e.body)
			return
		}
		var in struct{ Name, Scope string }
		if err := json.Unmarshal(body, &in); err != nil || in.Name == "" {
			fail(w, r, body, echo, http.StatusBadRequest, "name is required")
			return
		}
		if len(s.keys) >= s.maxKeys {
			fail(w, r, body, echo, http.StatusBadRequest, "key limit reached: revoke a key first")
			return
		}
		k := s.newKeyLocked(in.Name, in.Scope)
		s.creates++
		out, _ := json.Marshal(map[string]any{"id": k.ID, "secret": k.Secret, "name": k.Name, "created_at": k.Created.Format(time.RFC3339)})
		if ik != "" {
			s.idem[ik] = idemEntry{hash: hash, status: http.StatusCreated, body: out}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write(out)
	case RouteRevoke:
		if me.Scope != "admin" {
			fail(w, r, body, echo, http.StatusForbidden, "this key lacks the keys:write scope")
			return
		}
		id := strings.TrimPrefix(r.URL.Path, "/v1/keys/")
		if _, ok := s.keys[id]; !ok {
			fail(w, r, body, echo, http.StatusNotFound, "no such key")
			return
		}
		delete(s.keys, id)
		w.WriteHeader(http.StatusNoContent)
	default:
		fail(w, r, body, echo, http.StatusNotFound, "no such route")
	}
}
