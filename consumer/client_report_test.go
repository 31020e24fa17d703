package consumer_test

import (
	"net/http/httptest"
	"path/filepath"
	"testing"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// A finished drain reported through the HTTP source reaches the server as
// consumer evidence: the pool is on the current version.
func TestClientSourceReportsDrain(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "c.key"), Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv, err := server.New(server.Config{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()
	_, tok, err := server.CreateToken(ctx, st, server.TokenRequest{Name: "app", Grants: []acl.Grant{{Permission: acl.Read, Prefix: "app/"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ts.URL, tok.Reveal(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"first-secret", "second-secret"} {
		if _, err := m.Put(ctx, "app/db", credential.PutRequest{Type: credential.Generic, Secret: secret.Map{"password": secret.New(v)}}); err != nil {
			t.Fatal(err)
		}
	}
	src := consumer.FromClient(c)
	src.SetConsumer("orders-pool", "orders")
	// Current again: nothing to report.
	if err := src.ReportUnused(ctx, "app/db", 2); err != nil {
		t.Fatal(err)
	}
	if cs, err := c.Consumers(ctx, "app/db"); err != nil || len(cs) != 0 {
		t.Fatalf("a drain of the current version was reported: %v %+v", err, cs)
	}
	if err := src.ReportUnused(ctx, "app/db", 1); err != nil {
		t.Fatal(err)
	}
	cs, err := c.Consumers(ctx, "app/db")
	if err != nil || len(cs) != 1 {
		t.Fatalf("consumers: %v %+v", err, cs)
	}
	if got := cs[0]; got.ConsumerID != "orders-pool" || got.Kind != "pool" || got.Version != 2 || !got.UpToDate || !got.Live || !got.ActionOK {
		t.Fatalf("consumer: %+v", got)
	}
}
