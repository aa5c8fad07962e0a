package dhcpgate

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

const upsertLease = `INSERT OR REPLACE INTO dhcp_leases (ip, mac, pool, bound, expires) VALUES (?, ?, ?, 1, ?)`

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
// appliance, and mirrors them in memory, so that answering a DISCOVER costs
// no disk write and no scan. An address is never held by two clients at
// once: every change happens under one lock, and bound leases are written
// through to SQLite before they are acknowledged. Offers live in memory only
// (an offer lost in a restart was never acknowledged).
type Leases struct {
	mu        sync.Mutex
	db        *sql.DB
	upsert    *sql.Stmt
	commits   chan commitReq
	stopped   chan struct{}
	closeOnce sync.Once
	byIP      map[uint32]*Lease   // live leases and offers, and declined addresses
	bound     map[string]uint32   // MAC → the client's bound lease
	offered   map[string]uint32   // MAC → the offer standing for the client (it may also hold a lease in the other pool)
	offers    map[string][]*Lease // per pool: offers in the order they were made (some since bound or gone)
	hosts     map[string]string   // MAC → host ID
	cursor    map[string]uint32   // per pool: where the next free-address search starts

	// Withdrawn counts offers withdrawn from clients to make room in a
	// full pool.
	Withdrawn atomic.Uint64
}

// OpenLeases opens (creating) the lease tables in the SQLite file at path;
// it may be the appliance's store file.
func OpenLeases(path string) (*Leases, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open leases: %w", err)
	}
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
	l := &Leases{db: db, byIP: map[uint32]*Lease{}, bound: map[string]uint32{}, offered: map[string]uint32{}, offers: map[string][]*Lease{}, hosts: map[string]string{}, cursor: map[string]uint32{}}
	if l.upsert, err = db.Prepare(upsertLease); err != nil {
		db.Close()
		return nil, fmt.Errorf("open leases: %w", err)
	}
	if err := l.load(time.Now()); err != nil {
		db.Close()
		return nil, fmt.Errorf("open leases: %w", err)
	}
	l.commits, l.stopped = make(chan commitReq, 1024), make(chan struct{})
	go l.committer()
	return l, nil
}

// load reads the live leases and the MAC bindings into memory.
func (l *Leases) load(now time.Time) error {
	rows, err := l.db.Query(`SELECT ip, mac, pool, bound, expires FROM dhcp_leases WHERE expires > ?`, now.UnixNano())
	if err != nil {
		return err
	}
	for rows.Next() {
		var ipn uint32
		var mac, pool string
		var bound bool
		var exp int64
		if err := rows.Scan(&ipn, &mac, &pool, &bound, &exp); err != nil {
			rows.Close()
			return err
		}
		hw, _ := net.ParseMAC(mac)
		l.byIP[ipn] = &Lease{IP: ipOf(ipn), MAC: hw, Pool: pool, Bound: bound, Expires: time.Unix(0, exp)}
		if hw != nil {
			l.bound[mac] = ipn
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = l.db.Query(`SELECT mac, host_id FROM dhcp_host_macs`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var mac, id string
		if err := rows.Scan(&mac, &id); err != nil {
			return err
		}
		l.hosts[mac] = id
	}
	return rows.Err()
}

// live returns the unexpired lease of ip, dropping an expired one.
func (l *Leases) live(ipn uint32, now time.Time) *Lease {
	le, ok := l.byIP[ipn]
	if !ok {
		return nil
	}
	if !le.Expires.After(now) {
		delete(l.byIP, ipn)
		l.forget(le, ipn)
		return nil
	}
	return le
}

// forget drops the client's pointers to ipn, whose entry le is gone.
func (l *Leases) forget(le *Lease, ipn uint32) {
	if le.MAC == nil {
		return
	}
	key := le.MAC.String()
	if ipn2, ok := l.bound[key]; ok && ipn2 == ipn {
		delete(l.bound, key)
	}
	if ipn2, ok := l.offered[key]; ok && ipn2 == ipn {
		delete(l.offered, key)
	}
}

// dropOffer withdraws the offer standing for the client, if any.
func (l *Leases) dropOffer(key string) {
	if ipn, ok := l.offered[key]; ok {
		if le := l.byIP[ipn]; le != nil && !le.Bound && le.MAC != nil && le.MAC.String() == key {
			delete(l.byIP, ipn)
		}
		delete(l.offered, key)
	}
}

// Close writes what is pending and closes the database. No Bind may run
// during or after Close.
func (l *Leases) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.commits)
		<-l.stopped
		l.upsert.Close()
		err = l.db.Close()
	})
	return err
}

