package server

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
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

// BenchmarkPutGetPairs is the embedded store's key-value path through the
// server's handler, without the network: each op is a PUT of a generic
// credential (one of 1,000 keys, durable) followed by a revealed GET of it,
// from n concurrent clients. Concurrent PUTs share one SQLite commit (group
// commit in store/sqlite); pairs/s is the figure of issue 15.
//
//	go test -run '^$' -bench PutGetPairs -benchtime 2000x -count 3 ./server
func BenchmarkPutGetPairs(b *testing.B) {
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			e := newEnv(b)
			var wg sync.WaitGroup
			var next atomic.Int64
			b.ResetTimer()
			start := time.Now()
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						key := fmt.Sprintf("/v1/credentials/kv/key%03d", i%1000)
						rec := httptest.NewRecorder()
						req := httptest.NewRequest("PUT", key, strings.NewReader(fmt.Sprintf(`{"type":"generic","secret":{"value":"v-%d"}}`, i)))
						req.Header.Set("Authorization", "Bearer "+e.admin)
						e.srv.ServeHTTP(rec, req)
						if rec.Code != 200 {
							b.Error(rec.Code, rec.Body)
							return
						}
						rec = httptest.NewRecorder()
						req = httptest.NewRequest("GET", key+"?reveal=true", nil)
						req.Header.Set("Authorization", "Bearer "+e.admin)
						e.srv.ServeHTTP(rec, req)
						if rec.Code != 200 {
							b.Error(rec.Code, rec.Body)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pairs/s")
			if gs, ok := e.m.Store().(interface{ GroupStats() (int64, int64) }); ok {
				if c, u := gs.GroupStats(); c > 0 {
					b.ReportMetric(float64(u)/float64(c), "updates/commit")
				}
			}
		})
	}
}
