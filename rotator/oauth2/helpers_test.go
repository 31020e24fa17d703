package oauth2_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	xoauth2 "golang.org/x/oauth2"

	"github.com/nebula-credential/nebula-credential/rotator/oauth2"
)

func newRefresher(t *testing.T, cfg oauth2.RefresherConfig, tok *xoauth2.Token) *oauth2.Refresher {
	t.Helper()
	r, err := oauth2.NewRefresher(cfg, tok)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func httptestServer(t *testing.T, h http.HandlerFunc) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