func ip4(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func ipOf(n uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, n)
	return ip
}

// Offer returns the client's current lease in pool if it has one, or
// reserves the next free address of the pool (in memory) for offerTTL. An
// address that is bound or offered to another client, or declined, is never
// offered.
func (l *Leases) Offer(ctx context.Context, p *Pool, mac net.HardwareAddr, now time.Time, offerTTL time.Duration) (*Lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := mac.String()
	// The client's lease or standing offer in this pool is offered again.
	// A lease in the other pool (the client was admitted, or quarantined)
	// stays until the client binds the new address.
	for _, m := range []map[string]uint32{l.bound, l.offered} {
		if ipn, ok := m[key]; ok {
			if le := l.live(ipn, now); le != nil && le.Pool == p.Name {
				return le, nil
			}
		}
	}
	l.dropOffer(key)
	start, end := ip4(p.Start), ip4(p.End)
	size := end - start + 1
	// The next free address after the cursor: addresses are handed out in
	// turn, so the ones ahead of it are the oldest and most likely expired.
	// The search is bounded so that an offer stays cheap when the pool is
	// (nearly) full.
	cur := l.cursor[p.Name]
	for i := uint32(0); i < min(size, offerScan); i++ {
		ipn := start + (cur+i)%size
		if l.live(ipn, now) != nil {
			continue
		}
		l.cursor[p.Name] = (cur + i + 1) % size
		return l.offerAt(ipn, p, mac, now, offerTTL), nil
	}
	// Nothing free nearby. Offers are promises nobody has taken up yet: the
	// oldest is withdrawn for this client (in order of offering, which is
	// the order of expiry), so that a flood of DISCOVERs from made-up MACs
	// cannot lock real clients out of the pool; a client whose offer was
	// withdrawn is NAKed and starts over.
	q := l.offers[p.Name]
	for len(q) > 0 {
		le := q[0]
		q = q[1:]
		ipn := ip4(le.IP)
		if l.byIP[ipn] != le || le.Bound {
			// Bound since, or gone: if gone, the address may be free.
			if l.live(ipn, now) == nil {
				l.offers[p.Name] = q
				return l.offerAt(ipn, p, mac, now, offerTTL), nil
			}
			continue
		}
		l.offers[p.Name] = q
		l.forget(le, ipn)
		l.Withdrawn.Add(1)
		return l.offerAt(ipn, p, mac, now, offerTTL), nil
	}
	l.offers[p.Name] = q
	// No offer to withdraw: look through the whole pool (every address is
	// bound, or free ones are far from the cursor).
	for i := offerScan; i < size; i++ {
		ipn := start + (cur+i)%size
		if l.live(ipn, now) != nil {
			continue
		}
		l.cursor[p.Name] = (cur + i + 1) % size
		return l.offerAt(ipn, p, mac, now, offerTTL), nil
	}
	return nil, ErrPoolFull
}

// offerScan bounds the search for a free address before an offer is
// withdrawn.
const offerScan uint32 = 256

