package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/secret"
)

func init() {
	extraCommands = append(extraCommands, cmdImport)
}

// importRecord is one credential read from an import source, with where it
// came from (file:line) for error messages.
type importRecord struct {
	src string
	id  string
	req credential.PutRequest
}

// importLine is a JSON-lines record.
type importLine struct {
	ID        string               `json:"id"`
	Type      credential.Type      `json:"type"`
	Fields    map[string]any       `json:"fields"`
	Secret    map[string]string    `json:"secret"`
	ExpiresAt *time.Time           `json:"expires_at,omitempty"`
	Settings  *credential.Settings `json:"settings,omitempty"`
	Reason    string               `json:"reason,omitempty"`
}

type importOpts struct {
	format string
	prefix string
	typ    string
	reason string
}

// sourceError is an error in the input at a place (file:line); it never
// quotes the input.
type sourceError struct {
	src string
	msg string
}

func (e sourceError) Error() string { return e.src + ": " + e.msg }

func cmdImport(g *globals) *cobra.Command {
	var (
		o      importOpts
		batch  int
		dryRun bool
	)
	c := &cobra.Command{
		Use:   "import FILE|DIR|- ...",
		Short: "Import many credentials at once (JSON lines, .env files, Vault/OpenBao KV exports)",
		Long: `Import credentials in batched transactions: thousands per second, locally or
through a server (--addr / $NEBULA_CREDENTIAL_ADDR, one request per batch).
Each credential is written as 'put' writes it: same checks (including the
permission to bind a credential to an admin credential), its own history and
audit entry.

Formats (by extension, or --format):
  jsonl   *.jsonl, *.ndjson: one JSON object per line,
          {"id": "prod/db", "type": "postgres", "fields": {...}, "secret": {...},
           "expires_at": "...", "settings": {...}, "reason": "..."}
          ("type" defaults to --type).
  env     *.env, .env: KEY=VALUE lines ('export', quotes and # comments allowed);
          each line becomes the credential <prefix><key in lower case> of
          type --type (default generic) with the secret field "value".
  vault   *.json: what 'vault kv get -format=json PATH' (or 'bao kv get')
          prints, KV v2 or v1; the secret's keys become the secret fields. The
          ID is <prefix><file name without .json>. A directory is read
          recursively: the ID is <prefix><path below the directory>.

Everything is read and checked first: an input error is reported with its
file and line, and nothing is written. --dry-run then asks the store what
each credential would become (created, or a new version of an existing one)
or why it would be refused (no permission, another type, a rotation in
progress, an admin binding not allowed), and writes nothing. Then batches of
--batch credentials are written, one transaction each; a credential the store
refuses (a rotation in progress, another type under that ID, no permission)
is reported with its line and the others are written. Exit code 1 when any
credential was not written, 2 for input errors.`,
		Example: `  nebula-credential import creds.jsonl
  nebula-credential import app.env --prefix prod/app/
  vault kv get -format=json secret/prod/db > db.json && nebula-credential import db.json --prefix prod/
  nebula-credential import ./vault-export/ --prefix legacy/ --dry-run
  producer | nebula-credential import - --format jsonl --json`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("give at least one FILE, DIR or - (stdin)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if batch < 1 || batch > 1000 {
				return usagef("--batch must be between 1 and 1000")
			}
			switch o.format {
			case "", "jsonl", "env", "vault":
			default:
				return usagef("--format must be jsonl, env or vault")
			}
			if o.typ != "" {
				if err := credential.ValidateType(credential.Type(o.typ)); err != nil {
					return err
				}
			}
			actor, _ := audit.ActorOf(cmd.Context())
			recs, errs := readImport(g, args, o, actor)
			if len(errs) > 0 {
				return reportImportInputErrors(g, errs)
			}
			m, err := g.backend(cmd.Context(), openOpts{})
			if err != nil {
				return err
			}
			defer m.Close()
			return writeImport(cmd, g, m, recs, batch, dryRun)
		},
	}
	c.Flags().StringVar(&o.format, "format", "", "jsonl, env or vault (default: from the file extension; required for -)")
	c.Flags().StringVar(&o.prefix, "prefix", "", "prepended to every ID (e.g. prod/app/)")
	c.Flags().StringVar(&o.typ, "type", "", "type of env and vault credentials, and of JSON lines without \"type\" (default generic)")
	c.Flags().StringVar(&o.reason, "reason", "import", "why (recorded in each credential's history)")
	c.Flags().IntVar(&batch, "batch", 1000, "credentials per transaction (1-1000; through a server, requests are also kept under 768 KiB)")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "check everything against the store and report what would be created, updated or refused; write nothing")
	return c
}

