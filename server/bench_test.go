package server

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
)

// BenchmarkAuditAppend measures the server's group-committed audit appends
// at several concurrencies (each op is one entry, durable when it returns).
func BenchmarkAuditAppend(b *testing.B) {
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			var wg sync.WaitGroup
			per := b.N/n + 1
			b.ResetTimer()
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						if err := e.srv.audit.Append(ctx, audit.Entry{At: time.Now(), Actor: "token:tok_x", Action: "credential.get", CredentialID: "bench/db/orders", Outcome: "ok", RequestID: "0123456789abcdef", Detail: "reveal"}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// BenchmarkGetCredential is the server's handler for a revealed GET, without
// the network: token, grants, store read, decryption, JSON, audit commit.
func BenchmarkGetCredential(b *testing.B) {
	e := newEnv(b)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("PUT", "/v1/credentials/bench/db", strings.NewReader(`{"type":"generic","secret":{"password":"p"}}`))
	req.Header.Set("Authorization", "Bearer "+e.admin)
	e.srv.ServeHTTP(rec, req)
	if rec.Code != 200 {
		b.Fatal(rec.Body)
	}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/v1/credentials/bench/db?reveal=true", nil)
			req.Header.Set("Authorization", "Bearer "+e.admin)
			e.srv.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatal(rec.Body)
			}
		}
	})
}