// offerAt records an offer of ipn to mac.
func (l *Leases) offerAt(ipn uint32, p *Pool, mac net.HardwareAddr, now time.Time, offerTTL time.Duration) *Lease {
	le := &Lease{IP: ipOf(ipn), MAC: mac, Pool: p.Name, Expires: now.Add(offerTTL)}
	l.byIP[ipn] = le
	l.offered[mac.String()] = ipn
	// Offers live offerTTL, all alike, so the queue is in order of expiry:
	// entries at its front that are no longer standing offers (bound since,
	// replaced, or expired) are dropped as new ones come in.
	q := l.offers[p.Name]
	for len(q) > 0 && (q[0].Bound || l.byIP[ip4(q[0].IP)] != q[0] || !q[0].Expires.After(now)) {
		q = q[1:]
	}
	l.offers[p.Name] = append(q, le)
	return le
}

// Bind binds ip to mac in pool for ttl, if ip is in the pool and free or
// already the client's; it reports false otherwise (the server then NAKs).
// The lease is in SQLite before Bind returns: concurrent binds are written
// in one transaction (group commit), which is what lets a single SQLite file
// keep up with a boot storm.
func (l *Leases) Bind(ctx context.Context, p *Pool, mac net.HardwareAddr, ip net.IP, now time.Time, ttl time.Duration) (bool, error) {
	if ip.To4() == nil || !p.Contains(ip) {
		return false, nil
	}
	ipn, key := ip4(ip), mac.String()
	exp := now.Add(ttl)
	l.mu.Lock()
	if le := l.live(ipn, now); le != nil && (le.MAC == nil || le.MAC.String() != key) {
		l.mu.Unlock()
		return false, nil
	}
	prevIP, prev := l.byIP[ipn]
	prevOffer, hadOffer := l.offered[key]
	// The client's other lease (in the pool it leaves, or an address it
	// gave up) ends with this bind, while it is still the client's (an
	// expired one may have gone to someone else since).
	old, hadOther := l.bound[key]
	oldLease := l.byIP[old]
	hadOther = hadOther && old != ipn && oldLease != nil && oldLease.MAC != nil && oldLease.MAC.String() == key
	// Reserve in memory first, so that no one else takes the address while
	// it is being written.
	mine := &Lease{IP: ipOf(ipn), MAC: mac, Pool: p.Name, Bound: true, Expires: exp}
	if hadOffer && prevOffer != ipn {
		l.dropOffer(key) // the client asked for another address than offered
	}
	delete(l.offered, key)
	l.byIP[ipn] = mine
	l.bound[key] = ipn
	if hadOther {
		delete(l.byIP, old)
	}
	l.mu.Unlock()

	req := commitReq{ip: ipn, mac: key, pool: p.Name, expires: exp.UnixNano(), moved: hadOther, done: make(chan error, 1)}
	l.commits <- req
	if err := <-req.done; err != nil {
		l.mu.Lock()
		if l.byIP[ipn] == mine {
			if prev {
				l.byIP[ipn] = prevIP
			} else {
				delete(l.byIP, ipn)
			}
			delete(l.bound, key)
			// The old lease comes back only if no one took its address
			// meanwhile.
			if hadOther && l.byIP[old] == nil {
				l.byIP[old] = oldLease
				l.bound[key] = old
			}
		}
		l.mu.Unlock()
		return false, fmt.Errorf("bind lease: %w", err)
	}
	return true, nil
}

// commitReq is one bound lease waiting to be written.
type commitReq struct {
	ip      uint32
	mac     string
	pool    string
	expires int64
	moved   bool // delete the client's other addresses
	done    chan error
}