// readImport reads every source and checks every record. It returns all
// input errors, not only the first.
func readImport(g *globals, args []string, o importOpts, actor string) ([]importRecord, []error) {
	var (
		recs []importRecord
		errs []error
	)
	add := func(r importRecord) error {
		r.req.Actor = actor
		if r.req.Reason == "" {
			r.req.Reason = o.reason
		}
		if r.req.Type == "" {
			r.req.Type = credential.Type(o.typ)
			if r.req.Type == "" {
				r.req.Type = credential.Generic
			}
		}
		if err := checkImportRecord(r); err != nil {
			return sourceError{r.src, strings.TrimPrefix(err.Error(), credential.ErrInvalid.Error()+": ")}
		}
		recs = append(recs, r)
		return nil
	}
	for _, arg := range args {
		if arg == "-" {
			if o.format == "" {
				errs = append(errs, usagef("reading stdin (-) needs --format jsonl, env or vault"))
				continue
			}
			errs = append(errs, readImportFile(g.stdin, "stdin", o.format, o, "stdin", add)...)
			continue
		}
		st, err := os.Stat(arg)
		if err != nil {
			errs = append(errs, fmt.Errorf("import: %w", err))
			continue
		}
		if st.IsDir() {
			errs = append(errs, readImportDir(arg, o, add)...)
			continue
		}
		format := o.format
		if format == "" {
			format = formatOf(arg)
			if format == "" {
				errs = append(errs, usagef("%s: cannot tell the format from the name: give --format jsonl, env or vault", arg))
				continue
			}
		}
		f, err := os.Open(arg)
		if err != nil {
			errs = append(errs, fmt.Errorf("import: %w", err))
			continue
		}
		errs = append(errs, readImportFile(f, arg, format, o, strings.TrimSuffix(filepath.Base(arg), filepath.Ext(arg)), add)...)
		f.Close()
	}
	return recs, errs
}

func formatOf(name string) string {
	base := filepath.Base(name)
	switch ext := strings.ToLower(filepath.Ext(base)); {
	case ext == ".jsonl" || ext == ".ndjson":
		return "jsonl"
	case ext == ".env" || base == ".env" || strings.HasPrefix(base, ".env."):
		return "env"
	case ext == ".json":
		return "vault"
	}
	return ""
}

// readImportDir reads a folder of Vault exports: every *.json below dir,
// the ID being prefix + the path below dir without .json.
func readImportDir(dir string, o importOpts, add func(importRecord) error) []error {
	var errs []error
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			errs = append(errs, fmt.Errorf("import: %w", err))
			return nil
		}
		if d.IsDir() || !strings.EqualFold(filepath.Ext(path), ".json") {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(strings.TrimSuffix(rel, filepath.Ext(rel)))
		f, err := os.Open(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("import: %w", err))
			return nil
		}
		defer f.Close()
		errs = append(errs, readImportFile(f, path, "vault", o, name, add)...)
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return errs
}

// readImportFile parses one source. name is the ID suffix of a vault file.
func readImportFile(r io.Reader, file, format string, o importOpts, name string, add func(importRecord) error) []error {
	switch format {
	case "jsonl":
		return readJSONLines(r, file, o, add)
	case "env":
		return readEnv(r, file, o, add)
	default:
		return readVault(r, file, o, name, add)
	}
}

func newScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxInput)
	return sc
}

