package server

import (
	"bytes"
	"context"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/internal/jsonerr"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// Error codes of the API. They are stable: clients branch on them.
const (
	CodeInvalid              = "invalid"                // 400: bad parameter or body
	CodeBadBackup            = "bad_backup"             // 400: the backup file is corrupt, altered or for another key
	CodeUnauthenticated      = "unauthenticated"        // 401: missing, unknown, revoked or expired token
	CodeForbidden            = "forbidden"              // 403: the token has no grant for this
	CodeNotFound             = "not_found"              // 404
	CodeMethodNotAllowed     = "method_not_allowed"     // 405
	CodeConflict             = "conflict"               // 409: e.g. a credential of another type exists
	CodeRotationInProgress   = "rotation_in_progress"   // 409: another rotation is open
	CodeGraceEnded           = "grace_ended"            // 409: rollback without --to-version after grace
	CodeTooLarge             = "too_large"              // 413
	CodeUnsupportedMediaType = "unsupported_media_type" // 415
	CodeRateLimited          = "rate_limited"           // 429
	CodeAuditFailed          = "audit_failed"           // 500: the audit entry could not be written, so nothing was returned
	CodeInternal             = "internal"               // 500
	CodeRotationFailed       = "rotation_failed"        // 502: the target refused; see "rotation"
	CodeRetryScheduled       = "retry_scheduled"        // 503: a step failed and will be retried (Retry-After)
	CodeTimeout              = "timeout"                // 503: the request ran out of time
	CodeUnavailable          = "unavailable"            // 503: not ready
)

// apiError is an error with its HTTP status and stable code.
type apiError struct {
	status     int
	code       string
	msg        string
	rotation   *Rotation
	retryAfter time.Duration
	cause      error
	// graceEndsAt: a rotation refused during a grace period can run then.
	graceEndsAt *time.Time
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.cause }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func invalidf(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, CodeInvalid, format, args...)
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string    `json:"code"`
	Message   string    `json:"message"`
	RequestID string    `json:"request_id,omitempty"`
	Rotation  *Rotation `json:"rotation,omitempty"`
	// GraceEndsAt: a rotation refused during a grace period can run then
	// (Retry-After says the same in seconds).
	GraceEndsAt *time.Time `json:"grace_ends_at,omitempty"`
}

// classify maps an error from the Manager (or the server) to its API error.
// Messages of the Manager's errors never carry secret values.
func classify(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var re *rotation.RotationError
	var mbe *http.MaxBytesError
	var ig *rotation.InGraceError
	e := &apiError{msg: err.Error(), cause: err}
	switch {
	case errors.As(err, &ig):
		e.status, e.code = http.StatusConflict, CodeRotationInProgress
		e.graceEndsAt = &ig.GraceEndsAt
	case errors.As(err, &re):
		e.status, e.code = http.StatusBadGateway, CodeRotationFailed
	case errors.Is(err, rotation.ErrRetryScheduled):
		e.status, e.code = http.StatusServiceUnavailable, CodeRetryScheduled
	case errors.As(err, &mbe):
		e.status, e.code = http.StatusRequestEntityTooLarge, CodeTooLarge
		e.msg = fmt.Sprintf("request body larger than %d bytes", mbe.Limit)
	case errors.Is(err, store.ErrBusy):
		e.status, e.code, e.retryAfter = http.StatusServiceUnavailable, CodeUnavailable, time.Second
	case errors.Is(err, context.DeadlineExceeded):
		e.status, e.code = http.StatusServiceUnavailable, CodeTimeout
		e.msg = "the request ran out of time; for a rotation, check its state with GET /v1/rotations?id=...: it continues in the background"
	case errors.Is(err, context.Canceled):
		e.status, e.code = http.StatusServiceUnavailable, CodeTimeout
		e.msg = "the request was cancelled"
	case errors.Is(err, credential.ErrBadBackup), errors.Is(err, credential.ErrWrongKey):
		e.status, e.code = http.StatusBadRequest, CodeBadBackup
	case errors.Is(err, credential.ErrInvalid), errors.Is(err, acl.ErrInvalid), errors.Is(err, rotation.ErrBadRequest):
		e.status, e.code = http.StatusBadRequest, CodeInvalid
	case errors.Is(err, credential.ErrPermission):
		e.status, e.code = http.StatusForbidden, CodeForbidden
	case errors.Is(err, store.ErrNotFound):
		e.status, e.code = http.StatusNotFound, CodeNotFound
	case errors.Is(err, store.ErrRotationInProgress):
		e.status, e.code = http.StatusConflict, CodeRotationInProgress
	case errors.Is(err, rotation.ErrTargetUnreachable):
		e.status, e.code = http.StatusServiceUnavailable, CodeUnavailable
	case errors.Is(err, rotation.ErrGraceEnded):
		e.status, e.code = http.StatusConflict, CodeGraceEnded
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrFenced), errors.Is(err, rotation.ErrWrongStep):
		e.status, e.code = http.StatusConflict, CodeConflict
	case storeUnreachable(err):
		// A network peer (the store, most often, restarting or failing
		// over) is unreachable: an outage to retry, not a bug.
		e.status, e.code, e.retryAfter = http.StatusServiceUnavailable, CodeUnavailable, time.Second
		e.msg = err.Error() + "; retry shortly (GET /readyz says whether the store is reachable)"
	default:
		e.status, e.code = http.StatusInternalServerError, CodeInternal
	}
	return e
}

