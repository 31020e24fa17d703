package server

import (
	"context"
	"fmt"
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
