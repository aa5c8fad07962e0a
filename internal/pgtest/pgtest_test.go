package pgtest_test

import (
	"context"
	"database/sql"
	"os"
	"testing"

	"github.com/bootgate/bootgate/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// Each test gets its own database: a table made in one is absent from the
// other.
func TestFreshDatabases(t *testing.T) {
	ctx := context.Background()
	open := func(u string) *sql.DB {
		db, err := sql.Open("pgx", u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	a, b := open(pgtest.DB(t)), open(pgtest.DB(t))
	if _, err := a.ExecContext(ctx, `CREATE TABLE x (v INTEGER)`); err != nil {
		t.Fatalf("create table: %v", err)
	}
	var n int
	if err := b.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_tables WHERE tablename = 'x'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("table made in one database is visible in another")
	}
	var addr sql.NullString
	if err := a.QueryRowContext(ctx, `SELECT inet_server_addr()::text`).Scan(&addr); err != nil {
		t.Fatal(err)
	}
	if addr.Valid {
		t.Errorf("connected over TCP (%s), want the Unix socket", addr.String)
	}
}
