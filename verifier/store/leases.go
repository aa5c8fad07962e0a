package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
)

// LeaseTables are the DHCP gate's tables in the appliance's database:
// dhcp_leases (bound leases and declined addresses, by IPv4 address) and
// dhcp_host_macs (which host each MAC address stands for, until when). The
// DHCP gate (verifier/dhcpgate) keeps them in memory and writes through
// these methods; every write is one statement or one transaction. On a
// database several appliances share (Replicated), the gate's memory is a
// cache, and it reads what it decides on from the database (Client,
// HostOf, Lease, HostLeases).
//
// Several appliances serving one boot network from one PostgreSQL
// database never bind one address to two clients: a lease is written only
// by Claim's conditional upsert, which writes the row of an address only
// when it is free, expired, or already the same client's. PostgreSQL runs
// it under the conflicting row's lock (INSERT … ON CONFLICT DO UPDATE
// locks the row and re-evaluates the condition on its newest version), so
// of two appliances claiming one address for two clients at once, the
// second waits for the first and is refused; on SQLite, writes are
// serialized by the database file's lock. Times are the caller's clock,
// so the appliances' clocks must agree (NTP) to within a small part of
// the lease time.
type LeaseTables struct {
	db  conn
	own bool // Close closes db
}

// LeaseRow is one row of dhcp_leases.
type LeaseRow struct {
	IP        uint32 // IPv4 address, network order as an integer
	MAC       string // net.HardwareAddr.String form; "" for a declined address
	Pool      string
	Bound     bool
	Expires   int64 // Unix nanoseconds
	Relay     string
	CircuitID []byte
	RemoteID  []byte
}

// HostMACRow is one row of dhcp_host_macs: MAC stands for HostID until
// Expires (Unix nanoseconds).
type HostMACRow struct {
	MAC     string
	HostID  string
	Expires int64
}

// LeaseClaim is one bound lease to write (Claim).
type LeaseClaim struct {
	Lease LeaseRow
	// Moved deletes the client's leases of other addresses (it moved to
	// another pool).
	Moved bool
	// HostExpires, when not 0, extends the MAC's host binding to it, if
	// the binding is live at the claim's time and expires earlier.
	HostExpires int64
}

// Leases returns the lease tables of s's database, on s's connections.
// Closing them closes nothing.
func (s *DB) Leases() *LeaseTables { return &LeaseTables{db: s.write} }

// OpenLeaseTables opens the lease tables in the SQLite file at path (it may
// be the store's file), with a connection of their own, WAL journaling, a
// busy timeout and synchronous=FULL (a bound lease survives a power loss,
// as the store's writes do), and migrates the file (Migrate).
func OpenLeaseTables(path string) (*LeaseTables, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open lease tables: %w", err)
	}
	u := url.URL{Scheme: "file", Path: abs, RawQuery: "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("open lease tables: %w", err)
	}
	db.SetMaxOpenConns(1)
	if err := Migrate(context.Background(), db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open lease tables: %w", err)
	}
	return &LeaseTables{db: conn{db, sqliteDialect}, own: true}, nil
}

// DB is the database handle under the tables, for inspection by tests and
// tools; its queries use the database's own placeholders.
func (t *LeaseTables) DB() *sql.DB { return t.db.DB }

// Close closes the tables' own connection (OpenLeaseTables); tables of a
// store (DB.Leases) close with the store.
func (t *LeaseTables) Close() error {
	if !t.own {
		return nil
	}
	return t.db.Close()
}

