package agent

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/secret"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigErrorsNameFileLineField(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		line       int
		field, msg string
	}{
		{"no servers", "templates:\n  - contents: x\n    destination: /tmp/x\n", 0, "servers", "at least one server"},
		{"unknown field", "servers: [a:1]\ntemplates:\n  - contents: x\n    destinaton: /tmp/x\n", 4, "destinaton", "unknown field"},
		{"bad mode", "servers: [a:1]\ntemplates:\n  - contents: x\n    destination: /tmp/x\n    mode: 0999\n", 5, "", "octal"},
		{"bad duration", "servers: [a:1]\nfull_check: soon\ntemplates:\n  - contents: x\n    destination: /tmp/x\n", 2, "", ""},
		{"no destination", "servers: [a:1]\ntemplates:\n  - contents: x\n", 3, "templates[0].destination", "missing"},
		{"bad template", "servers: [a:1]\ntemplates:\n  - contents: '{{ secrett \"a\" \"b\" }}'\n    destination: /tmp/x\n", 3, "templates[0].contents", "secrett"},
		{"bad signal", "servers: [a:1]\ntemplates:\n  - contents: x\n    destination: /tmp/x\n    action:\n      signal: BOOM\n      pid: 1\n", 6, "templates[0].action.signal", "not one of"},
		{"signal no target", "servers: [a:1]\ntemplates:\n  - contents: x\n    destination: /tmp/x\n    action:\n      signal: HUP\n", 6, "templates[0].action.signal", "no target"},
		{"two actions", "servers: [a:1]\ntemplates:\n  - contents: x\n    destination: /tmp/x\n    action:\n      signal: HUP\n      pid: 3\n      command: [true]\n", 6, "templates[0].action", "one of"},
		{"dup dest", "servers: [a:1]\ntemplates:\n  - contents: x\n    destination: /tmp/x\n  - contents: y\n    destination: /tmp/x\n", 6, "templates[1].destination", "also the destination"},
		{"bad user", "servers: [a:1]\ntemplates:\n  - contents: x\n    destination: /tmp/x\n    user: no-such-user-here\n", 5, "templates[0].user", "no user"},
		{"syntax", "servers: [a:1\n", 1, "", ""},
		{"exec on_change", "servers: [a:1]\nexec:\n  command: [sleep, 1]\n  on_change: reboot\n", 4, "exec.on_change", "not one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.text)
			_, err := LoadConfig(p)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v (%T), want *ConfigError", err, err)
			}
			if !errors.Is(err, credential.ErrInvalid) {
				t.Errorf("not ErrInvalid: %v", err)
			}
			if ce.File != p || (tc.line > 0 && ce.Line != tc.line) || !strings.Contains(ce.Field, tc.field) || !strings.Contains(ce.Msg, tc.msg) {
				t.Errorf("got %q (line %d field %q), want line %d field %q msg %q", err, ce.Line, ce.Field, tc.line, tc.field, tc.msg)
			}
			if ce.Line == 0 && tc.line != 0 {
				t.Errorf("no line in %q", err)
			}
			if !strings.HasPrefix(err.Error(), p+":") {
				t.Errorf("%q does not start with the file name", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	p := writeConfig(t, "servers: [a:1, b:2]\nfull_check: 90s\ntemplates:\n  - contents: x\n    destination: out/x\n    mode: 0640\n    action:\n      command: [/bin/true]\n")
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	tp := c.Templates[0]
	if tp.Mode != 0o640 || tp.Destination != filepath.Join(filepath.Dir(p), "out/x") || tp.Action.Timeout == 0 || time.Duration(c.FullCheck).Seconds() != 90 || len(c.Servers) != 2 {
		t.Errorf("config = %+v", c)
	}
}

func TestWriteFileAtomicOnlyOnChange(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	changed, err := WriteFile(p, []byte("one"), 0o600, -1, -1)
	if err != nil || !changed {
		t.Fatalf("first write: %v %v", changed, err)
	}
	fi1, _ := os.Stat(p)
	changed, err = WriteFile(p, []byte("one"), 0o600, -1, -1)
	if err != nil || changed {
		t.Fatalf("same content rewrote: %v %v", changed, err)
	}
	fi2, _ := os.Stat(p)
	if !os.SameFile(fi1, fi2) {
		t.Error("same content replaced the file")
	}
	if changed, err = WriteFile(p, []byte("one"), 0o640, -1, -1); err != nil || !changed {
		t.Fatalf("mode change not written: %v %v", changed, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}
	if _, err := WriteFile(p, nil, 0o600, -1, -1); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Errorf("content %q after refused empty write", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temp files left: %v", ents)
	}
	if _, err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600, -1, -1); err == nil {
		t.Error("write into a missing folder succeeded")
	}
}

func TestWriteFileReaderNeverSeesPartial(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	a, b := strings.Repeat("a", 64<<10), strings.Repeat("b", 32<<10)
	if _, err := WriteFile(p, []byte(a), 0o600, -1, -1); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			WriteFile(p, []byte(map[bool]string{true: a, false: b}[i%2 == 0]), 0o600, -1, -1)
		}
	}()
	for range 3000 {
		got, err := os.ReadFile(p)
		if err != nil || (string(got) != a && string(got) != b) {
			t.Fatalf("reader saw %d bytes, err %v", len(got), err)
		}
	}
	close(stop)
	wg.Wait()
}

