package apikey_test

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

// keyService is an in-process API-key service that behaves like real ones:
// keys are created, listed and revoked over HTTP with bearer authentication;
// creates honour Idempotency-Key (a replay returns the stored response, a reuse
// with other parameters is refused); an account holds a bounded number of keys;
// revocation takes effect at once. Faults can be queued: rate limits with
// Retry-After, 503s, and responses lost after the work was done.
type keyService struct {
	srv *httptest.Server

	mu      sync.Mutex
	keys    map[string]*svcKey // live keys by ID
	idem    map[string]idemEntry
	faults  []fault
	next    int
	maxKeys int
	creates int // creates executed (replays excluded)
	hits    map[string]int
	// echo makes error responses quote the request's Authorization header and
	// body, as careless APIs do, to prove the rotator redacts them.
	echo bool
	// createLimit, when positive, allows that many creates per one-second
	// window; more get 429 with Retry-After until the window ends.
	createLimit  int
	windowStart  time.Time
	windowCreate int
}

type svcKey struct {
	ID, Name, Secret, Scope string
	Created                 time.Time
}

type idemEntry struct {
	hash   string
	status int
	body   []byte
}

// fault is returned instead of the real response of the next matching request.
type fault struct {
	route      string // "POST /v1/keys"; "" matches any
	status     int
	retryAfter string
	// afterCommit runs the request first and then loses its response.
	afterCommit bool
}

func newKeyService(t *testing.T) *keyService {
	s := &keyService{keys: map[string]*svcKey{}, idem: map[string]idemEntry{}, hits: map[string]int{}, maxKeys: 10}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *keyService) URL() string { return s.srv.URL }

// mint creates a key directly, as a person would in the provider's console.
func (s *keyService) mint(name, scope string) *svcKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newKeyLocked(name, scope)
}

func (s *keyService) newKeyLocked(name, scope string) *svcKey {
	s.next++
	b := make([]byte, 18)
	rand.Read(b)
	if scope == "" {
		scope = "admin"
	}
	k := &svcKey{ID: fmt.Sprintf("key_%04d", s.next), Name: name, Secret: "sk_live_" + hex.EncodeToString(b), Scope: scope, Created: time.Now()}
	s.keys[k.ID] = k
	return k
}

func (s *keyService) inject(f ...fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f...)
}

func (s *keyService) live() map[string]*svcKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*svcKey{}
	for id, k := range s.keys {
		out[id] = k
	}
	return out
}

func (s *keyService) set(f func(s *keyService)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *keyService) createCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creates
}

func (s *keyService) count(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[route]
}

func (s *keyService) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	route := r.Method + " " + r.URL.Path
	if strings.HasPrefix(r.URL.Path, "/v1/keys/") {
		route = r.Method + " /v1/keys/{id}"
	}
	s.mu.Lock()
	s.hits[route]++
	var f *fault
	for i, q := range s.faults {
		if q.route == "" || q.route == route {
			f = &q
			s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			break
		}
	}
	echo := s.echo
	s.mu.Unlock()
	if f != nil && !f.afterCommit {
		s.writeFault(w, *f)
		return
	}
	rec := httptest.NewRecorder()
	s.route(rec, r, route, body, echo)
	if f != nil {
		s.writeFault(w, *f) // the work is done, the response is lost
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func (s *keyService) writeFault(w http.ResponseWriter, f fault) {
	if f.retryAfter != "" {
		w.Header().Set("Retry-After", f.retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.status)
	fmt.Fprintf(w, `{"error":%q}`, http.StatusText(f.status))
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

// caller returns the live key presenting r's bearer token.
func (s *keyService) caller(r *http.Request) *svcKey {
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

func (s *keyService) route(w http.ResponseWriter, r *http.Request, route string, body []byte, echo bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	me := s.caller(r)
	if me == nil {
		fail(w, r, body, echo, http.StatusUnauthorized, "invalid api key")
		return
	}
	switch route {
	case "GET /v1/me":
		writeJSON(w, http.StatusOK, map[string]string{"id": me.ID, "name": me.Name})
	case "GET /v1/keys":
		var data []map[string]string
		for _, k := range s.keys {
			data = append(data, map[string]string{"id": k.ID, "name": k.Name, "created_at": k.Created.Format(time.RFC3339), "last4": k.Secret[len(k.Secret)-4:]})
		}
		writeJSON(w, http.StatusOK, map[string]any{"data": data})
	case "POST /v1/keys":
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
	case "DELETE /v1/keys/{id}":
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
