package rotation

import (
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// InPlaceNote is what an in_place rotation means for the previous version.
// An in_place rotation has no grace period: the target holds one secret, so
// the old one stops working the moment the new one is applied, and a
// rollback means re-applying it (rollback --to-version).
const InPlaceNote = "in_place: the previous password stopped working when the new one was applied; there is no grace period, and going back means re-applying it (rollback --to-version)"

// Info is the public view of a journal row (a rotation, rollback or restore):
// the JSON the API, the client and the CLI's --json output share. It holds no
// secret.
type Info struct {
	RotationID  int64      `json:"rotation_id"`
	ID          string     `json:"id"`
	Kind        string     `json:"kind"`
	Step        string     `json:"step"`
	Open        bool       `json:"open"`
	Strategy    string     `json:"strategy"`
	FromVersion int        `json:"from_version"`
	ToVersion   int        `json:"to_version"`
	Attempt     int        `json:"attempt"`
	Actor       string     `json:"actor"`
	Reason      string     `json:"reason,omitempty"`
	StartedAt   time.Time  `json:"started_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	GraceEndsAt *time.Time `json:"grace_ends_at,omitempty"`
	DueAt       *time.Time `json:"due_at,omitempty"`
	ErrorClass  string     `json:"error_class,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	FailedStep  string     `json:"failed_step,omitempty"`
	Recovery    string     `json:"recovery,omitempty"`
	// StaysValid names the version a forced resolve left valid on the
	// target (its retire had failed).
	StaysValid int `json:"stays_valid,omitempty"`
	// Note says what the strategy means for the previous version (set for
	// in_place: it stopped working when the new one was applied).
	Note string `json:"note,omitempty"`
}

// InfoOf returns the public view of r (nil for nil).
func InfoOf(r *store.Rotation) *Info {
	if r == nil {
		return nil
	}
	d := decodeData(r)
	out := &Info{
		RotationID: r.ID, ID: r.CredentialID, Kind: r.Kind, Step: r.Step, Open: r.Open, Strategy: r.Strategy,
		FromVersion: r.FromVersion, ToVersion: r.ToVersion, Attempt: r.Attempt, Actor: r.Actor, Reason: r.Reason,
		StartedAt: r.StartedAt, UpdatedAt: r.UpdatedAt, FinishedAt: r.FinishedAt, GraceEndsAt: r.GraceEndsAt,
		FailedStep: d.FailedStep, Recovery: d.Recovery, StaysValid: StaysValid(r),
	}
	if r.Strategy == string(rotator.InPlace) && r.Kind == KindRotate {
		out.Note = InPlaceNote
		out.GraceEndsAt = nil // there is none
	}
	if r.LastError != "" {
		out.ErrorClass, out.LastError = r.ErrorClass, r.LastError
	}
	if r.Open && r.Step != StepGrace {
		due := r.DueAt
		out.DueAt = &due
	}
	return out
}
