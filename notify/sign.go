package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Request headers of every delivery.
const (
	// HeaderSignature is "t=<unix seconds>,v1=<hex HMAC-SHA256>": the MAC,
	// keyed with the subscription's signing secret, of the bytes
	// "<t>.<body>". Receivers recompute it and reject a request whose t is
	// too old, which stops replays of a captured request.
	HeaderSignature = "X-Nebula-Signature"
	// HeaderIdempotencyKey is the event ID: the same for every attempt and
	// every replay of one notification, so receivers can drop duplicates.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderEvent is the notification kind.
	HeaderEvent = "X-Nebula-Event"
	// HeaderDelivery is the delivery ID (one per subscription and event).
	HeaderDelivery = "X-Nebula-Delivery"
)

// DefaultTolerance is how old a signature's timestamp Verify accepts by default.
const DefaultTolerance = 5 * time.Minute

// Sign returns the HeaderSignature value for body signed at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a HeaderSignature value against body: the MAC must match
// (compared in constant time) and the timestamp must lie within tolerance of
// now (DefaultTolerance if tolerance is 0). Several v1= entries are allowed
// (one per secret while a receiver's secret changes); one match suffices.
// It returns an error wrapping ErrBadSignature otherwise.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var (
		ts   string
		sigs [][]byte
	)
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return fmt.Errorf("%w: header must be t=<unix>,v1=<hex>", ErrBadSignature)
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			ok = true
		}
	}
	if !ok {
		return fmt.Errorf("%w: MAC mismatch (wrong secret or altered body)", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp %d is outside the %s tolerance (replayed or clock skew)", ErrBadSignature, sec, tolerance)
	}
	return nil
}
