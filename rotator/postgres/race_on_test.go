//go:build race

package postgres_test

// raceEnabled: the race detector slows PBKDF2 (every SCRAM login) about
// tenfold, so the load test rotates fewer times to stay within ~20 s.
const raceEnabled = true
