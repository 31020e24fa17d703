package main

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(removeBuilt{m}, map[string]func(){
		"nebula-credential": func() { os.Exit(run(os.Args[1:])) },
	})
}

// TestScripts runs the CLI contract in testdata/script/*.txt against the real
// main, each script in its own directory with its own store.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("NEBULA_CREDENTIAL_STORE", "")
			env.Setenv("NEBULA_CREDENTIAL_KEY_FILE", "")
			env.Setenv("NEBULA_CREDENTIAL_PASSPHRASE", "")
			env.Setenv("NEBULA_CREDENTIAL_ADDR", "")
			env.Setenv("NEBULA_CREDENTIAL_TOKEN", "")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// envfile NAME FILE: set NAME to the trimmed content of FILE.
			"envfile": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: envfile NAME FILE")
				}
				ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile(args[1])))
			},
			// ec CODE cmd args...: run cmd and require exit code CODE.
			"ec": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) < 2 {
					ts.Fatalf("usage: ec CODE command [args...]")
				}
				want, err := strconv.Atoi(args[0])
				ts.Check(err)
				got := 0
				if err := ts.Exec(args[1], args[2:]...); err != nil {
					var ee *exec.ExitError
					if !errors.As(err, &ee) {
						ts.Fatalf("exec: %v", err)
					}
					got = ee.ExitCode()
				}
				if (got == want) == neg {
					ts.Fatalf("exit code %d, want %d", got, want)
				}
			},
		},
	})
}
