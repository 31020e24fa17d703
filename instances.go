package credential

import (
	"time"

	"github.com/nebula-credential/nebula-credential/rotation"
)

// ClusterStatus is what `nebula-credential status` and GET /v1/status show:
// the server instances sharing the store and who holds each open rotation.
type ClusterStatus struct {
	// At is the time of the answering instance when it read the store.
	At time.Time `json:"at"`
	// Self is the ID of the instance that answered ("" for a local store).
	Self string `json:"self,omitempty"`
	// DeadAfter is how long an instance may miss heartbeats before it is
	// shown as dead.
	DeadAfter rotation.Duration `json:"dead_after"`
	Instances []InstanceInfo    `json:"instances"`
	// Leases lists the open rotations (retire jobs included), oldest first.
	Leases []LeaseInfo `json:"leases"`
}

// InstanceInfo is one server instance, as of its last heartbeat.
type InstanceInfo struct {
	ID            string    `json:"id"`
	Host          string    `json:"host"`
	Address       string    `json:"address"`
	Version       string    `json:"version"`
	StartedAt     time.Time `json:"started_at"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	// Alive: the last heartbeat is at most DeadAfter old.
	Alive bool `json:"alive"`
}

// LeaseInfo is one open rotation and the instance whose lease it is under.
type LeaseInfo struct {
	CredentialID string `json:"credential_id"`
	RotationID   int64  `json:"rotation_id"`
	Kind         string `json:"kind"`
	Step         string `json:"step"`
	// Owner is the instance that last held the lease ("" if never leased).
	Owner string `json:"owner,omitempty"`
	// Held: the lease has not run out; Owner is working on the rotation now.
	// A free lease is taken by whichever scheduler reaches it at DueAt.
	Held       bool      `json:"held"`
	LeaseUntil time.Time `json:"lease_until"`
	DueAt      time.Time `json:"due_at"`
	// OwnerAlive: Owner is a live instance (by heartbeat).
	OwnerAlive bool `json:"owner_alive"`
}
