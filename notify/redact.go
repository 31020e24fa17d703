package notify

import (
	"net/url"
	"strings"
)

// RedactURL returns raw with what may be a credential replaced by "xxxxx":
// the user information, every query value, every path segment after the
// first that is 12 characters or longer (Slack, Teams and similar services
// put the secret in the path), and a first segment that long holding a digit
// (a topic name such as ntfy's, which is the secret). What remains
// identifies the receiver. An unparseable URL is redacted whole.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "xxxxx"
	}
	if u.User != nil {
		u.User = url.User("xxxxx")
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"xxxxx"}
		}
		u.RawQuery = q.Encode()
	}
	u.Fragment, u.RawFragment = "", ""
	segs := strings.Split(u.EscapedPath(), "/")
	seen := 0
	for i, s := range segs {
		if s == "" {
			continue
		}
		seen++
		if len(s) >= 12 && (seen > 1 || strings.ContainsAny(s, "0123456789")) {
			segs[i] = "xxxxx"
		}
	}
	u.RawPath = ""
	p, _ := url.PathUnescape(strings.Join(segs, "/"))
	u.Path = p
	return u.String()
}
