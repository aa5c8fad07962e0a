package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Retention says which attestations Prune deletes.
type Retention struct {
	// MaxAge: attestations older than this (by their attestation time)
	// are deleted, except those kept (see Prune). Positive.
	MaxAge time.Duration
	// Batch bounds the attestations one Prune call deletes, and so its
	// transaction's work; 1 to MaxPruneBatch.
	Batch int
}

// DefaultRetention keeps 90 days of attestations and deletes at most 1000
// per Prune call.
var DefaultRetention = Retention{MaxAge: 90 * 24 * time.Hour, Batch: 1000}

// MaxPruneBatch bounds Retention.Batch.
const MaxPruneBatch = 10000

// Validate reports a Retention that Prune refuses.
func (r Retention) Validate() error {
	switch {
	case r.MaxAge <= 0:
		return fmt.Errorf("%w: retention max age %v not positive", ErrInvalid, r.MaxAge)
	case r.Batch < 1 || r.Batch > MaxPruneBatch:
		return fmt.Errorf("%w: retention batch %d not within 1 to %d", ErrInvalid, r.Batch, MaxPruneBatch)
	}
	return nil
}

// Pruned is what one Prune call deleted.
type Pruned struct {
	Attestations int // attestation rows, with their links to closed incidents
	Blobs        int // evidence blobs no attestation referenced any more
}

// Prune deletes, in one transaction, up to r.Batch attestations recorded
// before now-r.MaxAge, oldest first, with the evidence blobs only they
// referenced. It keeps, whatever their age: each host's latest attestation
// (Host.LastAttestationID) and latest pass (LastPass), every incident's
// first and last attestation, and every attestation attached to an
// incident that is not closed. A closed incident loses its links to the
// others (IncidentAttestations). Invalid r is refused with an error
// wrapping ErrInvalid and nothing is deleted. Pruned.Attestations below
// r.Batch means nothing older is left to delete now.
//
// Several appliances on one database may prune at once: they delete the
// same rows one after the other. Reading an attestation that is deleted
// meanwhile returns ErrNotFound.
func (s *DB) Prune(ctx context.Context, now time.Time, r Retention) (Pruned, error) {
	if err := r.Validate(); err != nil {
		return Pruned{}, fmt.Errorf("prune: %w", err)
	}
	cutoff := formatTime(now.Add(-r.MaxAge))
	var out Pruned
	err := inTx(ctx, s.write, func(tx *txn) error {
		out = Pruned{}
		rows, err := tx.QueryContext(ctx, `
			SELECT a.id, a.event_log_sha256, a.ek_cert_sha256, a.boot_state_sha256
			FROM attestations a
			WHERE a.time < ?
				AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.last_attestation_id = a.id)
				AND NOT (a.verdict = 'pass' AND NOT EXISTS (
					SELECT 1 FROM attestations p WHERE p.host_id = a.host_id AND p.verdict = 'pass' AND p.id > a.id))
				AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.first_attestation_id = a.id)
				AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.last_attestation_id = a.id)
				AND NOT EXISTS (SELECT 1 FROM incident_attestations ia JOIN incidents i ON i.id = ia.incident_id
					WHERE ia.attestation_id = a.id AND i.state <> ?)
			ORDER BY a.time, a.id
			LIMIT ?`, cutoff, IncidentClosed, r.Batch)
		if err != nil {
			return fmt.Errorf("find attestations: %w", err)
		}
		var ids []any
		refs := map[string][]byte{}
		for rows.Next() {
			var id int64
			var l, c, b blob
			if err := rows.Scan(&id, &l, &c, &b); err != nil {
				rows.Close()
				return fmt.Errorf("find attestations: %w", err)
			}
			ids = append(ids, id)
			for _, ref := range [][]byte{l, c, b} {
				if ref != nil {
					refs[string(ref)] = ref
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("find attestations: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		in := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ") + ")"
		if _, err := tx.ExecContext(ctx, `DELETE FROM incident_attestations WHERE attestation_id IN `+in, ids...); err != nil {
			return fmt.Errorf("unlink attestations: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM attestations WHERE id IN `+in, ids...)
		if err != nil {
			return fmt.Errorf("delete attestations: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		out.Attestations = int(n)
		for _, ref := range refs {
			res, err := tx.ExecContext(ctx, `
				DELETE FROM evidence_blobs WHERE sha256 = ?
					AND NOT EXISTS (SELECT 1 FROM attestations WHERE event_log_sha256 = ?)
					AND NOT EXISTS (SELECT 1 FROM attestations WHERE ek_cert_sha256 = ?)
					AND NOT EXISTS (SELECT 1 FROM attestations WHERE boot_state_sha256 = ?)`, ref, ref, ref, ref)
			if err != nil {
				return fmt.Errorf("delete evidence blob: %w", err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			out.Blobs += int(n)
		}
		return nil
	})
	if err != nil {
		return Pruned{}, fmt.Errorf("prune: %w", err)
	}
	if out.Attestations > 0 {
		s.changes.notify()
	}
	return out, nil
}
