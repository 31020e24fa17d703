package redis

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
)

// connect logs in as t on one fresh connection and returns the client once
// authenticated (go-redis connects lazily, so a PING forces the login; a NOPERM
// on PING still means the login worked).
func (r *Rotator) connect(ctx context.Context, t target) (*redis.Client, error) {
	timeout := rotator.ConnectTimeout(ctx, r.cfg.connectTimeout())
	c := redis.NewClient(&redis.Options{
		Addr:            net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))),
		Username:        t.Username,
		Password:        t.Password.Reveal(),
		Protocol:        2, // AUTH user pass; replies as flat arrays
		DialTimeout:     timeout,
		ReadTimeout:     r.cfg.commandTimeout(),
		WriteTimeout:    r.cfg.commandTimeout(),
		PoolSize:        1,
		MaxRetries:      -1, // the engine retries, with its own backoff
		DialerRetries:   1,
		DisableIdentity: true, // no CLIENT SETINFO
		// A deadline of ctx bounds a command too (the earlier of it and
		// Read/WriteTimeout), so the login below gets the connect timeout.
		ContextTimeoutEnabled: true,
	})
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil && !isPermission(err) {
		c.Close()
		return nil, dbrot.AtAddr(c.Options().Addr, err)
	}
	return c, nil
}

func isPermission(err error) bool {
	var se redis.Error
	return errors.As(err, &se) && redis.IsPermissionError(err)
}

// db is how the shared login steps reach the server.
func (r *Rotator) db() dbrot.Driver[target, *redis.Client] {
	return dbrot.Driver[target, *redis.Client]{Connect: r.connect, ClassOf: classOf,
		Close: func(c *redis.Client) { c.Close() },
		Pool:  &r.pool,
		Ping: func(ctx context.Context, c *redis.Client) error {
			if err := c.Ping(ctx).Err(); err != nil && !isPermission(err) {
				return err
			}
			return nil
		},
		LoginKey: func(t target) string {
			return strings.Join([]string{t.Host, strconv.Itoa(int(t.Port)), t.Username, t.Password.Reveal()}, "\x00")
		}}
}

// manager is the connection that changes the ACL.
type manager struct {
	*redis.Client
	file    string
	fileSet bool
	release func(error) // ends the step's use of the connection
}

// manager connects as admin_credential when base names one, otherwise as the
// first of logins that logs in.
func (r *Rotator) manager(ctx context.Context, res rotator.Resolver, base target, op string, logins ...target) (*manager, error) {
	adm, ok, err := admin(ctx, res, base, op)
	if err != nil {
		return nil, err
	}
	c, release, err := r.db().Manager(ctx, op, base, adm, ok, logins)
	if err != nil {
		return nil, err
	}
	return &manager{Client: c, release: release}, nil
}

// aclUser is what ACL GETUSER says.
type aclUser struct {
	flags     []string
	passwords []string // lowercase hex SHA-256
}

// getUser reads the user's ACL. A missing user is ClassConfig: ACL SETUSER
// would silently create it.
func (m *manager) getUser(ctx context.Context, op, name string) (aclUser, error) {
	v, err := m.Do(ctx, "ACL", "GETUSER", name).Result()
	if errors.Is(err, redis.Nil) {
		return aclUser{}, rotator.Errorf(rotator.ClassConfig, op, "ACL user %q does not exist", name)
	}
	if err != nil {
		return aclUser{}, classify(op, "ACL GETUSER", err)
	}
	var u aclUser
	pairs, ok := v.([]any)
	if !ok {
		return u, rotator.Errorf(rotator.ClassUnknown, op, "unexpected ACL GETUSER reply %T", v)
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		key, _ := pairs[i].(string)
		list, _ := pairs[i+1].([]any)
		for _, x := range list {
			s, _ := x.(string)
			switch key {
			case "flags":
				u.flags = append(u.flags, s)
			case "passwords":
				u.passwords = append(u.passwords, s)
			}
		}
	}
	return u, nil
}

// setUser applies ACL rules to an existing user. Arguments travel as separate
// RESP strings: nothing is parsed out of the user name.
func (m *manager) setUser(ctx context.Context, op, name string, rules ...any) error {
	args := append([]any{"ACL", "SETUSER", name}, rules...)
	return classify(op, "ACL SETUSER", m.Do(ctx, args...).Err())
}

// aclFile returns the server's aclfile setting ("" when it has none).
func (m *manager) aclFile(ctx context.Context, op string) (string, error) {
	if m.fileSet {
		return m.file, nil
	}
	v, err := m.ConfigGet(ctx, "aclfile").Result()
	if err != nil {
		return "", classify(op, "CONFIG GET", err)
	}
	m.file, m.fileSet = v["aclfile"], true
	return m.file, nil
}

// save writes the ACL to the server's ACL file, if it has one, so a restart
// keeps the change.
func (m *manager) save(ctx context.Context, op string) error {
	file, err := m.aclFile(ctx, op)
	if err != nil || file == "" {
		return err
	}
	return classify(op, "ACL SAVE", m.Do(ctx, "ACL", "SAVE").Err())
}
