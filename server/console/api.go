package console

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/nebula-credential/nebula-credential/client"
)

// inproc sends API requests to the handler in this process, as the outer
// request's client: same remote address, same request ID (so the API's
// audit entries name the console request that caused them).
type inproc struct {
	h         http.Handler
	remote    string
	requestID string
}

func (t *inproc) RoundTrip(r *http.Request) (*http.Response, error) {
	r.RemoteAddr = t.remote
	if r.Body == nil {
		// A server request always has a body; a client request without
		// one (POST /test, DELETE) has none until this.
		r.Body = http.NoBody
	}
	if t.requestID != "" {
		r.Header.Set("X-Request-ID", t.requestID)
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// api is a client of the API with the session's token.
func (c *Console) api(rq *req) *client.Client {
	tr := &inproc{h: c.cfg.API, remote: rq.r.RemoteAddr, requestID: rq.w.Header().Get("X-Request-ID")}
	cl, err := client.New("http://console.invalid", rq.sess.token, &client.Options{
		HTTPClient: &http.Client{Transport: tr},
		UserAgent:  "nebula-credential-console",
		Retries:    -1,
	})
	if err != nil {
		panic(err) // the address is constant and the token was accepted at sign-in
	}
	return cl
}

// apiError turns an API error into the console's.
func apiError(err error) error {
	var ce *client.Error
	if errors.As(err, &ce) {
		return &Error{Status: ce.StatusCode, Message: ce.Message}
	}
	return err
}

// live streams the API's watch stream (server-sent events) to the page, as
// the session's token: the API filters events by the token's read grants.
func (c *Console) live(rq *req) error {
	r2 := rq.r.Clone(rq.ctx)
	r2.URL = &url.URL{Path: "/v1/watch"}
	q := url.Values{}
	if p := rq.r.URL.Query().Get("prefix"); p != "" {
		q.Set("prefix", p)
	}
	r2.URL.RawQuery = q.Encode()
	r2.RequestURI = ""
	r2.Header = http.Header{}
	r2.Header.Set("Authorization", "Bearer "+rq.sess.token)
	if v := rq.r.Header.Get("Last-Event-ID"); v != "" && !strings.ContainsAny(v, "\r\n") {
		r2.Header.Set("Last-Event-ID", v)
	}
	if id := rq.w.Header().Get("X-Request-ID"); id != "" {
		r2.Header.Set("X-Request-ID", id)
	}
	// The API sets its own headers; the console's page headers do not apply.
	rq.w.Header().Del("Content-Security-Policy")
	c.cfg.API.ServeHTTP(rq.w, r2)
	return nil
}
