package testenv

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { Main(m) }

func TestPostgresRefusesWrongPassword(t *testing.T) {
	pg := Postgres(t)
	pg.CreateRole(t, "tenv_user", "right-password", "LOGIN")
	cfg, _ := pgx.ParseConfig(pg.DSN())
	cfg.User, cfg.Password = "tenv_user", "wrong-password"
	_, err := pgx.ConnectConfig(context.Background(), cfg)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Fatalf("wrong password: err = %v, want SQLSTATE 28P01", err)
	}
	cfg.Password = "right-password"
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	if Postgres(t) != pg {
		t.Fatal("cluster not shared")
	}
}

func TestMariaDBUser(t *testing.T) {
	m := MariaDB(t)
	name := UniqueName("tenv_")
	m.CreateUser(t, name, "%", "pw-"+name)
	db := m.open(name, "pw-"+name)
	defer db.Close()
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
}

func TestRedisACLFileSurvivesRestart(t *testing.T) {
	r := Redis(t, true)
	r.Do(t, "ACL", "SETUSER", "u1", "on", ">p1-secret", "+ping")
	r.Do(t, "ACL", "SAVE")
	r.Restart(t)
	c := r.client("u1", "p1-secret")
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestProxyClose(t *testing.T) {
	r := Redis(t, false)
	p := NewProxy(t, r.Addr())
	c := redis.NewClient(&redis.Options{Addr: joinHostPort(p.Host, p.Port), Password: r.AdminPassword, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("ping through a closed proxy worked")
	}
}
