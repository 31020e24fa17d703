package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PG is a running PostgreSQL cluster with scram-sha-256 host authentication.
// Superuser is "postgres" with Password.
type PG struct {
	Host     string
	Port     int
	User     string
	Password string
	Database string

	base string
	cmd  *exec.Cmd
	done <-chan error
	// bin, data and cred start the cluster again (Private clusters only).
	bin, data string
	cred      *syscall.Credential
}

// DSN is a connection URL for the superuser.
func (p *PG) DSN() string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(p.User, p.Password),
		Host: fmt.Sprintf("%s:%d", p.Host, p.Port), Path: "/" + p.Database, RawQuery: "sslmode=disable"}
	return u.String()
}

// Connect opens a superuser connection closed at the end of the test.
func (p *PG) Connect(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN())
	if err != nil {
		t.Fatalf("testenv: connect to postgres: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Exec runs sql as the superuser (no parameters).
func (p *PG) Exec(t testing.TB, sql string) {
	t.Helper()
	c := p.Connect(t)
	if _, err := c.Exec(context.Background(), sql); err != nil {
		t.Fatalf("testenv: %s: %v", sql, err)
	}
}

// CreateRole creates role name with attrs (e.g. "LOGIN", "NOLOGIN CREATEROLE")
// and, unless password is empty, that password (escaped by the driver); it drops
// the role at the end of the test and returns name.
func (p *PG) CreateRole(t testing.TB, name, password, attrs string) string {
	t.Helper()
	c := p.Connect(t)
	ctx := context.Background()
	stmt := "CREATE ROLE " + pgx.Identifier{name}.Sanitize() + " " + attrs
	if password != "" {
		lit, err := c.PgConn().EscapeString(password)
		if err != nil {
			t.Fatal(err)
		}
		stmt += " PASSWORD '" + lit + "'"
	}
	if _, err := c.Exec(ctx, stmt); err != nil {
		t.Fatalf("testenv: create role: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), p.DSN())
		if err != nil {
			return // server already gone
		}
		defer c.Close(context.Background())
		id := pgx.Identifier{name}.Sanitize()
		// A role that owns objects or has members needs these first.
		c.Exec(context.Background(), "DROP OWNED BY "+id)
		if _, err := c.Exec(context.Background(), "DROP ROLE IF EXISTS "+id); err != nil {
			t.Logf("testenv: drop role %q: %v", name, err)
		}
	})
	return name
}

var shared struct {
	once sync.Once
	pg   *PG
	err  error
	miss bool // true when the error means "not installed"
}

// Postgres returns the package's shared throwaway cluster, starting it on first
// use (initdb runs once per test binary). Use Main in TestMain to stop it.
func Postgres(t testing.TB) *PG {
	t.Helper()
	shared.once.Do(func() {
		shared.pg, shared.miss, shared.err = startPostgres()
		if shared.err == nil {
			onExit(shared.pg.stop)
		}
	})
	if shared.err != nil {
		if shared.miss {
			unavailable(t, "%v", shared.err)
		}
		t.Fatalf("testenv: start postgres: %v", shared.err)
	}
	return shared.pg
}

// pgBinDir finds the newest /usr/lib/postgresql/*/bin with initdb, or
// $NEBULA_TEST_PG_BIN.
func pgBinDir() (string, error) {
	if d := os.Getenv("NEBULA_TEST_PG_BIN"); d != "" {
		return d, nil
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", errors.New("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); install postgresql")
	}
	sort.Slice(m, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m[j]))))
		return vi > vj
	})
	return filepath.Dir(m[0]), nil
}

func startPostgres() (pg *PG, missing bool, err error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, true, err
	}
	// initdb and postgres refuse to run as root: run them as "postgres".
	var cred *syscall.Credential
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, true, fmt.Errorf("running as root and no postgres user to run the server as: %v", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	base, err := os.MkdirTemp("", "nebula-pg-")
	if err != nil {
		return nil, false, err
	}
	fail := func(err error) (*PG, bool, error) {
		os.RemoveAll(base)
		return nil, false, err
	}
	if uid >= 0 {
		if err := os.Chown(base, uid, gid); err != nil {
			return fail(err)
		}
	}
	password := UniqueName("pg-admin-")
	pwfile := filepath.Join(base, "pw")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		return fail(err)
	}
	if uid >= 0 {
		os.Chown(pwfile, uid, gid)
	}
	data := filepath.Join(base, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--pwfile", pwfile,
		"--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %v\n%s", err, out))
	}
	// FreePort's port may be taken before postgres binds it (another test
	// process, an outgoing connection): then try another one. A later line
	// of postgresql.conf overrides an earlier one.
	for attempt := 1; ; attempt++ {
		pg, retry, err := startPostgresOn(bin, base, data, cred, 0)
		if retry && attempt == 5 {
			os.RemoveAll(base)
		}
		if err == nil || !retry || attempt == 5 {
			return pg, false, err
		}
	}
}