func readJSONLines(r io.Reader, file string, o importOpts, add func(importRecord) error) []error {
	var errs []error
	sc := newScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		src := fmt.Sprintf("%s:%d", file, n)
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		var in importLine
		if err := dec.Decode(&in); err != nil {
			msg := describeJSONError(err, line)
			if strings.HasPrefix(msg, "unknown field") {
				msg += ` (allowed: "id", "type", "fields", "secret", "expires_at", "settings", "reason")`
			}
			errs = append(errs, sourceError{src, msg})
			continue
		}
		if dec.More() {
			errs = append(errs, sourceError{src, "expected one JSON object on the line, found more after it"})
			continue
		}
		if in.ID == "" {
			errs = append(errs, sourceError{src, `"id" is required`})
			continue
		}
		if err := add(importRecord{src: src, id: o.prefix + in.ID, req: credential.PutRequest{Type: in.Type, Fields: in.Fields, Secret: secret.FromStrings(in.Secret), ExpiresAt: in.ExpiresAt, Settings: in.Settings, Reason: in.Reason}}); err != nil {
			errs = append(errs, err)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w (a line may hold at most %d bytes)", file, err, maxInput))
	}
	return errs
}

// readEnv reads KEY=VALUE lines. Values may be quoted: "..." (with \n, \t,
// \", \\ escapes) or '...' (literal). Errors never quote the line.
func readEnv(r io.Reader, file string, o importOpts, add func(importRecord) error) []error {
	var errs []error
	sc := newScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		src := fmt.Sprintf("%s:%d", file, n)
		line = strings.TrimPrefix(line, "export ")
		key, val, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			errs = append(errs, sourceError{src, "expected KEY=VALUE"})
			continue
		}
		for _, r := range key {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
				errs = append(errs, sourceError{src, fmt.Sprintf("variable name has a character %q that is not allowed (use letters, digits, '_', '.', '-')", r)})
				key = ""
				break
			}
		}
		if key == "" {
			continue
		}
		v, err := envValue(strings.TrimSpace(val))
		if err != nil {
			errs = append(errs, sourceError{src, fmt.Sprintf("%s: %v", key, err)})
			continue
		}
		if err := add(importRecord{src: src, id: o.prefix + strings.ToLower(key), req: credential.PutRequest{Secret: secret.FromStrings(map[string]string{"value": v})}}); err != nil {
			errs = append(errs, err)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", file, err))
	}
	return errs
}

func envValue(v string) (string, error) {
	switch {
	case strings.HasPrefix(v, `"`):
		var b strings.Builder
		for i := 1; i < len(v); i++ {
			c := v[i]
			switch {
			case c == '\\' && i+1 < len(v):
				i++
				switch v[i] {
				case 'n':
					b.WriteByte('\n')
				case 't':
					b.WriteByte('\t')
				case 'r':
					b.WriteByte('\r')
				default:
					b.WriteByte(v[i])
				}
			case c == '"':
				if rest := strings.TrimSpace(v[i+1:]); rest != "" && !strings.HasPrefix(rest, "#") {
					return "", errors.New("unexpected text after the closing double quote")
				}
				return b.String(), nil
			default:
				b.WriteByte(c)
			}
		}
		return "", errors.New("double-quoted value has no closing quote (values span one line; write newlines as \\n)")
	case strings.HasPrefix(v, `'`):
		end := strings.IndexByte(v[1:], '\'')
		if end < 0 {
			return "", errors.New("single-quoted value has no closing quote")
		}
		if rest := strings.TrimSpace(v[end+2:]); rest != "" && !strings.HasPrefix(rest, "#") {
			return "", errors.New("unexpected text after the closing single quote")
		}
		return v[1 : end+1], nil
	}
	if i := strings.Index(v, " #"); i >= 0 {
		v = strings.TrimSpace(v[:i])
	}
	return v, nil
}

