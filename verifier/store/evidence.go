package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"
)

// Evidence parts stored once by their hash. An attestation's event log
// (tens of KiB to a few MiB, the same for every host booting one
// firmware), EK certificate (the same at every attestation of a host) and
// boot state go to the table evidence_blobs, keyed by their SHA-256, and
// the attestation's row holds the 32-byte hashes; the other parts (nonce,
// quote, signature, PCRs, AK, a few hundred bytes each and new at every
// attestation) stay in the row. Attestations recorded before schema
// version 6 hold every part inline; Attestation reads either form.
//
// A blob is written with INSERT … ON CONFLICT DO NOTHING, so a boot storm
// of hosts sending one log writes it once and, once it is committed, takes
// no lock on it (on PostgreSQL, hosts inserting a new blob together wait
// for the first to commit); it is
// deleted by Prune once no attestation references it. The references are
// foreign keys: a blob cannot be deleted while an attestation names it.

// blobRef is the hash of one evidence part, nil for a nil part (stored as
// NULL, so that nil and empty parts stay apart).
func blobRef(b []byte) []byte {
	if b == nil {
		return nil
	}
	h := sha256.Sum256(b)
	return h[:]
}

// putBlob stores b under its hash ref, unless it is stored already.
func putBlob(ctx context.Context, tx *txn, ref, b []byte) error {
	if ref == nil {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO evidence_blobs (sha256, bytes) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING`,
		ref, b); err != nil {
		return fmt.Errorf("store evidence blob: %w", err)
	}
	return nil
}

// Limits bound what the store keeps of a host's failed attestations.
type Limits struct {
	// StoredFailures is how many failed attestations of one host are
	// stored, with their evidence, within any FailureWindow (by their
	// attestation times). A failure beyond it is still decided and
	// applied in full (host quarantined, identities revoked, counted on
	// its incident with its reasons, Incident.Unrecorded incremented),
	// but its attestation and evidence are not stored. A pass, and a
	// failure that opens or reopens an incident, are always stored.
	// At least 1.
	StoredFailures int
	// FailureWindow is the window StoredFailures counts in; positive.
	FailureWindow time.Duration
	// IncidentFailures bounds the failed attestations stored for one
	// incident, whatever the window: what retention keeps while the
	// incident is unresolved. Failures beyond it are counted as above.
	// At least 1.
	IncidentFailures int
}

// DefaultLimits are the limits of a store until SetLimits: 10 stored
// failures per host per hour, 50 per incident (as many as an incident
// bundle holds).
var DefaultLimits = Limits{StoredFailures: 10, FailureWindow: time.Hour, IncidentFailures: 50}

// MaxStoredFailures bounds Limits.StoredFailures.
const MaxStoredFailures = 10000

// Validate reports limits SetLimits refuses.
func (l Limits) Validate() error {
	switch {
	case l.StoredFailures < 1 || l.StoredFailures > MaxStoredFailures:
		return fmt.Errorf("%w: stored failures %d not within 1 to %d", ErrInvalid, l.StoredFailures, MaxStoredFailures)
	case l.FailureWindow <= 0:
		return fmt.Errorf("%w: failure window %v not positive", ErrInvalid, l.FailureWindow)
	case l.IncidentFailures < 1 || l.IncidentFailures > MaxStoredFailures:
		return fmt.Errorf("%w: stored failures per incident %d not within 1 to %d", ErrInvalid, l.IncidentFailures, MaxStoredFailures)
	}
	return nil
}

// SetLimits puts l in force for the attestations recorded from now on; it
// is safe to call at any time. Invalid limits (Validate) are refused with
// an error wrapping ErrInvalid and the limits in force stay.
func (s *DB) SetLimits(l Limits) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("set store limits: %w", err)
	}
	s.lim.Store(&l)
	return nil
}

// limits returns the limits in force.
func (s *DB) limits() Limits {
	if l := s.lim.Load(); l != nil {
		return *l
	}
	return DefaultLimits
}

// underFailureLimit reports whether a failure of hostID at time at that
// joins incident is stored: hostID has stored fewer than l.StoredFailures
// failed attestations with times after at-l.FailureWindow, and incident
// holds fewer than l.IncidentFailures. It reads at most that many rows of
// two indexes.
func underFailureLimit(ctx context.Context, tx *txn, hostID string, incident int64, at time.Time, l Limits) (bool, error) {
	var inWindow, inIncident int
	err := tx.QueryRowContext(ctx, `
		SELECT
			(SELECT COUNT(*) FROM (
				SELECT 1 FROM attestations
				WHERE host_id = ? AND verdict = 'fail' AND time > ?
				LIMIT ?) w),
			(SELECT COUNT(*) FROM (
				SELECT 1 FROM incident_attestations WHERE incident_id = ? LIMIT ?) i)`,
		hostID, formatTime(at.Add(-l.FailureWindow)), l.StoredFailures, incident, l.IncidentFailures).Scan(&inWindow, &inIncident)
	if err != nil {
		return false, fmt.Errorf("count stored failures: %w", err)
	}
	return inWindow < l.StoredFailures && inIncident < l.IncidentFailures, nil
}
