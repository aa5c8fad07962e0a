package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// IdentityRecord is a host identity certificate the appliance issued.
type IdentityRecord struct {
	Serial   string    `json:"serial"` // hex
	HostID   string    `json:"host_id"`
	Issued   time.Time `json:"issued"`
	NotAfter time.Time `json:"not_after"`
	Revoked  time.Time `json:"revoked,omitzero"`
	// Supersedes, when set, is the serial of the host's identity this one
	// renews: RecordIdentity revokes it in the same transaction.
	Supersedes string `json:"supersedes,omitempty"`
}

// ErrNotAdmitted is returned by RecordIdentity when the host is not admitted
// at the moment the identity would be recorded.
var ErrNotAdmitted = errors.New("the host is not admitted")

// ErrSuperseded is returned by RecordIdentity when the identity a renewal
// supersedes is not a valid identity of the host any more (revoked, or
// renewed already by a concurrent request): one identity renews once.
var ErrSuperseded = errors.New("the identity renewed is revoked or renewed already")

// identityRetention is how long expired identities are kept.
const identityRetention = 24 * time.Hour

// RecordIdentity notes an identity certificate issued to a host, in one
// transaction with a check that the host is admitted now: an identity issued
// while an operator quarantined the host (or a failure was recorded) is
// recorded as revoked, and ErrNotAdmitted returned, so that it is never
// handed out nor missing from the CRL. A renewal (r.Supersedes) revokes the
// identity it renews in the same transaction, or writes nothing and returns
// ErrSuperseded when that one is not valid now, so that renewing never adds
// a valid identity. Recording an identity for an admitted host revokes the
// host's others: it holds exactly one valid identity, so that neither
// renewing nor attesting in a loop piles up identities that work. Identities
// expired for a day are pruned.
func (s *DB) RecordIdentity(ctx context.Context, r IdentityRecord) error {
	if r.Serial == "" || r.HostID == "" {
		return fmt.Errorf("record identity: %w: serial and host are required", ErrInvalid)
	}
	var revoked any // NULL
	err := inTx(ctx, s.write, func(tx *txn) error {
		if err := lockHost(ctx, tx, r.HostID); err != nil {
			return err
		}
		var state string
		if err := tx.QueryRowContext(ctx, `SELECT state FROM hosts WHERE id = ?`, r.HostID).Scan(&state); err != nil {
			return fmt.Errorf("host %q: %w", r.HostID, err)
		}
		now := formatTime(s.now())
		revoked = nil
		if state != HostAdmitted {
			revoked = now
		} else {
			if r.Supersedes != "" {
				res, err := tx.ExecContext(ctx, `UPDATE identities SET revoked = ? WHERE serial = ? AND host_id = ? AND revoked IS NULL`,
					now, r.Supersedes, r.HostID)
				if err != nil {
					return fmt.Errorf("supersede %s: %w", r.Supersedes, err)
				}
				if n, err := res.RowsAffected(); err != nil {
					return fmt.Errorf("supersede %s: %w", r.Supersedes, err)
				} else if n == 0 {
					return fmt.Errorf("supersede %s: %w", r.Supersedes, ErrSuperseded)
				}
			}
			// The new identity replaces every other the host holds: an
			// admitted host has exactly one valid identity.
			if err := revokeIdentities(ctx, tx, r.HostID, now); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO identities (serial, host_id, issued, not_after, revoked) VALUES (?, ?, ?, ?, ?)`,
			r.Serial, r.HostID, formatTime(r.Issued), formatTime(r.NotAfter), revoked); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM identities WHERE not_after < ?`, formatTime(r.Issued.Add(-identityRetention))); err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record identity %s: %w", r.Serial, err)
	}
	if revoked != nil {
		return fmt.Errorf("record identity %s: %w", r.Serial, ErrNotAdmitted)
	}
	return nil
}

// revokeIdentities revokes the host's identities that are not revoked yet,
// in the transaction that takes the host out of admission.
func revokeIdentities(ctx context.Context, tx *txn, hostID, at string) error {
	if _, err := tx.ExecContext(ctx, `UPDATE identities SET revoked = ? WHERE host_id = ? AND revoked IS NULL`, at, hostID); err != nil {
		return fmt.Errorf("revoke identities: %w", err)
	}
	return nil
}

// RevokedIdentities returns the revoked identities that have not expired at
// now, oldest revocation first: what the CRL lists.
func (s *DB) RevokedIdentities(ctx context.Context, now time.Time) ([]IdentityRecord, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT serial, host_id, issued, not_after, revoked FROM identities
		WHERE revoked IS NOT NULL AND not_after > ? ORDER BY revoked, serial`, formatTime(now))
	if err != nil {
		return nil, fmt.Errorf("revoked identities: %w", err)
	}
	defer rows.Close()
	out := []IdentityRecord{}
	for rows.Next() {
		var r IdentityRecord
		var issued, notAfter, revoked string
		if err := rows.Scan(&r.Serial, &r.HostID, &issued, &notAfter, &revoked); err != nil {
			return nil, fmt.Errorf("revoked identities: %w", err)
		}
		for _, t := range []struct {
			s   string
			dst *time.Time
		}{{issued, &r.Issued}, {notAfter, &r.NotAfter}, {revoked, &r.Revoked}} {
			if *t.dst, err = parseTime(t.s); err != nil {
				return nil, fmt.Errorf("revoked identities: %w", err)
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// IdentityValid reports whether the identity with the serial was recorded
// and is not revoked: the appliance accepts no identity it has no record of.
func (s *DB) IdentityValid(ctx context.Context, serial string) (bool, error) {
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM identities WHERE serial = ? AND revoked IS NULL`, serial).Scan(&n); err != nil {
		return false, fmt.Errorf("identity %s: %w", serial, err)
	}
	return n > 0, nil
}