// readVault reads what `vault kv get -format=json` prints: KV v2
// ({"data": {"data": {...}, "metadata": {...}}}) or v1 ({"data": {...}}).
func readVault(r io.Reader, file string, o importOpts, name string, add func(importRecord) error) []error {
	raw, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return []error{fmt.Errorf("%s: %w", file, err)}
	}
	if len(raw) > maxInput {
		return []error{sourceError{file, fmt.Sprintf("larger than %d bytes", maxInput)}}
	}
	var doc struct {
		Data map[string]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return []error{sourceError{file, describeJSONError(err, raw) + " (want the output of `vault kv get -format=json PATH`)"}}
	}
	if doc.Data == nil {
		return []error{sourceError{file + ":1", `no "data" object: want the output of ` + "`vault kv get -format=json PATH`"}}
	}
	data := doc.Data
	if inner, ok := data["data"]; ok {
		if _, meta := data["metadata"]; meta { // KV v2
			var m map[string]json.RawMessage
			if err := json.Unmarshal(inner, &m); err != nil || m == nil {
				return []error{sourceError{file + ":1", `"data.data" must be an object of secret keys`}}
			}
			data = m
		}
	}
	if len(data) == 0 {
		return []error{sourceError{file + ":1", "the secret has no keys"}}
	}
	sec := make(map[string]string, len(data))
	for k, v := range data {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			s = string(bytes.TrimSpace(v)) // numbers, booleans, objects: their JSON text
		}
		sec[k] = s
	}
	if err := add(importRecord{src: file, id: o.prefix + name, req: credential.PutRequest{Secret: secret.FromStrings(sec)}}); err != nil {
		return []error{err}
	}
	return nil
}

// checkImportRecord runs the checks put runs before touching the store.
func checkImportRecord(r importRecord) error {
	if err := credential.ValidateID(r.id); err != nil {
		return err
	}
	if err := credential.ValidateType(r.req.Type); err != nil {
		return err
	}
	if err := credential.ValidateValues(r.req.Type, r.req.Fields, r.req.Secret); err != nil {
		return err
	}
	if r.req.Settings != nil {
		if err := r.req.Settings.Validate(); err != nil {
			return fmt.Errorf("settings: %v", err)
		}
	}
	return nil
}

func reportImportInputErrors(g *globals, errs []error) error {
	if g.json {
		out := make([]map[string]string, 0, len(errs))
		for _, e := range errs {
			out = append(out, map[string]string{"error": e.Error()})
		}
		_ = g.printJSON(map[string]any{"imported": 0, "errors": out})
	} else {
		for i, e := range errs {
			if i == 50 {
				fmt.Fprintf(g.stderr, "... and %d more\n", len(errs)-50)
				break
			}
			fmt.Fprintf(g.stderr, "%s\n", e)
		}
	}
	return usagef("%d input error(s); nothing was imported: fix them and run import again (--dry-run checks without writing)", len(errs))
}

type importFailure struct {
	Source string `json:"source"`
	ID     string `json:"id"`
	Error  string `json:"error"`
}

