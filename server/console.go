package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/server/console"
)

// newConsole builds the web console served at /ui/ (see package console).
// Its pages and actions are requests to this server's API, made in-process
// with the session's token, so the API's authorisation and audit apply.
func (s *Server) newConsole() (*console.Console, error) {
	return console.New(console.Config{
		Manager:      s.m,
		API:          s,
		Authenticate: s.consoleAuthenticate,
		Audit: func(ctx context.Context, e audit.Entry) error {
			return s.audit.Append(ctx, e)
		},
		Consumers: s.consoleConsumers,
		Logger:    s.log,
		Clock:     s.clock,
	})
}

// consoleAuthenticate resolves a token as the API does for a bearer token:
// failures are audited (within the failure budget) and the token's rate
// limit applies.
func (s *Server) consoleAuthenticate(r *http.Request, token string) (*console.Principal, error) {
	if strings.ContainsAny(token, " \r\n\t") {
		return nil, console.ErrBadToken
	}
	r2 := r.Clone(r.Context())
	r2.Header = r.Header.Clone()
	r2.Header.Set("Authorization", "Bearer "+token)
	tok, err := s.authenticate(r.Context(), r2, infoOf(r))
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			if ae.status == http.StatusUnauthorized {
				return nil, console.ErrBadToken
			}
			return nil, &console.Error{Status: ae.status, Message: ae.msg}
		}
		return nil, err
	}
	infoOf(r).token = tok.ID
	if !s.allow(tok.ID) {
		return nil, &console.Error{Status: http.StatusTooManyRequests, Message: fmt.Sprintf("token %s is over its rate limit of %v requests/s: slow down", tok.ID, s.cfg.RateLimit)}
	}
	return &console.Principal{ID: tok.ID, Actor: tok.Actor(), Grants: tok.Grants, ExpiresAt: tok.ExpiresAt}, nil
}

// consoleHandler names the console's requests in the access log and metrics.
func (s *Server) consoleHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		infoOf(r).route = "console"
		s.ui.ServeHTTP(w, r)
	})
}

// consoleConsumers lists the live consumers that hold an older version than
// current (or whose action after delivery failed), for the overview.
func (s *Server) consoleConsumers(ctx context.Context, visible func(string) bool) ([]console.ConsumerLag, error) {
	infos, err := s.cons.list(ctx, "", visible)
	if err != nil {
		return nil, err
	}
	var out []console.ConsumerLag
	for _, c := range infos {
		if !c.Live || (c.UpToDate && c.ActionOK) {
			continue
		}
		name := c.Name
		if name == "" {
			name = c.ConsumerID
		}
		if c.Host != "" {
			name += " on " + c.Host
		}
		if c.Kind != "" {
			name += " (" + c.Kind + ")"
		}
		if c.ActionError != "" {
			name += ": " + c.ActionError
		}
		out = append(out, console.ConsumerLag{CredentialID: c.CredentialID, Consumer: name, Version: c.Version, Current: c.CurrentVersion, LastSeen: c.LastSeen})
	}
	return out, nil
}