// decodeJSON reads one JSON object from the body into dst, refusing unknown
// fields, trailing data and bodies over limit. Its errors never quote the
// input, which may hold secret values.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, dst any, allowEmpty bool) error {
	// The body is JSON: a request that says it is something else (text/plain,
	// a form, a garbage type) is refused rather than guessed at. A request
	// without a Content-Type is read as JSON.
	if ct := r.Header.Get("Content-Type"); ct != "" && !isJSONType(ct) {
		return errorf(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "send the body as Content-Type: application/json (the request said %q)", mediaType(ct))
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body larger than %d bytes", limit)
		}
		return invalidf("reading the request body: %v", err)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		if allowEmpty {
			return nil
		}
		return invalidf("the request body is empty: send a JSON object")
	}
	if err := checkText(raw); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return invalidf("body: %s", jsonerr.Describe(err, raw, "the body must be a JSON object, not a JSON %s"))
	}
	if dec.More() {
		return invalidf("body: expected one JSON object, found more data after it")
	}
	return nil
}

// isJSONType reports whether a Content-Type header names JSON
// (application/json or application/<anything>+json, any parameters).
func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

// mediaType is the media type of a Content-Type header, bounded and
// printable, for an error message.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	if len(mt) > 64 {
		mt = mt[:64]
	}
	return strings.ToValidUTF8(mt, "?")
}

// checkText refuses a body that encoding/json would silently alter: bytes
// that are not UTF-8, and \u escapes of unpaired UTF-16 surrogates (both
// become U+FFFD). A secret is stored exactly as sent or not at all.
func checkText(raw []byte) error {
	if !utf8.Valid(raw) {
		return invalidf("body: not valid UTF-8 (at byte %d): JSON text, secrets included, must be UTF-8; encode binary secrets (base64, hex) first", invalidAt(raw))
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		if i+1 < len(raw) && raw[i+1] == 'u' {
			r, ok := hex4(raw, i+2)
			switch {
			case ok && r >= 0xD800 && r <= 0xDBFF:
				lo, ok2 := rune(0), false
				if i+7 < len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
					lo, ok2 = hex4(raw, i+8)
				}
				if !ok2 || lo < 0xDC00 || lo > 0xDFFF {
					return invalidf("body: \\u%04X at byte %d is half of a UTF-16 surrogate pair: JSON strings must be valid Unicode", r, i)
				}
				i += 11
				continue
			case ok && r >= 0xDC00 && r <= 0xDFFF:
				return invalidf("body: \\u%04X at byte %d is half of a UTF-16 surrogate pair: JSON strings must be valid Unicode", r, i)
			}
		}
		i++ // skip the escaped character
	}
	return nil
}

func invalidAt(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// hex4 reads four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// storeUnreachable reports an error that means the store (or another network
// peer) could not be reached or dropped the connection: PostgreSQL
// restarting, shutting down or failing over. Such a request may be retried.
func storeUnreachable(err error) bool {
	if errors.As(err, new(*net.OpError)) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, pgconn.ErrConnClosed) || pgconn.SafeToRetry(err) {
		return true
	}
	// 08: connection exception; 57P01-57P05: shutting down, starting up,
	// crashed (admin_shutdown, crash_shutdown, cannot_connect_now, ...);
	// 53300: too many connections (the server is overloaded).
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P") || pe.Code == "53300")
}