// writeImport writes the records in batches, locally with PutMany or
// remotely with POST /v1/import.
func writeImport(cmd *cobra.Command, g *globals, m backend, recs []importRecord, batch int, dryRun bool) error {
	ctx := cmd.Context()
	start := time.Now()
	bar, done := g.progress("import")
	var (
		fails    []importFailure
		imported int
		updates  int // dry run: items that would get a new version of an existing credential
	)
	for lo := 0; lo < len(recs); lo += batch {
		part := recs[lo:min(lo+batch, len(recs))]
		var errsOf []string
		switch b := m.(type) {
		case local:
			items := make([]credential.PutItem, len(part))
			for i, r := range part {
				items[i] = credential.PutItem{ID: r.id, PutRequest: r.req}
			}
			put := b.m.PutMany
			if dryRun {
				put = b.m.PutManyDryRun
			}
			res, err := put(ctx, items)
			if err != nil {
				done()
				return fmt.Errorf("import: %w (%d credentials imported before this batch)", err, imported)
			}
			for _, r := range res {
				if r.Err != nil {
					errsOf = append(errsOf, oneLine(r.Err))
				} else {
					errsOf = append(errsOf, "")
					if r.Version > 1 {
						updates++
					}
				}
			}
		case remote:
			items := make([]client.ImportItem, len(part))
			for i, r := range part {
				items[i] = client.ImportItem{ID: r.id, Type: r.req.Type, Fields: r.req.Fields, Secret: r.req.Secret.Reveal(), ExpiresAt: r.req.ExpiresAt, Settings: r.req.Settings, Reason: r.req.Reason}
			}
			var res []client.ImportResult
			send := b.c.Import
			if dryRun {
				send = b.c.ImportDryRun
			}
			for _, chunk := range importChunks(items) {
				r, err := send(ctx, chunk)
				if err != nil {
					done()
					return fmt.Errorf("import: %w (%d credentials imported before this batch)", err, imported)
				}
				res = append(res, r...)
			}
			if len(res) != len(part) {
				done()
				return fmt.Errorf("import: the server answered %d results for %d credentials", len(res), len(part))
			}
			for _, r := range res {
				errsOf = append(errsOf, r.Error)
				if r.Error == "" && r.Version > 1 {
					updates++
				}
			}
		default:
			return fmt.Errorf("import: unsupported backend %T", m)
		}
		for i, e := range errsOf {
			if e != "" {
				fails = append(fails, importFailure{Source: part[i].src, ID: part[i].id, Error: e})
			} else {
				imported++
			}
		}
		bar(lo+len(part), len(recs))
	}
	done()
	if dryRun {
		return reportImportDryRun(g, recs, fails, imported, updates)
	}
	elapsed := time.Since(start)
	if g.json {
		if fails == nil {
			fails = []importFailure{}
		}
		if err := g.printJSON(map[string]any{"imported": imported, "failed": len(fails), "errors": fails, "seconds": elapsed.Seconds()}); err != nil {
			return err
		}
	} else {
		for _, f := range fails {
			fmt.Fprintf(g.stderr, "%s: %s: not imported: %s\n", f.Source, f.ID, f.Error)
		}
		rate := ""
		if s := elapsed.Seconds(); s > 0 {
			rate = fmt.Sprintf(", %.0f/s", float64(imported)/s)
		}
		g.printf("imported %d credentials in %s%s\n", imported, elapsed.Round(time.Millisecond), rate)
	}
	if len(fails) > 0 {
		return fmt.Errorf("%d of %d credentials were not imported (listed above with their lines); fix them and import those lines again", len(fails), len(recs))
	}
	return nil
}

// reportImportDryRun prints what an import would do: ok items would be
// written (updates of them as new versions of existing credentials), fails
// would be refused.
func reportImportDryRun(g *globals, recs []importRecord, fails []importFailure, ok, updates int) error {
	if g.json {
		if err := g.printJSON(map[string]any{"dry_run": true, "credentials": len(recs), "would_create": ok - updates,
			"would_update": updates, "would_fail": len(fails), "errors": nonNil(fails)}); err != nil {
			return err
		}
	} else {
		for _, f := range fails {
			fmt.Fprintf(g.stderr, "%s: %s: would not be imported: %s\n", f.Source, f.ID, f.Error)
		}
		g.printf("dry run: %d credentials read and checked: %d would be created, %d would get a new version, %d would be refused; nothing written\n",
			len(recs), ok-updates, updates, len(fails))
	}
	if len(fails) > 0 {
		return exitError{exitFailed}
	}
	return nil
}

// maxImportRequest keeps one POST /v1/import under the server's default body
// limit (1 MiB) with room to spare.
const maxImportRequest = 768 << 10

// importChunks splits a batch so that each request stays under
// maxImportRequest bytes of JSON.
func importChunks(items []client.ImportItem) [][]client.ImportItem {
	var (
		out   [][]client.ImportItem
		start int
		size  int
	)
	for i, it := range items {
		b, _ := json.Marshal(it)
		if size+len(b) > maxImportRequest && i > start {
			out = append(out, items[start:i])
			start, size = i, 0
		}
		size += len(b) + 1
	}
	return append(out, items[start:])
}
