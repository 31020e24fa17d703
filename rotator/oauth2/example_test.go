package oauth2_test

import (
	"context"

	xoauth2 "golang.org/x/oauth2"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/oauth2"
)

// A consumer calling an API with the credential's access token. Concurrent
// requests share one refresh; every refreshed token is saved before use.
func ExampleNewRefresher() {
	var cred rotator.Credential // from the store or the client library
	cfg, tok, err := oauth2.ClientConfig(cred)
	if err != nil {
		return
	}
	src, err := oauth2.NewRefresher(oauth2.RefresherConfig{
		OAuth2: cfg,
		Persist: func(ctx context.Context, t *xoauth2.Token) error {
			return nil // store t.AccessToken and t.RefreshToken as a new version
		},
	}, tok)
	if err != nil {
		return
	}
	client := xoauth2.NewClient(context.Background(), src)
	_, _ = client.Get("https://api.example.com/v1/me")
}
