package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/keyring"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// Exit codes.
const (
	exitOK         = 0
	exitFailed     = 1
	exitUsage      = 2
	exitNotFound   = 3
	exitPermission = 4
)

// usageError marks errors in how the command was called.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitError carries an exit code with no further message (doctor: unhealthy).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// globals are the persistent flags.
type globals struct {
	addr    string
	store   string
	keyFile string
	json    bool
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
}

func run(args []string) int {
	return runWith(args, os.Stdin, os.Stdout, os.Stderr)
}

func runWith(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = audit.WithActor(ctx, cliActor(), "")
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	err = g.unreachableHint(err)
	code := exitCode(err)
	fmt.Fprintf(stderr, "nebula-credential: %s\n", oneLine(err))
	if code == exitUsage && !isUsage(err) && !errors.Is(err, credential.ErrInvalid) {
		// flag errors from cobra
		fmt.Fprintln(stderr, "Run 'nebula-credential --help' for usage.")
	}
	return code
}

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

func exitCode(err error) int {
	var u usageError
	switch {
	case errors.As(err, &u), errors.Is(err, credential.ErrInvalid):
		return exitUsage
	case errors.Is(err, store.ErrNotFound):
		return exitNotFound
	case errors.Is(err, keyring.ErrWrongKey), errors.Is(err, keyring.ErrKeyFileMode), errors.Is(err, keyring.ErrKeyMissing), errors.Is(err, credential.ErrPermission), errors.Is(err, os.ErrPermission):
		return exitPermission
	case strings.HasPrefix(err.Error(), "unknown command"), strings.HasPrefix(err.Error(), "unknown flag"),
		strings.HasPrefix(err.Error(), "unknown shorthand flag"), strings.Contains(err.Error(), "flag needs an argument"),
		strings.Contains(err.Error(), "invalid argument"), strings.HasPrefix(err.Error(), "accepts "), strings.HasPrefix(err.Error(), "requires "):
		// cobra's own usage errors carry no type to branch on.
		return exitUsage
	}
	return exitFailed
}

func cliActor() string {
	if u, err := user.Current(); err == nil {
		return "cli:" + u.Username
	}
	return "cli"
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "nebula-credential",
		Short: "Encrypted, versioned credentials with safe, zero-downtime rotation",
		Long: `nebula-credential stores credentials encrypted and versioned, and rotates them
against the systems that issue them without downtime.

The store is --store, else $NEBULA_CREDENTIAL_STORE, else ./nebula-credential.db
(a postgres:// URL selects PostgreSQL). The key file is --key-file, else
$NEBULA_CREDENTIAL_KEY_FILE, else beside the store; $NEBULA_CREDENTIAL_PASSPHRASE
selects passphrase mode.

With --addr or $NEBULA_CREDENTIAL_ADDR (and $NEBULA_CREDENTIAL_TOKEN) every
command talks to a server instead. Several instances of one deployment are a
comma-separated list: the first that answers is used, reads move on to the
next when one fails, and a write is never sent twice.

Exit codes: 0 success, 1 operation failed, 2 usage error, 3 not found,
4 permission or key error.`,
		Example: `  nebula-credential init
  echo '{"fields":{"host":"db"},"secret":{"password":"s3cret"}}' | nebula-credential put prod/db --type postgres --json
  nebula-credential get prod/db --json
  nebula-credential rotate prod/db
  NEBULA_CREDENTIAL_ADDR=https://a:8270,https://b:8270 NEBULA_CREDENTIAL_TOKEN=$(cat admin.token) nebula-credential get prod/db`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.addr, "addr", "", "talk to a server at this address instead of opening the store; several instances comma-separated (a:8270,b:8270) fail over in order (default $NEBULA_CREDENTIAL_ADDR; token from $NEBULA_CREDENTIAL_TOKEN)")
	root.PersistentFlags().StringVar(&g.store, "store", "", "store path or postgres:// URL (default $NEBULA_CREDENTIAL_STORE or ./nebula-credential.db)")
	root.PersistentFlags().StringVar(&g.keyFile, "key-file", "", "root key file (default $NEBULA_CREDENTIAL_KEY_FILE or beside the store)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON for scripting")
	root.AddCommand(
		cmdInit(g), cmdPut(g), cmdGet(g), cmdList(g), cmdHistory(g), cmdDelete(g), cmdPurge(g),
		cmdBackup(g), cmdRestore(g), cmdKey(g),
		cmdRotate(g), cmdRollback(g), cmdPolicy(g), cmdRotations(g), cmdGrace(g), cmdDoctor(g), cmdReconcile(g), cmdAudit(g),
	)
	for _, c := range extraCommands {
		root.AddCommand(c(g))
	}
	finishRoot(root)
	return root
}

// extraCommands lets other files (serve) register commands.
var extraCommands []func(*globals) *cobra.Command

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// nonNil lets a JSON list print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// printJSONResult prints the object v as JSON for a command whose outcome is
// a report even when it failed: with err, the object gains an "error" field
// holding err's message and the command exits 1 without repeating the message
// on stderr. Without err it is printJSON.
func (g *globals) printJSONResult(v any, err error) error {
	if err == nil {
		return g.printJSON(v)
	}
	b, merr := json.Marshal(v)
	if merr != nil {
		return merr
	}
	msg, _ := json.Marshal(err.Error())
	if len(b) < 2 || b[0] != '{' {
		return fmt.Errorf("printJSONResult: %T is not a JSON object", v)
	}
	sep := ","
	if string(b) == "{}" {
		sep = ""
	}
	b = append(append(append(b[:len(b)-1:len(b)-1], sep+`"error":`...), msg...), '}')
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	if _, err := g.stdout.Write(buf.Bytes()); err != nil {
		return err
	}
	return exitError{exitFailed}
}

func (g *globals) printf(format string, args ...any) {
	fmt.Fprintf(g.stdout, format, args...)
}

func (g *globals) warnf(format string, args ...any) {
	fmt.Fprintf(g.stderr, "warning: "+format+"\n", args...)
}

// errorsJoin reports a rotation error in one line plus the recovery hint.
func rotationHint(err error) string {
	var re *rotation.RotationError
	if errors.As(err, &re) {
		return "run `nebula-credential doctor " + re.ID + "` for details"
	}
	return ""
}
