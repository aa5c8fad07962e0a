package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3/database"

	"github.com/bootgate/bootgate/internal/textsafe"
)

// dialect is what differs between the SQL databases the store runs on. The
// queries are written once, in the subset both understand, with "?"
// placeholders; the migrations are templates that name the few column
// types and constructs that differ (migrationsFor).
type dialect struct {
	name  string
	goose database.Dialect
	// dollar: placeholders are $1, $2, … instead of ?.
	dollar bool
	// write is how write transactions begin: SQLite's single write
	// connection begins IMMEDIATE (its DSN says so) and needs nothing;
	// PostgreSQL's are READ COMMITTED, each statement seeing what was
	// committed before it, and are serialized where it matters by locks:
	// a host's admission lock (lockHost), row locks.
	write *sql.TxOptions
	// retryable reports an error after which a write transaction is run
	// again: PostgreSQL's serialization failures and deadlocks.
	retryable func(error) bool
	// tableExists is a query of one "?" parameter, a table name, whose one
	// row counts the tables of that name (0 or 1).
	tableExists string
	// forUpdate ends a SELECT whose rows the transaction goes on to
	// change: PostgreSQL locks them; SQLite's one writer needs nothing.
	forUpdate string
	// lockHost, when not empty, takes a transaction-scoped lock of two
	// "?" integer parameters (lockHost's namespace and key).
	lockHost string

	rebound sync.Map // query → query with $n placeholders
}

var (
	sqliteDialect = &dialect{
		name:        "sqlite",
		goose:       database.DialectSQLite3,
		retryable:   func(error) bool { return false },
		tableExists: `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`,
	}
	postgresDialect = &dialect{
		name:        "postgres",
		goose:       database.DialectPostgres,
		dollar:      true,
		write:       &sql.TxOptions{Isolation: sql.LevelReadCommitted},
		retryable:   pgRetryable,
		tableExists: `SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = ?`,
		forUpdate:   " FOR UPDATE",
		lockHost:    `SELECT pg_advisory_xact_lock(CAST(? AS INTEGER), CAST(? AS INTEGER))`,
	}
)

// pgRetryable reports a PostgreSQL serialization failure (40001) or
// deadlock (40P01), or an evidence blob that Prune deleted while an Apply
// on another connection was referencing it (a foreign key violation,
// 23503, of an attestation's reference to evidence_blobs): the transaction
// was rolled back and can be run again (it then stores the blob again, or
// finds it referenced and keeps it).
func pgRetryable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "40001", "40P01":
		return true
	case "23503":
		return pe.TableName == "attestations" && strings.HasSuffix(pe.ConstraintName, "_sha256_fkey") ||
			pe.TableName == "evidence_blobs"
	}
	return false
}

// bind rewrites query's ? placeholders for the dialect. Question marks in
// quoted literals and identifiers are left alone.
func (d *dialect) bind(query string) string {
	if !d.dollar || !strings.Contains(query, "?") {
		return query
	}
	if q, ok := d.rebound.Load(query); ok {
		return q.(string)
	}
	var b strings.Builder
	n := 0
	var quote byte
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	q := b.String()
	d.rebound.Store(query, q)
	return q
}

// storable returns args with every string made text both databases hold
// (textsafe.Storable): a NUL byte or bytes that are not UTF-8, from a host,
// a certificate or an operator, would make PostgreSQL refuse the whole
// write (an attestation then not recorded at all), and SQLite would store
// what PostgreSQL cannot. Reads go through it too, so that a lookup finds
// what was written. Byte slices (BLOB columns) pass unchanged. args is
// copied only when a string changes.
func storable(args []any) []any {
	out := args
	copied := false
	for i, a := range args {
		s, ok := a.(string)
		if !ok {
			continue
		}
		if t := textsafe.Storable(s); t != s {
			if !copied {
				out, copied = slices.Clone(args), true
			}
			out[i] = t
		}
	}
	return out
}

// conn is a database handle whose queries are written with ? placeholders.
type conn struct {
	*sql.DB
	d *dialect
}

func (c conn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return c.DB.ExecContext(ctx, c.d.bind(query), storable(args)...)
}

func (c conn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return c.DB.QueryContext(ctx, c.d.bind(query), storable(args)...)
}

func (c conn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return c.DB.QueryRowContext(ctx, c.d.bind(query), storable(args)...)
}

// txn is a transaction whose queries are written with ? placeholders.
type txn struct {
	*sql.Tx
	d *dialect
}

func (t *txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, t.d.bind(query), storable(args)...)
}

func (t *txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.d.bind(query), storable(args)...)
}

func (t *txn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.d.bind(query), storable(args)...)
}

// hostLockSpace is the first key of the hosts' admission locks, so that
// they share no key with other advisory locks on the database (goose's
// migration lock is a one-key lock, a separate space): "bgh1".
const hostLockSpace int32 = 0x62676831

// lockHost takes hostID's admission lock for the rest of tx, waiting for
// the transaction that holds it to end. Every transaction that reads or
// changes a host's admission state (its state, its unresolved incident,
// its identities) takes it first, so that on PostgreSQL such
// transactions of one host, from any appliance, run one after the other,
// and each, at READ COMMITTED, reads what the one before it committed;
// transactions of different hosts run side by side. Host IDs hash to 32
// bits: two hosts that share a key merely wait for each other. On SQLite,
// whose single writer serializes every write transaction, it does nothing.
func lockHost(ctx context.Context, tx *txn, hostID string) error {
	if tx.d.lockHost == "" {
		return nil
	}
	h := fnv.New32a()
	h.Write([]byte(hostID))
	if _, err := tx.ExecContext(ctx, tx.d.lockHost, hostLockSpace, int32(h.Sum32())); err != nil {
		return fmt.Errorf("lock host %q: %w", hostID, err)
	}
	return nil
}

// maxAttempts bounds how often a write transaction is run when the
// database keeps reporting serialization failures; the pauses between
// them add up to at most about a second.
const maxAttempts = 20

// inTx runs f in a write transaction on db and commits it. When the
// database rolls the transaction back for a serialization failure or a
// deadlock (PostgreSQL, with another appliance), f runs again in a new
// transaction, up to maxAttempts times, after a short randomized pause; f
// must therefore have no effect outside the transaction until inTx
// returns nil.
func inTx(ctx context.Context, db conn, f func(*txn) error) error {
	for attempt := 1; ; attempt++ {
		err := runTx(ctx, db, db.d.write, f)
		if err == nil || !db.d.retryable(err) || attempt == maxAttempts {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff(attempt)):
		}
	}
}

func runTx(ctx context.Context, db conn, opts *sql.TxOptions, f func(*txn) error) error {
	t, err := db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { _ = t.Rollback() }() // no-op after Commit
	if err := f(&txn{Tx: t, d: db.d}); err != nil {
		return err
	}
	return t.Commit()
}

// backoff is the pause before a write transaction's attempt+1st run:
// random, so that writers that collided do not collide again in step, up
// to a bound that doubles with each attempt from 1 ms to maxBackoff.
func backoff(attempt int) time.Duration {
	bound := min(maxBackoff, time.Millisecond<<min(attempt-1, 16))
	return time.Duration(rand.Int64N(int64(bound))) + 1
}

// maxBackoff bounds one pause between attempts.
const maxBackoff = 64 * time.Millisecond
