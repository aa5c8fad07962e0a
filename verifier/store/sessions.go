package store

import (
	"context"
	"database/sql"
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

// ConsumeSession marks the enrollment session id (1 to MaxSessionIDLen
// bytes, e.g. a random nonce or a token's MAC) used until expires, which
// must be in the future and at most MaxSessionLife away. It returns an
// error wrapping ErrSessionUsed when id was consumed before and has not
// expired: of several appliances on one database, exactly one consumes a
// session. Rows whose session has expired are deleted in the same
// transaction, so the table holds only live sessions; the caller refuses a
// token past its expiry itself, before calling. Invalid input is refused
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
	err := inTxWith(ctx, s.write, &sql.TxOptions{Isolation: sql.LevelReadCommitted}, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM used_sessions WHERE expires <= ?`, formatTime(now)); err != nil {
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
