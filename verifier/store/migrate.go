package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
)

// migrationFiles are the schema of the appliance's database, one SQL file
// per version (NNNNN_what.sql, goose's format): the store's tables and the
// DHCP gate's lease tables, which may share the store's file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// versionTable is where goose records the migrations applied.
const versionTable = "goose_db_version"

// legacyVersion is the newest schema version of the store before
// migrations were files (its schema_version table): migrations 1 to
// legacyVersion made exactly that schema.
const legacyVersion = 2

// ErrSchemaTooNew reports a database whose schema is newer than this code:
// a newer bootgate wrote it. It is refused, never written to.
var ErrSchemaTooNew = errors.New("database schema is newer than this bootgate")

// SchemaError is an error of Migrate that knows the versions involved. It
// wraps ErrSchemaTooNew when Database > Code.
type SchemaError struct {
	Database int64 // the database's schema version
	Code     int64 // the newest version this code has
	Err      error
}

func (e *SchemaError) Error() string {
	if errors.Is(e.Err, ErrSchemaTooNew) {
		return fmt.Sprintf("database schema version %d is newer than this bootgate supports (%d); upgrade bootgate", e.Database, e.Code)
	}
	return fmt.Sprintf("database schema version %d (this bootgate knows up to %d): %v", e.Database, e.Code, e.Err)
}

func (e *SchemaError) Unwrap() error { return e.Err }

// SchemaVersion is the newest schema version this code knows: the version
// of the last file under migrations/.
func SchemaVersion() int64 {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		panic(err) // the pattern is valid
	}
	var newest int64
	for _, n := range names {
		if v, err := goose.NumericComponent(n); err == nil {
			newest = max(newest, v)
		}
	}
	return newest
}

func newProvider(db *sql.DB) (*goose.Provider, error) {
	fsys, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(goose.DialectSQLite3, db, fsys,
		goose.WithDisableGlobalRegistry(true),
		goose.WithTableName(versionTable))
}

// Migrate brings the SQLite database db to SchemaVersion, applying every
// migration it lacks in order, each in its own transaction; goose records
// them in goose_db_version. A database made before migrations were files
// (the store's schema_version 1 or 2, lease tables with fewer columns) is
// adopted first: its versions are recorded as applied and its lease tables
// get the columns they lack. A database with a version newer than this
// code's, in goose_db_version or in schema_version, is refused with a
// *SchemaError wrapping ErrSchemaTooNew, and nothing is written to it.
//
// schema_version is kept as a fence (migration 4): Migrate sets it to
// SchemaVersion, so that a bootgate from before migrations were files,
// which refuses any version above 2, refuses this database too.
//
// OpenSQLite and the DHCP gate's OpenLeases call it; concurrent first
// opens of one new file by two processes may fail in one of them, which
// then succeeds when retried.
func Migrate(ctx context.Context, db *sql.DB) error {
	err := migrate(ctx, db)
	if err != nil && current(ctx, db) {
		// Another process (the appliance and an operator command, on a
		// new file) migrated it at the same moment: it is what this code
		// wants, and the error was the race's.
		return nil
	}
	return err
}

// current reports whether db is migrated exactly to this code's schema:
// goose's version and the fence both SchemaVersion().
func current(ctx context.Context, db *sql.DB) bool {
	newest := SchemaVersion()
	fence, err := fenceVersion(ctx, db)
	if err != nil || fence != newest {
		return false
	}
	var v int64
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version_id), 0) FROM `+versionTable).Scan(&v); err != nil {
		return false
	}
	return v == newest
}

func migrate(ctx context.Context, db *sql.DB) error {
	if err := adoptLegacy(ctx, db); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	p, err := newProvider(db)
	if err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	newest := SchemaVersion()
	fence, err := fenceVersion(ctx, db)
	if err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	if fence > newest {
		return &SchemaError{Database: fence, Code: newest, Err: ErrSchemaTooNew}
	}
	current, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("migrate schema: read version: %w", err)
	}
	if current > newest {
		return &SchemaError{Database: current, Code: newest, Err: ErrSchemaTooNew}
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE schema_version SET version = ? WHERE version < ?`, newest, newest); err != nil {
		return fmt.Errorf("migrate schema: set the fence: %w", err)
	}
	return nil
}

// fenceVersion is the version in schema_version, 0 without the table.
func fenceVersion(ctx context.Context, db *sql.DB) (int64, error) {
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'`).Scan(&n); err != nil || n == 0 {
		return 0, err
	}
	var v int64
	err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v)
	return v, err
}

// adoptLegacy records a database made before migrations were files as
// migrated up to the version it has, in one transaction: the store's
// schema_version (1 or 2) becomes goose versions 0 to it, and lease tables
// get the columns that the DHCP gate used to add on open. A database that
// has the version table already, or that is empty, is left alone.
func adoptLegacy(ctx context.Context, db *sql.DB) (err error) {
	exists := func(q querier, table string) (bool, error) {
		var n int
		err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&n)
		return n > 0, err
	}
	if ok, err := exists(db, versionTable); err != nil || ok {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	// Another opener may have migrated the file since the check above.
	if ok, err := exists(tx, versionTable); err != nil || ok {
		_ = tx.Rollback()
		return err
	}
	legacy, err := exists(tx, "schema_version")
	if err != nil {
		return err
	}
	if legacy {
		var v int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v); err != nil {
			return fmt.Errorf("read legacy schema version: %w", err)
		}
		if v > legacyVersion {
			return &SchemaError{Database: v, Code: legacyVersion, Err: ErrSchemaTooNew}
		}
		st, err := database.NewStore(database.DialectSQLite3, versionTable)
		if err != nil {
			return err
		}
		if err := st.CreateVersionTable(ctx, tx); err != nil {
			return fmt.Errorf("create %s: %w", versionTable, err)
		}
		// Version 0 is goose's own mark of a created table.
		for i := int64(0); i <= v; i++ {
			if err := st.Insert(ctx, tx, database.InsertRequest{Version: i}); err != nil {
				return fmt.Errorf("record legacy version %d: %w", i, err)
			}
		}
	}
	for _, c := range []struct{ table, column, decl string }{
		{"dhcp_leases", "relay", "TEXT NOT NULL DEFAULT ''"},
		{"dhcp_leases", "circuit_id", "BLOB"},
		{"dhcp_leases", "remote_id", "BLOB"},
		{"dhcp_host_macs", "expires", "INTEGER NOT NULL DEFAULT 0"},
	} {
		ok, err := exists(tx, c.table)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?`, c.table, c.column).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			if _, err := tx.ExecContext(ctx, `ALTER TABLE `+c.table+` ADD COLUMN `+c.column+` `+c.decl); err != nil {
				return fmt.Errorf("add %s.%s: %w", c.table, c.column, err)
			}
		}
	}
	return tx.Commit()
}