// fixed is a fetch function over a map.
func fixed(m map[string]*credential.Credential) func(context.Context, string) (*credential.Credential, error) {
	return func(_ context.Context, id string) (*credential.Credential, error) {
		c, ok := m[id]
		if !ok {
			return nil, credential.ErrNotFound
		}
		return c, nil
	}
}

const nasty = `p@ss:w/o'rd"\$x;?&#%`

func pgCred() *credential.Credential {
	return &credential.Credential{ID: "prod/db", Type: credential.Postgres, Version: 7,
		Fields: map[string]any{"host": "db.internal", "port": float64(5433), "database": "orders", "username": "app"},
		Secret: secret.Map{"password": secret.New(nasty)}}
}

func TestTemplateHelpersEscapeCorrectly(t *testing.T) {
	r := newRenderer(t.Context(), fixed(map[string]*credential.Credential{"prod/db": pgCred()}))
	render := func(text string) string {
		t.Helper()
		b, err := r.render("t", text)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		return string(b)
	}
	// postgres URL and DSN parse back to the same password
	for _, text := range []string{`{{ pgurl "prod/db" }}`, `{{ pgdsn "prod/db" }}`} {
		cfg, err := pgconn.ParseConfig(render(text))
		if err != nil {
			t.Fatalf("%s: parse: %v", text, err)
		}
		if cfg.Password != nasty || cfg.User != "app" || cfg.Host != "db.internal" || cfg.Port != 5433 || cfg.Database != "orders" {
			t.Errorf("%s round trip: %+v", text, cfg)
		}
	}
	if u, err := url.Parse(render(`{{ pgurl "prod/db" }}`)); err != nil || u.Host != "db.internal:5433" {
		t.Errorf("pgurl: %v %v", u, err)
	}
	mc, err := mysql.ParseDSN(render(`{{ mysqldsn "prod/db" }}`))
	if err != nil || mc.Passwd != nasty || mc.User != "app" || mc.Addr != "db.internal:5433" {
		t.Errorf("mysqldsn round trip: %+v %v", mc, err)
	}
	if got, want := render(`{{ pgpass "prod/db" }}`), `db.internal:5433:orders:app:p@ss\:w/o'rd"\\$x;?&#%`+"\n"; got != want {
		t.Errorf("pgpass = %q, want %q", got, want)
	}
	if got := render(`{{ mycnf "prod/db" }}`); !strings.Contains(got, `password="p@ss:w/o'rd\"\\$x;?&#%"`) || !strings.HasPrefix(got, "[client]\n") {
		t.Errorf("mycnf = %q", got)
	}
	if got, want := render(`{{ secret "prod/db" "password" | env "DB_PASSWORD" }}`), `DB_PASSWORD="p@ss:w/o'rd\"\\\$x;?&#%"`+"\n"; got != want {
		t.Errorf("env = %q, want %q", got, want)
	}
	if got := render(`{{ env "U" (field "prod/db" "username") }}`); got != "U='app'\n" {
		t.Errorf("env simple = %q", got)
	}
	if got := render(`{{ field "prod/db" "port" }} {{ field "prod/db" "version" }} {{ (cred "prod/db").Version }}`); got != "5433 7 7" {
		t.Errorf("field = %q", got)
	}
	if got := render(`{{ secret "prod/db" "password" | json }}`); got != `"p@ss:w/o'rd\"\\$x;?\u0026#%"` {
		t.Errorf("json = %q", got)
	}
	if got := render(`{{ secret "prod/db" "password" | base64 | base64decode }}`); got != nasty {
		t.Errorf("base64 = %q", got)
	}
	if got := render(`{{ jdbcurl "prod/db" }}`); got != "jdbc:postgresql://db.internal:5433/orders" {
		t.Errorf("jdbcurl = %q", got)
	}
	if r.used["prod/db"] != 7 {
		t.Errorf("used = %v", r.used)
	}
}

