package main

import (
	"context"
	"strings"
	"time"

	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
)

// tokenOps manages tokens in the store (local) or through the server's
// /v1/tokens API (client mode), so `token` follows --addr like every command.
type tokenOps struct{ g *globals }

func (g *globals) tokens() tokenOps { return tokenOps{g} }

// apiClient is the client for --addr / $NEBULA_CREDENTIAL_ADDR, nil without one.
func (g *globals) apiClient(ctx context.Context) (*client.Client, error) {
	if g.serverAddr() == "" {
		return nil, nil
	}
	b, err := g.backend(ctx, openOpts{})
	if err != nil {
		return nil, err
	}
	return b.(remote).c, nil
}

func (t tokenOps) create(ctx context.Context, req server.TokenRequest) (*server.Token, secret.Value, error) {
	c, err := t.g.apiClient(ctx)
	if err != nil {
		return nil, secret.Value{}, err
	}
	if c != nil {
		grants := make([]string, 0, len(req.Grants))
		for _, gr := range req.Grants {
			grants = append(grants, gr.String())
		}
		tok, val, err := c.CreateToken(ctx, client.TokenRequest{Name: req.Name, Grants: grants, TTL: req.TTL})
		if err != nil {
			return nil, secret.Value{}, err
		}
		st, err := fromClientToken(tok)
		return st, val, err
	}
	m, err := t.g.open(ctx, openOpts{noRecover: true})
	if err != nil {
		return nil, secret.Value{}, err
	}
	defer m.Close()
	return server.CreateToken(ctx, m.Store(), req)
}

func (t tokenOps) list(ctx context.Context) ([]server.Token, error) {
	c, err := t.g.apiClient(ctx)
	if err != nil {
		return nil, err
	}
	if c != nil {
		toks, err := c.Tokens(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]server.Token, 0, len(toks))
		for i := range toks {
			st, err := fromClientToken(&toks[i])
			if err != nil {
				return nil, err
			}
			out = append(out, *st)
		}
		return out, nil
	}
	m, err := t.g.open(ctx, openOpts{noRecover: true})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return server.ListTokens(ctx, m.Store())
}

func (t tokenOps) revoke(ctx context.Context, id string) error {
	c, err := t.g.apiClient(ctx)
	if err != nil {
		return err
	}
	if c != nil {
		return c.RevokeToken(ctx, id)
	}
	m, err := t.g.open(ctx, openOpts{noRecover: true})
	if err != nil {
		return err
	}
	defer m.Close()
	return server.RevokeToken(ctx, m.Store(), id, time.Now())
}

// fromClientToken converts the API's token to the store's, grants parsed.
func fromClientToken(t *client.Token) (*server.Token, error) {
	out := &server.Token{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt}
	for _, s := range t.Grants {
		gr, err := acl.ParseGrant(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		out.Grants = append(out.Grants, gr)
	}
	return out, nil
}
