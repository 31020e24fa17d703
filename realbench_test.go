package credential_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/secret"
)

// One full rotation through the engine (plan, stage, apply, verify, commit:
// journal writes included; retire is outside the timer) beside the raw
// password change plus one fresh login it wraps, against each real server in
// the same run:
//
//	go test -run '^$' -bench 'RealRotation|RawChange' -benchtime 30x .
//
// Goal: rotation <= 1.5x the raw pair.

func BenchmarkRealRotation(b *testing.B) {
	for name, mk := range realTargets() {
		b.Run(name, func(b *testing.B) {
			tg := mk(b)
			m, clk := openReal(b, tg)
			ctx := context.Background()
			grace := 24 * time.Hour
			for b.Loop() {
				if _, err := m.Rotate(ctx, "app/db", credential.RotateOptions{Grace: &grace}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				clk.Advance(25 * time.Hour)
				if _, err := m.Engine().Tick(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

func BenchmarkRawChange(b *testing.B) {
	ctx := context.Background()
	b.Run("postgres", func(b *testing.B) {
		pg := testenv.Postgres(b)
		admin := pg.Connect(b)
		role := pg.CreateRole(b, testenv.UniqueName("raw_"), "initial-pw-123", "LOGIN")
		for b.Loop() {
			pw := secret.Token(24).Reveal()
			if _, err := admin.Exec(ctx, "ALTER ROLE "+pgx.Identifier{role}.Sanitize()+" PASSWORD '"+pw+"'"); err != nil {
				b.Fatal(err)
			}
			cfg, _ := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=postgres sslmode=disable", pg.Host, pg.Port))
			cfg.User, cfg.Password = role, pw
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			conn.Close(ctx)
		}
	})
	b.Run("mariadb", func(b *testing.B) {
		db := testenv.MariaDB(b)
		user := testenv.UniqueName("raw_")
		db.CreateUser(b, user, "%", "initial-pw-123")
		admin := db.DB(b)
		for b.Loop() {
			pw := secret.Token(24).Reveal()
			if _, err := admin.ExecContext(ctx, "ALTER USER '"+user+"'@'%' IDENTIFIED BY '"+pw+"'"); err != nil {
				b.Fatal(err)
			}
			cfg := mysql.NewConfig()
			cfg.Net, cfg.Addr, cfg.User, cfg.Passwd = "tcp", fmt.Sprintf("%s:%d", db.Host, db.Port), user, pw
			c, err := sql.Open("mysql", cfg.FormatDSN())
			if err != nil {
				b.Fatal(err)
			}
			if err := c.PingContext(ctx); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
	b.Run("redis", func(b *testing.B) {
		srv := testenv.Redis(b, true)
		srv.Do(b, "ACL", "SETUSER", "raw", "on", ">initial-pw-123", "~*", "+@all")
		for b.Loop() {
			pw := secret.Token(24).Reveal()
			srv.Do(b, "ACL", "SETUSER", "raw", "resetpass", ">"+pw)
			cl := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Username: "raw", Password: pw, MaxRetries: -1, DisableIdentity: true, PoolSize: 1})
			if err := cl.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			cl.Close()
		}
	})
}
