package mysql

import (
	"context"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
	"github.com/nebula-credential/nebula-credential/secret"
)

// The driver's client-side escaping must round-trip every byte sequence that
// matters for injection in both SQL modes: with backslash escapes (default)
// and with NO_BACKSLASH_ESCAPES, where a backslash is an ordinary character
// and only a doubled quote escapes. The account statements run on a session in
// each mode against names that would break the other mode's escaping.
func TestEscapingBothSQLModes(t *testing.T) {
	srv := testenv.MariaDB(t)
	hostile := []string{`a'b`, `a\'b`, `tail\`, `\`, `'`, `''`, `"`, `\"`, `a\\'; DROP USER x; --`, "nul\x00byte", "new\nline", `%`, `_`, "\x1a", `?`, `'?'`}
	for _, mode := range []string{"", "NO_BACKSLASH_ESCAPES"} {
		t.Run("mode="+mode, func(t *testing.T) {
			r := New(Config{})
			ctx := context.Background()
			login := func(user string, pw secret.Value) target {
				return target{fields: fields{Fields: dbrot.Fields{Host: srv.Host, Port: dbrot.Port(srv.Port), Username: user}}, Password: pw}
			}
			adm := login(srv.User, secret.New(srv.Password))
			s, err := r.connect(ctx, adm)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.conn.ExecContext(ctx, "SET SESSION sql_mode = ?", mode); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := s.conn.QueryRowContext(ctx, "SELECT @@SESSION.sql_mode").Scan(&got); err != nil || got != mode {
				t.Fatalf("sql_mode %q (%v)", got, err)
			}
			for _, h := range hostile {
				var back string
				if err := s.conn.QueryRowContext(ctx, "SELECT ?", h).Scan(&back); err != nil {
					t.Fatalf("SELECT %q: %v", h, err)
				}
				if back != h {
					t.Fatalf("round trip %q came back %q", h, back)
				}
			}
			var version string
			s.conn.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version)
			m := &manager{session: s, admin: true, dialect: parseVersion(version)}
			victim := testenv.UniqueName("victim_")
			srv.CreateUser(t, victim, "%", "pw-"+victim)
			for _, h := range []string{`it's\`, `x\'); DROP USER '` + victim + `'@'%'; -- `, `q"\"'`} {
				user := h + testenv.UniqueName("")
				if strings.ContainsRune(h, 0) {
					continue
				}
				srv.CreateUser(t, user, "%", "first-password")
				pw := secret.New(`pw'with\"quotes\` + testenv.UniqueName(""))
				if err := m.setOne(ctx, "test", user, "%", pw, " ACCOUNT UNLOCK"); err != nil {
					t.Fatalf("setOne(%q): %v", user, err)
				}
				if ok, err := r.db().LogsIn(ctx, login(user, pw), "test"); err != nil || !ok {
					t.Fatalf("%q does not log in with its new password (%v)", user, err)
				}
				if err := m.lock(ctx, "test", user, "%"); err != nil {
					t.Fatalf("lock(%q): %v", user, err)
				}
			}
			var n int
			if err := s.conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User = ?", victim).Scan(&n); err != nil || n != 1 {
				t.Fatalf("victim gone (%d, %v)", n, err)
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	for v, want := range map[string]struct {
		maria, dual bool
	}{
		"10.11.19-MariaDB-0+deb12u1":          {true, true},
		"5.5.5-10.3.39-MariaDB":               {true, false}, // the old replication prefix
		"5.5.5-10.11.2-MariaDB":               {true, true},
		"10.4.0-MariaDB":                      {true, true},
		"10.3.39-MariaDB-log":                 {true, false},
		"8.0.36":                              {false, true},
		"8.0.13-log":                          {false, false},
		"8.4.0":                               {false, true},
		"5.7.44-0ubuntu0.18.04.1":             {false, false},
		"9.1.0-commercial":                    {false, true},
		"11.4.2-MariaDB-ubu2404":              {true, true},
		"8.0.14-percona-xtradb-cluster-8.0.x": {false, true},
	} {
		d := parseVersion(v)
		if d.mariaDB != want.maria || d.dual() != want.dual {
			t.Errorf("%s: mariaDB %v dual %v, want %v %v", v, d.mariaDB, d.dual(), want.maria, want.dual)
		}
	}
}

func TestScrubEscapedForms(t *testing.T) {
	pw := secret.New(`ab'c\d"e`)
	for _, form := range []string{`ab'c\d"e`, `ab''c\d"e`, `ab\'c\\d\"e`, `ab'c\d\"e`} {
		err := scrub(errorString("near '"+form+"' at line 1"), pw)
		if strings.Contains(err.Error(), "c\\d") || !strings.Contains(err.Error(), secret.Redacted) {
			t.Errorf("form %q not scrubbed: %v", form, err)
		}
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