// Load returns the leases and host bindings that have not expired at now
// (Unix nanoseconds); the bindings newest first.
func (t *LeaseTables) Load(ctx context.Context, now int64) ([]LeaseRow, []HostMACRow, error) {
	rows, err := t.db.QueryContext(ctx, `SELECT `+leaseColumns+` FROM dhcp_leases WHERE expires > ?`, now)
	if err != nil {
		return nil, nil, fmt.Errorf("load leases: %w", err)
	}
	var leases []LeaseRow
	for rows.Next() {
		r, err := scanLease(rows)
		if err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("load leases: %w", err)
		}
		leases = append(leases, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("load leases: %w", err)
	}
	rows, err = t.db.QueryContext(ctx, `SELECT mac, host_id, expires FROM dhcp_host_macs WHERE expires > ? ORDER BY updated DESC`, now)
	if err != nil {
		return nil, nil, fmt.Errorf("load host bindings: %w", err)
	}
	defer rows.Close()
	var hosts []HostMACRow
	for rows.Next() {
		var h HostMACRow
		if err := rows.Scan(&h.MAC, &h.HostID, &h.Expires); err != nil {
			return nil, nil, fmt.Errorf("load host bindings: %w", err)
		}
		hosts = append(hosts, h)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("load host bindings: %w", err)
	}
	return leases, hosts, nil
}

const leaseColumns = `ip, mac, pool, bound, expires, relay, circuit_id, remote_id`

func scanLease(row interface{ Scan(...any) error }) (LeaseRow, error) {
	var r LeaseRow
	var circuit, remote blob
	if err := row.Scan(&r.IP, &r.MAC, &r.Pool, &r.Bound, &r.Expires, &r.Relay, &circuit, &remote); err != nil {
		return LeaseRow{}, err
	}
	r.CircuitID, r.RemoteID = circuit, remote
	return r, nil
}

// Lease returns the row of ip if it has not expired at now, or nil.
func (t *LeaseTables) Lease(ctx context.Context, ip uint32, now int64) (*LeaseRow, error) {
	r, err := scanLease(t.db.QueryRowContext(ctx, `SELECT `+leaseColumns+` FROM dhcp_leases WHERE ip = ? AND expires > ?`, ip, now))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read lease %d: %w", ip, err)
	}
	return &r, nil
}

// claimLease writes a bound lease when its address is free, expired at
// the given time, or the same client's; RETURNING yields no row otherwise.
const claimLease = `
	INSERT INTO dhcp_leases (ip, mac, pool, bound, expires, relay, circuit_id, remote_id)
	VALUES (?, ?, ?, 1, ?, ?, ?, ?)
	ON CONFLICT (ip) DO UPDATE SET
		mac = excluded.mac, pool = excluded.pool, bound = 1, expires = excluded.expires,
		relay = excluded.relay, circuit_id = excluded.circuit_id, remote_id = excluded.remote_id
	WHERE dhcp_leases.mac = excluded.mac OR dhcp_leases.expires <= ?
	RETURNING ip`

