package dhcpgate

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// ErrPoolFull is returned when a pool has no free address.
var ErrPoolFull = errors.New("no free address in the pool")

// Lease is one address bound (or offered) to one client.
type Lease struct {
	IP      net.IP
	MAC     net.HardwareAddr
	Pool    string
	Bound   bool // false while only offered
	Expires time.Time
}

// Leases keeps the leases in SQLite, so that they survive a restart of the
// appliance. An address is never held by two clients at once: allocation,
// binding and release run in one writer transaction each.
type Leases struct {
	mu sync.Mutex // one writer
	db *sql.DB
}

// OpenLeases opens (creating) the lease tables in the SQLite file at path;
// it may be the appliance's store file.
func OpenLeases(path string) (*Leases, error) {
	u := url.URL{Scheme: "file", Path: path, RawQuery: "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("open leases: %w", err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`
		CREATE TABLE IF NOT EXISTS dhcp_leases (
			ip      INTEGER PRIMARY KEY,
			mac     TEXT NOT NULL,
			pool    TEXT NOT NULL,
			bound   INTEGER NOT NULL,
			expires INTEGER NOT NULL
		);
		CREATE INDEX IF NOT EXISTS dhcp_leases_mac ON dhcp_leases (mac);
		CREATE TABLE IF NOT EXISTS dhcp_host_macs (
			mac     TEXT PRIMARY KEY,
			host_id TEXT NOT NULL,
			updated INTEGER NOT NULL
		);`); err != nil {
		db.Close()
		return nil, fmt.Errorf("open leases: %w", err)
	}
	return &Leases{db: db}, nil
}

// Close closes the database.
func (l *Leases) Close() error { return l.db.Close() }

func ip4(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func ipOf(n uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, n)
	return ip
}

// Offer returns the client's current lease in pool if it has one, or
// reserves the lowest free address of the pool for offerTTL. An address that
// is bound or offered to another client, or declined, is never offered.
func (l *Leases) Offer(ctx context.Context, p *Pool, mac net.HardwareAddr, now time.Time, offerTTL time.Duration) (*Lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("offer lease: %w", err)
	}
	defer tx.Rollback()
	// The client's own live lease in this pool, first.
	var ipn uint32
	var bound bool
	var exp int64
	err = tx.QueryRowContext(ctx, `SELECT ip, bound, expires FROM dhcp_leases WHERE mac = ? AND pool = ? AND expires > ? ORDER BY bound DESC LIMIT 1`,
		mac.String(), p.Name, now.UnixNano()).Scan(&ipn, &bound, &exp)
	if err == nil {
		return &Lease{IP: ipOf(ipn), MAC: mac, Pool: p.Name, Bound: bound, Expires: time.Unix(0, exp)}, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("offer lease: %w", err)
	}
	// A lease in another pool (the host was admitted or quarantined since)
	// is given up.
	if _, err := tx.ExecContext(ctx, `DELETE FROM dhcp_leases WHERE mac = ? AND pool <> ?`, mac.String(), p.Name); err != nil {
		return nil, fmt.Errorf("offer lease: %w", err)
	}
	// The lowest address not held by a live lease.
	start, end := ip4(p.Start), ip4(p.End)
	rows, err := tx.QueryContext(ctx, `SELECT ip FROM dhcp_leases WHERE ip BETWEEN ? AND ? AND expires > ? ORDER BY ip`, start, end, now.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("offer lease: %w", err)
	}
	next := start
	for rows.Next() {
		var taken uint32
		if err := rows.Scan(&taken); err != nil {
			rows.Close()
			return nil, fmt.Errorf("offer lease: %w", err)
		}
		if taken != next {
			break
		}
		next++
	}
	rows.Close()
	if next > end {
		return nil, ErrPoolFull
	}
	expires := now.Add(offerTTL)
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO dhcp_leases (ip, mac, pool, bound, expires) VALUES (?, ?, ?, 0, ?)`,
		next, mac.String(), p.Name, expires.UnixNano()); err != nil {
		return nil, fmt.Errorf("offer lease: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("offer lease: %w", err)
	}
	return &Lease{IP: ipOf(next), MAC: mac, Pool: p.Name, Expires: expires}, nil
}

// Bind binds ip to mac in pool for ttl, if ip is in the pool and free or
// already the client's; it reports false otherwise (the server then NAKs).
func (l *Leases) Bind(ctx context.Context, p *Pool, mac net.HardwareAddr, ip net.IP, now time.Time, ttl time.Duration) (bool, error) {
	if ip.To4() == nil || !p.Contains(ip) {
		return false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("bind lease: %w", err)
	}
	defer tx.Rollback()
	var holder string
	err = tx.QueryRowContext(ctx, `SELECT mac FROM dhcp_leases WHERE ip = ? AND expires > ?`, ip4(ip), now.UnixNano()).Scan(&holder)
	switch {
	case err == nil && holder != mac.String():
		return false, nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return false, fmt.Errorf("bind lease: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM dhcp_leases WHERE mac = ? AND ip <> ?`, mac.String(), ip4(ip)); err != nil {
		return false, fmt.Errorf("bind lease: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO dhcp_leases (ip, mac, pool, bound, expires) VALUES (?, ?, ?, 1, ?)`,
		ip4(ip), mac.String(), p.Name, now.Add(ttl).UnixNano()); err != nil {
		return false, fmt.Errorf("bind lease: %w", err)
	}
	return true, tx.Commit()
}

// Release ends mac's lease of ip.
func (l *Leases) Release(ctx context.Context, mac net.HardwareAddr, ip net.IP) error {
	if ip.To4() == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.db.ExecContext(ctx, `DELETE FROM dhcp_leases WHERE ip = ? AND mac = ?`, ip4(ip), mac.String())
	return err
}

// Decline marks ip unusable for quarantine (another machine answered ARP for
// it), whoever asked.
func (l *Leases) Decline(ctx context.Context, ip net.IP, now time.Time, quarantine time.Duration) error {
	if ip.To4() == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.db.ExecContext(ctx, `INSERT OR REPLACE INTO dhcp_leases (ip, mac, pool, bound, expires) VALUES (?, 'declined', 'declined', 1, ?)`,
		ip4(ip), now.Add(quarantine).UnixNano())
	return err
}

// ByIP returns the live lease of ip.
func (l *Leases) ByIP(ctx context.Context, ip net.IP, now time.Time) (*Lease, error) {
	if ip.To4() == nil {
		return nil, errors.New("not an IPv4 address")
	}
	var mac, pool string
	var bound bool
	var exp int64
	err := l.db.QueryRowContext(ctx, `SELECT mac, pool, bound, expires FROM dhcp_leases WHERE ip = ? AND expires > ?`, ip4(ip), now.UnixNano()).
		Scan(&mac, &pool, &bound, &exp)
	if err != nil {
		return nil, err
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil, err
	}
	return &Lease{IP: ip.To4(), MAC: hw, Pool: pool, Bound: bound, Expires: time.Unix(0, exp)}, nil
}

// All returns every live lease, by address.
func (l *Leases) All(ctx context.Context, now time.Time) ([]Lease, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT ip, mac, pool, bound, expires FROM dhcp_leases WHERE expires > ? AND mac <> 'declined' ORDER BY ip`, now.UnixNano())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		var ipn uint32
		var mac, pool string
		var bound bool
		var exp int64
		if err := rows.Scan(&ipn, &mac, &pool, &bound, &exp); err != nil {
			return nil, err
		}
		hw, _ := net.ParseMAC(mac)
		out = append(out, Lease{IP: ipOf(ipn), MAC: hw, Pool: pool, Bound: bound, Expires: time.Unix(0, exp)})
	}
	return out, rows.Err()
}

// BindHost records that the client with mac is the host hostID (its
// attestation came from mac's leased address).
func (l *Leases) BindHost(ctx context.Context, mac net.HardwareAddr, hostID string, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.db.ExecContext(ctx, `INSERT OR REPLACE INTO dhcp_host_macs (mac, host_id, updated) VALUES (?, ?, ?)`, mac.String(), hostID, now.UnixNano())
	return err
}

// HostOf returns the host ID last bound to mac, or "".
func (l *Leases) HostOf(ctx context.Context, mac net.HardwareAddr) (string, error) {
	var id string
	err := l.db.QueryRowContext(ctx, `SELECT host_id FROM dhcp_host_macs WHERE mac = ?`, mac.String()).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}