// startPostgresOn starts the initialised cluster in data on port, a free one
// when port is 0; retry reports that the port was taken meanwhile.
func startPostgresOn(bin, base, data string, cred *syscall.Credential, port int) (pg *PG, retry bool, err error) {
	fail := func(err error) (*PG, bool, error) {
		os.RemoveAll(base)
		return nil, false, err
	}
	password, err := os.ReadFile(filepath.Join(base, "pw"))
	if err != nil {
		return fail(err)
	}
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return fail(err)
		}
	}
	conf := fmt.Sprintf("\nlisten_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n"+
		"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"+
		"password_encryption = 'scram-sha-256'\nshared_buffers = 32MB\n", port, base)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fail(err)
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		return fail(err)
	}
	logf, err := os.Create(filepath.Join(base, "server.log"))
	if err != nil {
		return fail(err)
	}
	// postgres itself rather than pg_ctl, so it gets a parent-death signal
	// (SIGQUIT: immediate shutdown) if the test binary is killed.
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	done, err := startOwned(cmd, syscall.SIGQUIT)
	logf.Close()
	if err != nil {
		return fail(err)
	}
	pg = &PG{Host: "127.0.0.1", Port: port, User: "postgres", Password: strings.TrimSpace(string(password)), Database: "postgres",
		base: base, cmd: cmd, done: done, bin: bin, data: data, cred: cred}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, pg.DSN())
		cancel()
		if err == nil {
			c.Close(context.Background())
			return pg, false, nil
		}
		select {
		case werr := <-done:
			log, _ := os.ReadFile(filepath.Join(base, "server.log"))
			if strings.Contains(string(log), "in use") {
				return nil, true, fmt.Errorf("postgres exited: port %d taken: %v\n%s", port, werr, log)
			}
			os.RemoveAll(base)
			return nil, false, fmt.Errorf("postgres exited: %v\n%s", werr, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(base, "server.log"))
			pg.stop()
			return nil, false, fmt.Errorf("postgres did not accept connections within 60s: %v\n%s", err, strings.TrimSpace(string(log)))
		}
	}
}

// stop shuts the cluster down (fast shutdown, then kill) and removes its files.
func (p *PG) stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	os.RemoveAll(p.base)
}

// CPUTime is the CPU time the cluster has used so far: the postmaster, the
// backends it has reaped, and those running now, read from /proc (Linux
// only). The difference between two calls is the server's CPU in between,
// for benchmarks that report PostgreSQL CPU per operation.
func (p *PG) CPUTime() (time.Duration, error) {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0, errors.New("testenv: postgres not started by this process")
	}
	pid := p.cmd.Process.Pid
	// The postmaster's own time and its reaped children's (utime, stime,
	// cutime, cstime: fields 14-17, in clock ticks of 10 ms).
	f, _, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	total := time.Duration(f[11]+f[12]+f[13]+f[14]) * tick
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		f, ppid, err := procStat(child)
		if err != nil || ppid != pid {
			continue // gone meanwhile, or not a backend
		}
		// A running backend: its time so far, in nanoseconds where the
		// kernel keeps them (schedstat), in ticks otherwise.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", child)); err == nil {
			if ns, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64); err == nil {
				total += time.Duration(ns)
				continue
			}
		}
		total += time.Duration(f[11]+f[12]) * tick
	}
	return total, nil
}

// procStat reads /proc/pid/stat: the fields after the command name (f[0] is
// field 3, the state; f[11] is utime) as numbers, and the parent pid.
func procStat(pid int) (f []int64, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, 0, fmt.Errorf("testenv: /proc/%d/stat: unexpected format", pid)
	}
	for _, w := range strings.Fields(s[i+1:]) {
		n, _ := strconv.ParseInt(w, 10, 64)
		f = append(f, n)
	}
	if len(f) < 15 {
		return nil, 0, fmt.Errorf("testenv: /proc/%d/stat: unexpected format", pid)
	}
	return f, int(f[1]), nil
}
