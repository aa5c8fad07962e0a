package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrSessionUsed reports an enrollment session whose ID was consumed
// before: its nonce has been used once.
var ErrSessionUsed = errors.New("session already used")

// consumedSweep bounds the expired rows ConsumeSession deletes per call, so
// that one call's cost stays small after a long idle time; each call deletes
// more than it adds, so the table stays near the sessions live at once.
const consumedSweep = 64

// ConsumeSession records a session's ID as used, in one transaction with
// the deletion of up to consumedSweep IDs that expired before now. A second
// call with the same ID returns an error wrapping ErrSessionUsed, whichever
// replica sharing the database makes it. expires is when the session's token
// stops opening, after which its ID is no longer needed.
func (s *SQLite) ConsumeSession(ctx context.Context, id []byte, expires time.Time) error {
	if len(id) == 0 {
		return errors.New("consume session: empty ID")
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("consume session: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM consumed_sessions WHERE id IN
		(SELECT id FROM consumed_sessions WHERE expires < ? ORDER BY expires LIMIT ?)`,
		formatTime(time.Now()), consumedSweep); err != nil {
		return fmt.Errorf("consume session: sweep: %w", err)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO consumed_sessions (id, expires) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`,
		id, formatTime(expires))
	if err != nil {
		return fmt.Errorf("consume session: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("consume session: %w", err)
	} else if n == 0 {
		return ErrSessionUsed
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("consume session: %w", err)
	}
	return nil
}
