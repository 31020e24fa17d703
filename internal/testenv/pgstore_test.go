package testenv

import "testing"

func TestWithPoolMaxConns(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u@h:5432/db?sslmode=disable":                   "postgres://u@h:5432/db?pool_max_conns=6&sslmode=disable",
		"postgres://u@h:5432/db?pool_max_conns=16&sslmode=disable": "postgres://u@h:5432/db?pool_max_conns=6&sslmode=disable",
		"postgres://u@h/db": "postgres://u@h/db?pool_max_conns=6",
		"host=h dbname=db":  "host=h dbname=db pool_max_conns=6",
	} {
		if got := WithPoolMaxConns(in, 6); got != want {
			t.Errorf("WithPoolMaxConns(%q) = %q, want %q", in, got, want)
		}
	}
}
