package credential

import "time"

// ConsumerReport is what a consumer of credentials (an agent, a pool on the
// HTTP client) tells the server, as registration and as heartbeat: who it is
// and which version of each credential it delivered. It is the body of
// POST /v1/consumers. It never carries a secret.
type ConsumerReport struct {
	// ID identifies the consumer across its restarts (an agent keeps it in its
	// state file). 1–128 characters of [A-Za-z0-9._:@/-].
	ID   string `json:"id"`
	Name string `json:"name"`
	Host string `json:"host"`
	// Kind is "agent", "run", "pool", ...
	Kind        string             `json:"kind"`
	Credentials []ConsumerDelivery `json:"credentials"`
}

// ConsumerDelivery is one credential of a ConsumerReport.
type ConsumerDelivery struct {
	ID string `json:"id"`
	// Version is the version the consumer delivered (wrote, injected) or, for
	// a pool, the only version it still holds connections on.
	Version int `json:"version"`
	// ActionOK reports that the action after delivery (a reload signal, a
	// command, a restart) succeeded; true when there is none.
	ActionOK bool `json:"action_ok"`
	// ActionError says why the action failed; never secret.
	ActionError string `json:"action_error,omitempty"`
	// RefreshSeconds is the longest the consumer serves a version it cached
	// before it reads the credential again (a cache TTL, a poll interval);
	// 0 when it reads on every use or follows the watch stream.
	RefreshSeconds float64 `json:"refresh_seconds,omitempty"`
	// DrainTimeoutSeconds, for a pool, is how long connections opened with
	// an old version may stay open after current moved (pgxswap, sqlswap).
	// A grace period shorter than refresh plus drain timeout makes doctor
	// and policy set warn.
	DrainTimeoutSeconds float64 `json:"drain_timeout_seconds,omitempty"`
}

// ConsumerAck is the server's answer to a ConsumerReport.
type ConsumerAck struct {
	// HeartbeatSeconds is how often the consumer should report again; one
	// silent for TimeoutSeconds no longer counts as live.
	HeartbeatSeconds float64 `json:"heartbeat_seconds"`
	TimeoutSeconds   float64 `json:"timeout_seconds"`
}

// ConsumerInfo is one consumer of one credential as the server knows it
// (GET /v1/consumers).
type ConsumerInfo struct {
	ConsumerID   string `json:"consumer_id"`
	CredentialID string `json:"credential_id"`
	Name         string `json:"name"`
	Host         string `json:"host"`
	Kind         string `json:"kind"`
	Version      int    `json:"version"`
	// CurrentVersion is the credential's current version now (0 if it no
	// longer exists); UpToDate is Version == CurrentVersion.
	CurrentVersion int    `json:"current_version"`
	UpToDate       bool   `json:"up_to_date"`
	ActionOK       bool   `json:"action_ok"`
	ActionError    string `json:"action_error,omitempty"`
	// RefreshSeconds and DrainTimeoutSeconds are what the consumer last
	// reported (see ConsumerDelivery); 0 when not reported.
	RefreshSeconds      float64 `json:"refresh_seconds,omitempty"`
	DrainTimeoutSeconds float64 `json:"drain_timeout_seconds,omitempty"`
	// Live: a report came within the server's consumer timeout. Only live
	// consumers hold back an early end of grace.
	Live      bool      `json:"live"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}
