package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// maxPostgresConns bounds one appliance's connections to PostgreSQL.
const maxPostgresConns = 16

// IsPostgresURL reports whether a store location names a PostgreSQL
// database (a postgres:// or postgresql:// URL) rather than an SQLite file.
func IsPostgresURL(loc string) bool {
	return strings.HasPrefix(loc, "postgres://") || strings.HasPrefix(loc, "postgresql://")
}

// Open opens the store at loc: a PostgreSQL database when loc is a
// postgres:// URL (OpenPostgres), else the SQLite file at path loc
// (OpenSQLite, the default).
func Open(ctx context.Context, loc string) (*DB, error) {
	if IsPostgresURL(loc) {
		return OpenPostgres(ctx, loc)
	}
	return OpenSQLite(loc)
}

// OpenPostgres opens the store in the PostgreSQL database at url (a
// postgres:// URL, as pgx and libpq read it) and migrates it to
// SchemaVersion with the same migrations as SQLite. Several appliances may
// open one database: they take turns migrating it (an advisory lock), and
// a host's admission transactions take turns under the host's lock (see
// DB). It refuses a database whose schema is newer than this code (the
// error wraps ErrSchemaTooNew), and does not log url, which may hold a
// password.
func OpenPostgres(ctx context.Context, url string) (*DB, error) {
	if !IsPostgresURL(url) {
		return nil, errors.New("open postgres store: not a postgres:// URL")
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx's error quotes the URL, password and all.
		return nil, errors.New("open postgres store: the URL does not parse")
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(maxPostgresConns)
	db.SetMaxIdleConns(maxPostgresConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	c := conn{db, postgresDialect}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open postgres store %s@%s/%s: %w", cfg.User, cfg.Host, cfg.Database, err)
	}
	if err := migrateOn(ctx, c); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open postgres store %s@%s/%s: %w", cfg.User, cfg.Host, cfg.Database, err)
	}
	s := &DB{d: postgresDialect, write: c, read: c, now: time.Now, replica: newReplicaID()}
	s.watcher = watch(c, ChangePoll, &s.changes)
	return s, nil
}

// Redacted is loc as logs may show it: a postgres:// URL without its
// password (in the user information or a password parameter); a file path
// as it is.
func Redacted(loc string) string {
	if !IsPostgresURL(loc) {
		return loc
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "postgres://(a URL that does not parse)"
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// UnverifiedTransport returns, for a postgres:// URL, why a connection to
// it may be read or changed by someone on the network between the
// appliance and the database: a host reached over TCP (not a Unix socket,
// not a loopback address) with plaintext allowed (sslmode disable, allow,
// or prefer, pgx's and libpq's default, which falls back to plaintext) or
// with TLS whose server certificate is not verified (require without a
// root certificate). It returns "" when every host the URL names is local
// or reached with a verified certificate (verify-ca, verify-full), and for
// a location that is not a postgres:// URL. The settings are read as pgx
// reads them, PGSSLMODE and the other environment variables included; a
// URL that does not parse is Open's to refuse.
func UnverifiedTransport(loc string) string {
	if !IsPostgresURL(loc) {
		return ""
	}
	cfg, err := pgx.ParseConfig(loc)
	if err != nil {
		return ""
	}
	tries := append([]*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port, TLSConfig: cfg.TLSConfig}}, cfg.Fallbacks...)
	for _, f := range tries {
		if localHost(f.Host) {
			continue
		}
		switch {
		case f.TLSConfig == nil:
			return fmt.Sprintf("%s is reached without TLS or may fall back to plaintext (sslmode is not verify-full or verify-ca)", f.Host)
		case f.TLSConfig.InsecureSkipVerify && f.TLSConfig.VerifyPeerCertificate == nil:
			return fmt.Sprintf("%s's certificate is not verified (sslmode is not verify-full or verify-ca)", f.Host)
		}
	}
	return ""
}

// localHost reports whether a PostgreSQL host is a Unix socket directory
// or a loopback address or name.
func localHost(host string) bool {
	if strings.HasPrefix(host, "/") || host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