// committer writes bound leases in batches: whatever is waiting when a
// transaction starts goes into it.
func (l *Leases) committer() {
	defer close(l.stopped)
	for first := range l.commits {
		batch := []commitReq{first}
	drain:
		for len(batch) < 512 {
			select {
			case r, ok := <-l.commits:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		err := l.write(batch)
		for _, r := range batch {
			r.done <- err
		}
	}
}

func (l *Leases) write(batch []commitReq) error {
	tx, err := l.db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	up := tx.Stmt(l.upsert)
	for _, r := range batch {
		if r.moved {
			if _, err := tx.Exec(`DELETE FROM dhcp_leases WHERE mac = ? AND ip <> ?`, r.mac, r.ip); err != nil {
				return err
			}
		}
		if _, err := up.Exec(r.ip, r.mac, r.pool, r.expires); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Release ends mac's lease of ip.
func (l *Leases) Release(ctx context.Context, mac net.HardwareAddr, ip net.IP) error {
	if ip.To4() == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.db.ExecContext(ctx, `DELETE FROM dhcp_leases WHERE ip = ? AND mac = ?`, ip4(ip), mac.String()); err != nil {
		return err
	}
	if le, ok := l.byIP[ip4(ip)]; ok && le.MAC != nil && le.MAC.String() == mac.String() {
		delete(l.byIP, ip4(ip))
		l.forget(le, ip4(ip))
	}
	return nil
}

// Decline marks ip unusable for quarantine (another machine answered ARP for
// it), whoever asked.
func (l *Leases) Decline(ctx context.Context, ip net.IP, now time.Time, quarantine time.Duration) error {
	if ip.To4() == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.db.ExecContext(ctx, `INSERT OR REPLACE INTO dhcp_leases (ip, mac, pool, bound, expires) VALUES (?, 'declined', 'declined', 1, ?)`,
		ip4(ip), now.Add(quarantine).UnixNano()); err != nil {
		return err
	}
	if le, ok := l.byIP[ip4(ip)]; ok {
		l.forget(le, ip4(ip))
	}
	l.byIP[ip4(ip)] = &Lease{IP: ip.To4(), Pool: "declined", Bound: true, Expires: now.Add(quarantine)}
	return nil
}

// ByIP returns the live bound lease of ip.
func (l *Leases) ByIP(_ context.Context, ip net.IP, now time.Time) (*Lease, error) {
	if ip.To4() == nil {
		return nil, errors.New("not an IPv4 address")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	le := l.live(ip4(ip), now)
	if le == nil || !le.Bound || le.MAC == nil {
		return nil, fmt.Errorf("no lease of %s: %w", ip, sql.ErrNoRows)
	}
	c := *le
	return &c, nil
}

// All returns every live bound lease, by address. The memory mirror holds
// what SQLite holds (bound leases are written through), plus offers.
func (l *Leases) All(_ context.Context, now time.Time) ([]Lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Lease
	for ipn := range l.byIP {
		if le := l.live(ipn, now); le != nil && le.Bound && le.MAC != nil {
			out = append(out, *le)
		}
	}
	slices.SortFunc(out, func(a, b Lease) int { return cmp.Compare(ip4(a.IP), ip4(b.IP)) })
	return out, nil
}

// BindHost records that the client with mac is the host hostID (its
// attestation came from mac's leased address).
func (l *Leases) BindHost(ctx context.Context, mac net.HardwareAddr, hostID string, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.db.ExecContext(ctx, `INSERT OR REPLACE INTO dhcp_host_macs (mac, host_id, updated) VALUES (?, ?, ?)`, mac.String(), hostID, now.UnixNano()); err != nil {
		return err
	}
	l.hosts[mac.String()] = hostID
	return nil
}

// HostOf returns the host ID last bound to mac, or "".
func (l *Leases) HostOf(ctx context.Context, mac net.HardwareAddr) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[mac.String()], nil
}

// CountByPool counts the live bound leases by pool, from memory.
func (l *Leases) CountByPool(now time.Time) map[string]int {
	all, _ := l.All(context.Background(), now)
	out := map[string]int{}
	for _, le := range all {
		out[le.Pool]++
	}
	return out
}

// HostLeases returns the live bound lease of each of the given hosts that
// has one, from memory.
func (l *Leases) HostLeases(hostIDs []string, now time.Time) map[string]Lease {
	want := make(map[string]bool, len(hostIDs))
	for _, id := range hostIDs {
		want[id] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]Lease{}
	for mac, host := range l.hosts {
		if !want[host] {
			continue
		}
		ipn, ok := l.bound[mac]
		if !ok {
			continue
		}
		if le := l.live(ipn, now); le != nil && le.Bound && le.MAC.String() == mac {
			out[host] = *le
		}
	}
	return out
}