// Claim writes bound leases in one transaction (a group commit) and
// reports, for each, whether it was written: false means the address is
// held, at now (Unix nanoseconds), by another client or set aside as
// declined, and nothing of that claim was written. The transaction runs
// READ COMMITTED on PostgreSQL: the claim's row lock, not the isolation
// level, is what keeps an address to one client. The error is the
// transaction's; then nothing was written.
func (t *LeaseTables) Claim(ctx context.Context, now int64, claims []LeaseClaim) ([]bool, error) {
	var ok []bool
	err := inTx(ctx, t.db, func(tx *txn) error {
		ok = make([]bool, len(claims))
		for i, c := range claims {
			r := c.Lease
			if r.MAC == "" {
				return errors.New("claim lease: no MAC address")
			}
			var got uint32
			err := tx.QueryRowContext(ctx, claimLease, r.IP, r.MAC, r.Pool, r.Expires, r.Relay, r.CircuitID, r.RemoteID, now).Scan(&got)
			if errors.Is(err, sql.ErrNoRows) {
				continue // held by another client
			}
			if err != nil {
				return fmt.Errorf("claim lease %d: %w", r.IP, err)
			}
			ok[i] = true
			if c.Moved {
				if _, err := tx.ExecContext(ctx, `DELETE FROM dhcp_leases WHERE mac = ? AND ip <> ?`, r.MAC, r.IP); err != nil {
					return fmt.Errorf("end the client's other leases: %w", err)
				}
			}
			if c.HostExpires != 0 {
				// Only a live binding is extended: an expired one stays
				// expired, whoever asks.
				if _, err := tx.ExecContext(ctx, `UPDATE dhcp_host_macs SET expires = ? WHERE mac = ? AND expires < ? AND expires > ?`,
					c.HostExpires, r.MAC, c.HostExpires, now); err != nil {
					return fmt.Errorf("extend host binding: %w", err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ok, nil
}

// Release deletes mac's lease of ip, if it holds it.
func (t *LeaseTables) Release(ctx context.Context, ip uint32, mac string) error {
	if _, err := t.db.ExecContext(ctx, `DELETE FROM dhcp_leases WHERE ip = ? AND mac = ?`, ip, mac); err != nil {
		return fmt.Errorf("release lease %d: %w", ip, err)
	}
	return nil
}

// PoolDeclined is the pool name of declined addresses set aside.
const PoolDeclined = "declined"

// Decline sets ip aside as declined until until (Unix nanoseconds), unless
// another client than mac holds it at now; it reports whether it did.
func (t *LeaseTables) Decline(ctx context.Context, ip uint32, mac string, until, now int64) (bool, error) {
	var got uint32
	err := t.db.QueryRowContext(ctx, `
		INSERT INTO dhcp_leases (ip, mac, pool, bound, expires) VALUES (?, '', ?, 1, ?)
		ON CONFLICT (ip) DO UPDATE SET
			mac = '', pool = excluded.pool, bound = 1, expires = excluded.expires,
			relay = '', circuit_id = NULL, remote_id = NULL
		WHERE dhcp_leases.mac = ? OR dhcp_leases.expires <= ?
		RETURNING ip`, ip, PoolDeclined, until, mac, now).Scan(&got)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("decline %d: %w", ip, err)
	}
	return true, nil
}

// HostBind is a host binding to write (BindHost).
type HostBind struct {
	MAC     string
	HostID  string
	Now     int64 // Unix nanoseconds
	Expires int64
	// EndPool, when not empty, deletes the leases in that pool of the
	// MACs the database binds the host to now other than MAC (the host's
	// production lease on the MAC it leaves, whichever appliance bound it).
	EndPool string
}

// HostBound is what BindHost did.
type HostBound struct {
	// Other, when not nil, is MAC's live binding to another host: nothing
	// was written.
	Other *HostMACRow
	// Left are the MACs whose binding to the host ended.
	Left []string
	// Ended are the leases deleted with them (EndPool).
	Ended []LeaseRow
}

// BindHost binds b.MAC to b.HostID in one transaction: the host's
// bindings to other MACs end (and with them, those MACs' leases in
// b.EndPool), and MAC's binding is replaced. A live binding of MAC to
// another host is never replaced, also when another appliance wrote it:
// BindHost then returns that binding (Other) and writes nothing.
//
// On PostgreSQL the transaction first takes the host's lock (lockHost),
// then MAC's row lock, so two appliances binding one host, to the same
// MAC or to two, run one after the other, and the second reads the
// binding the first committed: a host is bound to one MAC whatever
// appliance bound it. (The MAC's row lock alone would not do it: two
// transactions binding one host to two MACs lock two rows, neither sees
// the other's uncommitted binding, and both would commit.) The leases
// ended are those of the bindings this transaction deletes, read from the
// database under that lock, not from any appliance's memory. Only
// BindHost writes a binding's host, so under the host's lock the host's
// bindings are what the transaction reads.
func (t *LeaseTables) BindHost(ctx context.Context, b HostBind) (HostBound, error) {
	if b.MAC == "" || b.HostID == "" {
		return HostBound{}, errors.New("bind host: a host ID and a MAC address are required")
	}
	var res HostBound
	err := inTx(ctx, t.db, func(tx *txn) error {
		res = HostBound{}
		if err := lockHost(ctx, tx, b.HostID); err != nil {
			return err
		}
		var cur HostMACRow
		err := tx.QueryRowContext(ctx, `SELECT mac, host_id, expires FROM dhcp_host_macs WHERE mac = ?`+t.db.d.forUpdate, b.MAC).
			Scan(&cur.MAC, &cur.HostID, &cur.Expires)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case cur.HostID != b.HostID && cur.Expires > b.Now:
			res.Other = &cur
			return nil
		}
		if b.EndPool != "" {
			// The leases first, then the bindings: the order Claim
			// locks a lease's row and its MAC's binding in.
			rows, err := tx.QueryContext(ctx, `DELETE FROM dhcp_leases WHERE pool = ? AND mac IN
				(SELECT mac FROM dhcp_host_macs WHERE host_id = ? AND mac <> ?)
				RETURNING `+leaseColumns, b.EndPool, b.HostID, b.MAC)
			if err != nil {
				return fmt.Errorf("end the host's lease on its previous MAC: %w", err)
			}
			for rows.Next() {
				r, err := scanLease(rows)
				if err != nil {
					rows.Close()
					return fmt.Errorf("end the host's lease on its previous MAC: %w", err)
				}
				res.Ended = append(res.Ended, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("end the host's lease on its previous MAC: %w", err)
			}
		}
		rows, err := tx.QueryContext(ctx, `DELETE FROM dhcp_host_macs WHERE host_id = ? OR mac = ? RETURNING mac, host_id`, b.HostID, b.MAC)
		if err != nil {
			return err
		}
		for rows.Next() {
			var mac, host string
			if err := rows.Scan(&mac, &host); err != nil {
				rows.Close()
				return err
			}
			if host == b.HostID && mac != b.MAC {
				res.Left = append(res.Left, mac)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO dhcp_host_macs (mac, host_id, updated, expires) VALUES (?, ?, ?, ?)`,
			b.MAC, b.HostID, b.Now, b.Expires); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return HostBound{}, fmt.Errorf("bind host %s: %w", b.HostID, err)
	}
	return res, nil
}

// Replicated reports whether several appliances may share these tables
// (a PostgreSQL database): then no appliance's memory of them is the
// truth, and the DHCP gate reads them for its decisions. An SQLite file
// serves one appliance.
func (t *LeaseTables) Replicated() bool { return t.db.d != sqliteDialect }

// Client returns what the database holds, live at now (Unix nanoseconds),
// for one client and one address: the leases of mac and the row of ip (0:
// none asked), and mac's host binding (nil when it has none). mac must not
// be empty.
func (t *LeaseTables) Client(ctx context.Context, mac string, ip uint32, now int64) ([]LeaseRow, *HostMACRow, error) {
	if mac == "" {
		return nil, nil, errors.New("read client: no MAC address")
	}
	rows, err := t.db.QueryContext(ctx, `SELECT `+leaseColumns+` FROM dhcp_leases WHERE (mac = ? OR ip = ?) AND expires > ?`, mac, ip, now)
	if err != nil {
		return nil, nil, fmt.Errorf("read leases of %s: %w", mac, err)
	}
	var leases []LeaseRow
	for rows.Next() {
		r, err := scanLease(rows)
		if err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("read leases of %s: %w", mac, err)
		}
		leases = append(leases, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read leases of %s: %w", mac, err)
	}
	h, err := t.HostOf(ctx, mac, now)
	if err != nil {
		return nil, nil, err
	}
	return leases, h, nil
}

// HostOf returns mac's host binding if it is live at now (Unix
// nanoseconds), or nil.
func (t *LeaseTables) HostOf(ctx context.Context, mac string, now int64) (*HostMACRow, error) {
	h := HostMACRow{MAC: mac}
	err := t.db.QueryRowContext(ctx, `SELECT host_id, expires FROM dhcp_host_macs WHERE mac = ? AND expires > ?`, mac, now).
		Scan(&h.HostID, &h.Expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read host binding of %s: %w", mac, err)
	}
	return &h, nil
}

// HostLease is a bound lease whose MAC is bound to a host.
type HostLease struct {
	LeaseRow
	HostID string
}

// HostLeases returns, by address, the bound leases live at now (Unix
// nanoseconds) in pool ("" for every pool) whose MAC has a live host
// binding, each with its host: one query, the database's view at once.
// With hostIDs (at most MaxPage), only those hosts' leases.
func (t *LeaseTables) HostLeases(ctx context.Context, pool string, hostIDs []string, now int64) ([]HostLease, error) {
	if len(hostIDs) > MaxPage {
		return nil, fmt.Errorf("read host leases: %d hosts asked, at most %d", len(hostIDs), MaxPage)
	}
	query := `SELECT l.ip, l.mac, l.pool, l.bound, l.expires, l.relay, l.circuit_id, l.remote_id, h.host_id
		FROM dhcp_leases l JOIN dhcp_host_macs h ON h.mac = l.mac
		WHERE l.mac <> '' AND l.bound = 1 AND l.expires > ? AND h.expires > ? AND (? = '' OR l.pool = ?)`
	args := []any{now, now, pool, pool}
	if hostIDs != nil {
		if len(hostIDs) == 0 {
			return nil, nil
		}
		query += ` AND h.host_id IN (?` + strings.Repeat(`, ?`, len(hostIDs)-1) + `)`
		for _, id := range hostIDs {
			args = append(args, id)
		}
	}
	rows, err := t.db.QueryContext(ctx, query+` ORDER BY l.ip`, args...)
	if err != nil {
		return nil, fmt.Errorf("read host leases: %w", err)
	}
	return scanHostLeases(rows, "host leases")
}

// scanHostLeases reads the rows of HostLeases and AdmittedLeases: a lease's
// columns, then its host.
func scanHostLeases(rows *sql.Rows, what string) ([]HostLease, error) {
	defer rows.Close()
	var out []HostLease
	for rows.Next() {
		var r HostLease
		var circuit, remote blob
		if err := rows.Scan(&r.IP, &r.MAC, &r.Pool, &r.Bound, &r.Expires, &r.Relay, &circuit, &remote, &r.HostID); err != nil {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
		r.CircuitID, r.RemoteID = circuit, remote
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return out, nil
}

// AdmittedLeases returns the live bound leases of pool whose client is
// bound (unexpired) to a host admitted now, by address, in one statement:
// what a replica's gateway may forward. One statement reads one snapshot,
// so a quarantine committed before it is never forwarded, and one
// committed after it is seen by the next call.
func (t *LeaseTables) AdmittedLeases(ctx context.Context, pool string, now int64) ([]HostLease, error) {
	rows, err := t.db.QueryContext(ctx, `SELECT l.ip, l.mac, l.pool, l.bound, l.expires, l.relay, l.circuit_id, l.remote_id, h.host_id
		FROM dhcp_leases l JOIN dhcp_host_macs h ON h.mac = l.mac JOIN hosts s ON s.id = h.host_id
		WHERE l.mac <> '' AND l.bound = 1 AND l.expires > ? AND h.expires > ? AND l.pool = ? AND s.state = ?
		ORDER BY l.ip`, now, now, pool, HostAdmitted)
	if err != nil {
		return nil, fmt.Errorf("read admitted leases: %w", err)
	}
	return scanHostLeases(rows, "admitted leases")
}

// CountByPool counts the bound leases live at now (Unix nanoseconds) by
// pool, declined addresses left out.
func (t *LeaseTables) CountByPool(ctx context.Context, now int64) (map[string]int, error) {
	rows, err := t.db.QueryContext(ctx, `SELECT pool, COUNT(*) FROM dhcp_leases WHERE mac <> '' AND bound = 1 AND expires > ? GROUP BY pool`, now)
	if err != nil {
		return nil, fmt.Errorf("count leases: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var pool string
		var n int
		if err := rows.Scan(&pool, &n); err != nil {
			return nil, fmt.Errorf("count leases: %w", err)
		}
		out[pool] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count leases: %w", err)
	}
	return out, nil
}
