package store

import (
	"context"
	"database/sql"
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
}

// RecordIdentity notes an identity certificate issued to an admitted host.
func (s *SQLite) RecordIdentity(ctx context.Context, r IdentityRecord) error {
	if r.Serial == "" || r.HostID == "" {
		return fmt.Errorf("record identity: %w: serial and host are required", ErrInvalid)
	}
	if _, err := s.write.ExecContext(ctx, `INSERT INTO identities (serial, host_id, issued, not_after) VALUES (?, ?, ?, ?)`,
		r.Serial, r.HostID, formatTime(r.Issued), formatTime(r.NotAfter)); err != nil {
		return fmt.Errorf("record identity %s: %w", r.Serial, err)
	}
	return nil
}

// revokeIdentities revokes the host's identities that are not revoked yet,
// in the transaction that takes the host out of admission.
func revokeIdentities(ctx context.Context, tx *sql.Tx, hostID, at string) error {
	if _, err := tx.ExecContext(ctx, `UPDATE identities SET revoked = ? WHERE host_id = ? AND revoked IS NULL`, at, hostID); err != nil {
		return fmt.Errorf("revoke identities: %w", err)
	}
	return nil
}

// RevokedIdentities returns the revoked identities that have not expired at
// now, oldest revocation first: what the CRL lists.
func (s *SQLite) RevokedIdentities(ctx context.Context, now time.Time) ([]IdentityRecord, error) {
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

// IdentityRevoked reports whether the identity with the serial was revoked.
func (s *SQLite) IdentityRevoked(ctx context.Context, serial string) (bool, error) {
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM identities WHERE serial = ? AND revoked IS NOT NULL`, serial).Scan(&n); err != nil {
		return false, fmt.Errorf("identity %s: %w", serial, err)
	}
	return n > 0, nil
}
