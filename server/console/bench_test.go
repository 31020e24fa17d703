package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// BenchmarkPages renders the overview and the list pages with n
// credentials, in server time (the handler, no network), and reports the
// cold first render (snapshot read) too. The goal: at most 200 ms with
// 10,000 credentials. Run:
//
//	go test ./server/console -run '^$' -bench Pages -benchtime 20x
func BenchmarkPages(b *testing.B) {
	for _, n := range []int{100, 10000} {
		e := newEnv(b)
		now := time.Now()
		err := e.m.Store().Update(context.Background(), func(tx store.Tx) error {
			for i := range n {
				due := now.Add(time.Duration(i) * time.Minute)
				if err := tx.PutCredential(context.Background(), &store.Credential{ID: fmt.Sprintf("prod/svc%05d/db", i), Type: "postgres", Settings: []byte("{}"), CreatedAt: now, UpdatedAt: now.Add(-time.Duration(i) * time.Second), NextDueAt: &due}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		br := e.browser()
		br.signIn(e.admin)
		cookies := br.c.Jar.Cookies(mustURL(b, e.ts.URL+"/ui/"))
		for _, path := range []string{"/ui/", "/ui/credentials", "/ui/credentials?sort=due&prefix=prod/", "/ui/credentials?sort=age&state=active&page=3"} {
			b.Run(fmt.Sprintf("n=%d%s", n, path), func(b *testing.B) {
				get := func() {
					req := httptest.NewRequest("GET", path, nil)
					for _, c := range cookies {
						req.AddCookie(c)
					}
					rec := httptest.NewRecorder()
					e.srv.ServeHTTP(rec, req)
					if rec.Code != http.StatusOK {
						b.Fatalf("%s: %d", path, rec.Code)
					}
				}
				for b.Loop() {
					get()
				}
			})
		}
	}
}