func TestRenderErrorsCarryNoSecret(t *testing.T) {
	r := newRenderer(t.Context(), fixed(map[string]*credential.Credential{"prod/db": pgCred()}))
	for _, text := range []string{
		`{{ secret "prod/db" "password" | env "1BAD" }}`,
		`{{ secret "prod/db" "nope" }}`,
		`{{ field "prod/db" "nope" }}`,
		`{{ secret "prod/db" "password" | base64decode }}`,
		`{{ (secret "prod/db" "password").Foo }}`,
		`{{ index (cred "prod/db").Secret "password" | printf "%d" | env "X" }}{{ template "nope" }}`,
		`{{ pemcert "prod/db" }}`,
		`{{ secret "other/db" "password" }}`,
	} {
		_, err := r.render("t", text)
		if err == nil {
			t.Errorf("%s: no error", text)
			continue
		}
		if strings.Contains(err.Error(), "w/o'rd") || strings.Contains(err.Error(), nasty) {
			t.Errorf("%s: secret in error %q", text, err)
		}
	}
}

// owners picks a user and a group to give destinations to: as root another
// user and group (so the test sees chown happen); otherwise the current user
// and, if it has one, a supplementary group other than its primary one.
func owners(t *testing.T) (u *user.User, g *user.Group) {
	t.Helper()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	u = me
	if os.Getuid() == 0 {
		if nb, err := user.Lookup("nobody"); err == nil {
			u = nb
		}
	}
	gids, _ := os.Getgroups()
	pick := me.Gid
	if os.Getuid() == 0 {
		pick = u.Gid
	} else {
		for _, id := range gids {
			if s := strconv.Itoa(id); s != me.Gid {
				pick = s
				break
			}
		}
	}
	g, err = user.LookupGroupId(pick)
	if err != nil {
		t.Fatal(err)
	}
	return u, g
}

// TestDestinationOwnerAndGroup: user and group (names or numeric IDs) own
// the destination; an owner change alone rewrites it; an unknown group is a
// config error naming the file, line and field.
func TestDestinationOwnerAndGroup(t *testing.T) {
	u, g := owners(t)
	t.Logf("user %s (%s), group %s (%s)", u.Username, u.Uid, g.Name, g.Gid)
	dir := t.TempDir()
	for _, tc := range []struct{ user, group string }{
		{u.Username, g.Name},
		{u.Uid, g.Gid},
	} {
		p := writeConfig(t, fmt.Sprintf("servers: [a:1]\ntemplates:\n  - contents: x\n    destination: %s\n    user: %q\n    group: %q\n", filepath.Join(dir, "f"), tc.user, tc.group))
		c, err := LoadConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		tp := c.Templates[0]
		if strconv.Itoa(tp.uid) != u.Uid || strconv.Itoa(tp.gid) != g.Gid {
			t.Fatalf("%s/%s resolved to %d/%d", tc.user, tc.group, tp.uid, tp.gid)
		}
		// the file first belongs to the agent; the owner alone changes it
		os.Remove(tp.Destination)
		if _, err := WriteFile(tp.Destination, []byte("same"), 0o640, -1, -1); err != nil {
			t.Fatal(err)
		}
		changed, err := WriteFile(tp.Destination, []byte("same"), 0o640, tp.uid, tp.gid)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(tp.Destination)
		st := fi.Sys().(*syscall.Stat_t)
		if strconv.Itoa(int(st.Uid)) != u.Uid || strconv.Itoa(int(st.Gid)) != g.Gid || fi.Mode().Perm() != 0o640 {
			t.Errorf("owner %d:%d mode %v, want %s:%s 0640", st.Uid, st.Gid, fi.Mode().Perm(), u.Uid, g.Gid)
		}
		if want := strconv.Itoa(os.Getuid()) != u.Uid || strconv.Itoa(os.Getgid()) != g.Gid; changed != want {
			t.Errorf("changed = %v, want %v (only the owner differs)", changed, want)
		}
		if changed, _ := WriteFile(tp.Destination, []byte("same"), 0o640, tp.uid, tp.gid); changed {
			t.Error("an unchanged file with its owner was rewritten")
		}
	}
	p := writeConfig(t, "servers: [a:1]\ntemplates:\n  - contents: x\n    destination: /tmp/x\n    user: "+u.Username+"\n    group: no-such-group-here\n")
	_, err := LoadConfig(p)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.File != p || ce.Line != 6 || ce.Field != "templates[0].group" || !strings.Contains(ce.Msg, `no group "no-such-group-here"`) {
		t.Errorf("unknown group: %v", err)
	}
}
