package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	// The pure-Go SQLite driver, registered as "sqlite".
	_ "modernc.org/sqlite"
)

// maxReaders bounds the read connection pool.
const maxReaders = 4

// timeLayout is how times are stored: UTC RFC 3339 with a fixed nine-digit
// fraction, so that stored times also sort lexically.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// sqliteOptions is the DSN query every connection to an SQLite store file
// uses: foreign keys on, a busy timeout, and synchronous=FULL, so that in
// WAL mode every commit is on disk (the WAL synced) before it returns: a
// quarantine, a revocation, an audit entry or a bound lease that was
// committed survives a power loss. (NORMAL, SQLite's usual choice with
// WAL, may lose the last commits on power loss.)
const sqliteOptions = "_busy_timeout=5000&_foreign_keys=1&_synchronous=FULL"

// OpenSQLite opens the SQLite database file at path, creating it and its
// schema when missing, and migrates it (Migrate: the schema lives in
// migrations/*.sql). The connections use WAL journaling and sqliteOptions
// (synchronous=FULL: committed writes survive power loss). It refuses a
// database whose schema version is newer than this code knows (the error
// wraps ErrSchemaTooNew).
func OpenSQLite(path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("open sqlite store: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	ctx := context.Background()

	write, err := sql.Open("sqlite", fileURI(abs)+"?"+sqliteOptions+"&_journal_mode=WAL&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)

	if err := checkJournalMode(ctx, write); err != nil {
		_ = write.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	if err := Migrate(ctx, write); err != nil {
		_ = write.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}

	read, err := sql.Open("sqlite", fileURI(abs)+"?"+sqliteOptions+"&_query_only=1")
	if err != nil {
		_ = write.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	read.SetMaxOpenConns(maxReaders)
	read.SetMaxIdleConns(maxReaders)
	if err := read.PingContext(ctx); err != nil {
		_ = read.Close()
		_ = write.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	return &DB{d: sqliteDialect, write: conn{write, sqliteDialect}, read: conn{read, sqliteDialect}, now: time.Now, replica: newReplicaID()}, nil
}

// fileURI turns an absolute path into an SQLite "file:" URI, escaping the
// characters a URI would otherwise interpret.
func fileURI(abs string) string {
	r := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")
	return "file:" + r.Replace(filepath.ToSlash(abs))
}

// checkJournalMode verifies that the write connection switched the database
// to WAL, which concurrent reads during a write depend on.
func checkJournalMode(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("read journal mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, want wal (is the file on a filesystem that supports it?)", mode)
	}
	return nil
}
