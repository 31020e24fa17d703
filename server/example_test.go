package server_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// Serve the API over a Manager, with the scheduler, until interrupted.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	st, err := sqlite.Open(ctx, "creds.db")
	if err != nil {
		panic(err)
	}
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: "creds.key"})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	srv, err := server.New(server.Config{Manager: m, Logger: logger})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	go m.Engine().Run(ctx)
	if err := server.ListenAndServe(ctx, srv, server.ServeConfig{Addr: server.DefaultAddr, Logger: logger}); err != nil {
		panic(err)
	}
}
