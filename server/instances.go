package server

import (
	"context"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// InstanceConfig is how this server announces itself to the others sharing
// its store (see docs/ha.md). Its ID is the rotation engine's lease owner.
type InstanceConfig struct {
	// Address is where this instance listens, as shown by `status` (set it
	// once known with Server.SetAddress).
	Address string
	// Version of nebula-credential, as shown by `status`.
	Version string
	// HeartbeatInterval is how often the instance records that it is alive
	// (default 10s; negative: never, for tools that only read).
	HeartbeatInterval time.Duration
	// DeadAfter: an instance whose last heartbeat is older is shown as dead
	// (default 3×HeartbeatInterval, 30s by default).
	DeadAfter time.Duration
	// Retention: rows of instances dead this long are deleted (default 24h).
	Retention time.Duration
}

func (c *InstanceConfig) setDefaults() {
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	if c.DeadAfter <= 0 {
		c.DeadAfter = 3 * max(c.HeartbeatInterval, time.Second)
	}
	if c.Retention <= 0 {
		c.Retention = 24 * time.Hour
	}
}

// instance runs the heartbeat of this server.
type instance struct {
	s       *Server
	cfg     InstanceConfig
	id      string
	host    string
	started time.Time
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	kick    chan struct{}

	mu      sync.Mutex
	address string
}

func newInstance(s *Server, cfg InstanceConfig) *instance {
	cfg.setDefaults()
	host, _ := os.Hostname()
	in := &instance{s: s, cfg: cfg, id: s.m.Engine().Owner(), host: host, started: s.clock(),
		address: cfg.Address, kick: make(chan struct{}, 1)}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	if cfg.HeartbeatInterval > 0 {
		in.wg.Add(1)
		go in.loop()
	}
	return in
}

func (in *instance) close() {
	in.cancel()
	in.wg.Wait()
}

// SetAddress sets the address this instance shows in `status` (the listener's,
// once known) and records it at once.
func (s *Server) SetAddress(addr string) {
	s.inst.mu.Lock()
	s.inst.address = addr
	s.inst.mu.Unlock()
	select {
	case s.inst.kick <- struct{}{}:
	default:
	}
}

// loop records a heartbeat at start, every HeartbeatInterval and when the
// address changes; it deletes the rows of instances dead for Retention.
func (in *instance) loop() {
	defer in.wg.Done()
	t := time.NewTicker(in.cfg.HeartbeatInterval)
	defer t.Stop()
	var lastPrune time.Time
	for {
		now := in.s.clock()
		in.mu.Lock()
		row := store.Instance{ID: in.id, Host: in.host, Address: in.address, Version: in.cfg.Version,
			StartedAt: in.started, LastHeartbeat: now}
		in.mu.Unlock()
		prune := now.Sub(lastPrune) > time.Hour
		ctx, cancel := context.WithTimeout(in.ctx, max(in.cfg.HeartbeatInterval, time.Second))
		err := in.s.m.Store().Update(ctx, func(tx store.Tx) error {
			if prune {
				if _, err := tx.DeleteInstancesSeenBefore(ctx, now.Add(-in.cfg.Retention)); err != nil {
					return err
				}
			}
			return tx.PutInstance(ctx, &row)
		})
		cancel()
		if err == nil && prune {
			lastPrune = now
		}
		if err != nil && in.ctx.Err() == nil {
			in.s.log.Warn("instance heartbeat", "err", err)
		}
		select {
		case <-in.ctx.Done():
			return
		case <-t.C:
		case <-in.kick:
		}
	}
}

// status serves GET /v1/status: the instances sharing the store and the
// lease holders of the open rotations the token's grants cover. Any token
// may ask; instance rows hold no secret.
func (s *Server) status(rq *request) error {
	out, err := ClusterStatus(rq.ctx, s.m.Store(), s.clock(), s.inst.cfg.DeadAfter, func(id string) bool { return acl.Visible(rq.tok.Grants, id) })
	if err != nil {
		return err
	}
	out.Self = s.inst.id
	return rq.respond(http.StatusOK, out)
}

// ClusterStatus reads the instances and the open rotations straight from a
// store; an instance is alive if its last heartbeat is at most deadAfter
// before now. visible (nil: all) filters rotations by credential ID. The CLI
// uses it on a local store.
func ClusterStatus(ctx context.Context, st store.Store, now time.Time, deadAfter time.Duration, visible func(string) bool) (*credential.ClusterStatus, error) {
	out := &credential.ClusterStatus{At: now, DeadAfter: rotation.Duration(deadAfter),
		Instances: []credential.InstanceInfo{}, Leases: []credential.LeaseInfo{}}
	err := st.View(ctx, func(tx store.Tx) error {
		ins, err := tx.ListInstances(ctx)
		if err != nil {
			return err
		}
		alive := map[string]bool{}
		out.Instances = out.Instances[:0]
		for _, in := range ins {
			ok := now.Sub(in.LastHeartbeat) <= deadAfter
			alive[in.ID] = ok
			out.Instances = append(out.Instances, credential.InstanceInfo{ID: in.ID, Host: in.Host, Address: in.Address,
				Version: in.Version, StartedAt: in.StartedAt, LastHeartbeat: in.LastHeartbeat, Alive: ok})
		}
		rs, err := tx.ListRotations(ctx, store.RotationFilter{OpenOnly: true})
		if err != nil {
			return err
		}
		out.Leases = out.Leases[:0]
		for _, r := range rs {
			if visible != nil && !visible(r.CredentialID) {
				continue
			}
			out.Leases = append(out.Leases, credential.LeaseInfo{CredentialID: r.CredentialID, RotationID: r.ID,
				Kind: r.Kind, Step: r.Step, Owner: r.LeaseOwner, Held: r.LeaseUntil.After(now),
				LeaseUntil: r.LeaseUntil, DueAt: r.DueAt, OwnerAlive: alive[r.LeaseOwner]})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out.Leases, func(i, j int) bool { return out.Leases[i].RotationID < out.Leases[j].RotationID })
	return out, nil
}
