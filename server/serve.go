package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ServeConfig configures ListenAndServe. Zero values mean defaults.
type ServeConfig struct {
	// Addr to listen on (default 127.0.0.1:8270).
	Addr string
	// TLSCert and TLSKey, both set, serve HTTPS (TLS 1.2 or later).
	TLSCert, TLSKey string
	// ShutdownTimeout bounds how long in-flight requests may finish after
	// ctx is done (default 30s); the rest are then cut off.
	ShutdownTimeout time.Duration
	// ReadHeaderTimeout (default 10s) and IdleTimeout (default 2m) of the
	// connections. There is no overall write timeout: each route sets its own
	// deadline, and the watch stream has none.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// Logger for server errors; default discards.
	Logger *slog.Logger
	// OnListen, if set, is called with the bound address once listening
	// (useful with port 0).
	OnListen func(net.Addr)
}

// DefaultAddr is where serve listens by default: loopback only.
const DefaultAddr = "127.0.0.1:8270"

// DefaultRateLimit is each token's default sustained request rate, in
// requests per second (burst twice that). It is sized for applications that
// fetch their credential on every new connection (a pool refilling after a
// failover, a fleet of short-lived workers sharing one token) while still
// bounding one runaway client to a fraction of what the server can answer.
const DefaultRateLimit = 1000

// ListenAndServe serves h until ctx is done, then shuts down gracefully: it
// stops accepting, ends the watch streams, and lets in-flight requests finish
// within ShutdownTimeout. It returns nil after a graceful shutdown.
func ListenAndServe(ctx context.Context, h *Server, cfg ServeConfig) error {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return errors.New("server: give both a TLS certificate and key, or neither")
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	return Serve(ctx, ln, h, cfg)
}

// Serve is ListenAndServe on an existing listener, which it closes.
func Serve(ctx context.Context, ln net.Listener, h *Server, cfg ServeConfig) error {
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	srv.RegisterOnShutdown(h.Shutdown)
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	if cfg.OnListen != nil {
		cfg.OnListen(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		logger.Warn("shutdown timed out: closing the remaining connections", "err", err)
		srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: in-flight requests did not finish within %s", cfg.ShutdownTimeout)
	}
	return nil
}
