package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrSessionUsed is returned by ConsumeSession for a session that was
// consumed before.
var ErrSessionUsed = errors.New("the session was already used")

// Bounds of ConsumeSession's input, which bound the table: at most
// MaxSessionIDLen bytes per row, kept at most MaxSessionLife.
const (
	MaxSessionIDLen = 64
	MaxSessionLife  = 24 * time.Hour
)

// SessionSweepMargin is how long past its expiry a used session's row is
// kept. A session's expiry is checked by the clock of the appliance that
// opened it, its row swept by the clock of whichever appliance consumes
// another session: were rows swept at their expiry, an appliance whose
// clock ran ahead would delete a row that another, whose clock lags, still
// takes for live, and the session could be consumed again there. Keeping
// rows this long tolerates clocks that disagree by less than it; appliances
// on one database must keep their clocks in step (NTP) well within it.
const SessionSweepMargin = 10 * time.Minute

// ConsumeSession marks the enrollment session id (1 to MaxSessionIDLen
// bytes, e.g. a random nonce or a token's MAC) used until expires, which
// must be in the future and at most MaxSessionLife away. It returns an
// error wrapping ErrSessionUsed when id was consumed before and has not
// expired: of several appliances on one database, exactly one consumes a
// session. Rows whose session has expired are deleted in the same
// transaction once they are SessionSweepMargin past their expiry, so the
// table holds only live sessions and the recently expired; the caller
// refuses a token past its expiry itself, before calling. Invalid input is refused
// with ErrInvalid and changes nothing.
func (s *DB) ConsumeSession(ctx context.Context, id []byte, expires time.Time) error {
	now := s.now()
	switch {
	case len(id) == 0 || len(id) > MaxSessionIDLen:
		return fmt.Errorf("consume session: %w: ID of %d bytes (want 1 to %d)", ErrInvalid, len(id), MaxSessionIDLen)
	case !expires.After(now):
		return fmt.Errorf("consume session: %w: expired at %s", ErrInvalid, expires.UTC().Format(time.RFC3339))
	case expires.Sub(now) > MaxSessionLife:
		return fmt.Errorf("consume session: %w: expiry %s is more than %v away", ErrInvalid, expires.UTC().Format(time.RFC3339), MaxSessionLife)
	}
	used := false
	// The primary key alone makes the insert single-use, at any isolation
	// level: on PostgreSQL this runs READ COMMITTED, so that appliances
	// deleting the same expired rows wait for each other instead of
	// failing to serialize.
	err := inTx(ctx, s.write, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM used_sessions WHERE expires <= ?`, formatTime(now.Add(-SessionSweepMargin))); err != nil {
			return fmt.Errorf("delete expired: %w", err)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO used_sessions (id, expires) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`,
			id, formatTime(expires))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		used = n == 0
		return nil
	})
	if err != nil {
		return fmt.Errorf("consume session: %w", err)
	}
	if used {
		return fmt.Errorf("consume session: %w", ErrSessionUsed)
	}
	return nil
}
