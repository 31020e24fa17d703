package notify_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/notify"
)

func TestSignVerify(t *testing.T) {
	key := []byte("whsec_test")
	body := []byte(`{"kind":"rotation_committed"}`)
	at := time.Unix(1_700_000_000, 0)
	h := notify.Sign(key, at, body)
	if err := notify.Verify(key, h, body, at.Add(time.Minute), 0); err != nil {
		t.Fatalf("valid signature: %v", err)
	}
	for name, tc := range map[string]struct {
		key    []byte
		header string
		body   []byte
		now    time.Time
	}{
		"tampered body":  {key, h, []byte(`{"kind":"rotation_failed"}`), at},
		"wrong secret":   {[]byte("other"), h, body, at},
		"old timestamp":  {key, h, body, at.Add(notify.DefaultTolerance + time.Second)},
		"future":         {key, h, body, at.Add(-notify.DefaultTolerance - time.Second)},
		"replayed t":     {key, notify.Sign(key, at, body)[:len("t=1700000000")] + "1" + h[len("t=1700000000"):], body, at},
		"no signature":   {key, "", body, at},
		"garbage":        {key, "t=x,v1=zz", body, at},
		"signature only": {key, h[len("t=1700000000,"):], body, at},
	} {
		if err := notify.Verify(tc.key, tc.header, tc.body, tc.now, 0); !errors.Is(err, notify.ErrBadSignature) {
			t.Errorf("%s: Verify = %v, want ErrBadSignature", name, err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://example.com/hooks/notify":                                    "https://example.com/hooks/notify",
		"https://user:pw@example.com/x":                                       "https://xxxxx@example.com/x",
		"https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX": "https://hooks.slack.com/services/T000/B000/xxxxx",
		"https://example.com/x?token=abc&x=1":                                 "https://example.com/x?token=xxxxx&x=xxxxx",
		"not a url":                                                           "xxxxx",
		"https://ntfy.sh/alerts7f3k2q9zx1":                                    "https://ntfy.sh/xxxxx",
		"https://example.com/notifications/in":                                "https://example.com/notifications/in",
	} {
		if got := notify.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// ExampleVerify shows a receiver checking a delivery.
func ExampleVerify() {
	secret := []byte("whsec_...") // shown once by `nebula-credential notify add`
	body := []byte(`{"schema":"nebula-credential.notification.v1","id":"evt_1","kind":"rotation_committed"}`)
	now := time.Now()
	header := notify.Sign(secret, now, body) // what the dispatcher sends in X-Nebula-Signature

	// In an http.Handler: body, _ := io.ReadAll(r.Body); header := r.Header.Get(notify.HeaderSignature)
	if err := notify.Verify(secret, header, body, time.Now(), 5*time.Minute); err != nil {
		fmt.Println("reject:", err)
		return
	}
	fmt.Println("verified")
	// Output: verified
}
