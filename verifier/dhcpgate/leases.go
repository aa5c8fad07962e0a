package dhcpgate

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/store"
)

// Errors of the lease store. The server drops a message that meets one of
// them and changes nothing.
var (
	// ErrPoolFull is returned when a pool has no free address.
	ErrPoolFull = errors.New("no free address in the pool")
	// ErrNotHolder: a RELEASE or DECLINE came from a client that neither
	// holds nor was offered the address (RFC 2131 §4.3.3, §4.3.4).
	ErrNotHolder = errors.New("the client does not hold the address")
	// ErrOutsidePools: a DECLINE or RELEASE named an address outside every
	// configured pool.
	ErrOutsidePools = errors.New("the address is in no pool")
	// ErrTooManyDeclined: the pool already has as many declined addresses
	// set aside as it may (MaxDeclined), so that declines cannot empty it.
	ErrTooManyDeclined = errors.New("too many declined addresses in the pool")
	// ErrNoLease: a host was to be bound to a client that holds no lease.
	ErrNoLease = errors.New("the client holds no lease")
	// ErrMACBound: a host was to be bound to a MAC address that is bound
	// to another host, and that binding has not expired. A live binding
	// never moves to another host: it ends only when it expires (with the
	// MAC's last lease).
	ErrMACBound = errors.New("the MAC address is bound to another host")
)

// Lease is one address bound (or offered) to one client.
type Lease struct {
	IP      net.IP
	MAC     net.HardwareAddr
	Pool    string
	Bound   bool // false while only offered
	Expires time.Time
	// Relay is what the relay agent that carried the client's last bound
	// REQUEST said about it; nil when the client is on the boot network
	// itself.
	Relay *Relay
}

// Relay is what a DHCP relay agent told about a client (RFC 3046): its own
// address (giaddr, RFC 2131 §4.1) and the circuit ID (sub-option 1) and
// remote ID (sub-option 2) of its relay agent information option (82),
// opaque bytes as received (at most 255 each; nil when absent).
type Relay struct {
	Addr      net.IP
	CircuitID []byte
	RemoteID  []byte
}

// String shows r on one line for logs and operators, with the IDs made
// printable (textsafe.Bytes).
func (r *Relay) String() string {
	if r == nil {
		return ""
	}
	return fmt.Sprintf(`relay %s circuit-id "%s" remote-id "%s"`, r.Addr, textsafe.Bytes(r.CircuitID), textsafe.Bytes(r.RemoteID))
}

// hostBinding is the host behind a MAC address, until the latest lease the
// MAC was given while bound expires.
type hostBinding struct {
	id      string
	expires time.Time
}

// Leases keeps the leases in the appliance's database (store.LeaseTables:
// its SQLite file, or the PostgreSQL database several appliances share), so
// that they survive a restart of the appliance, and mirrors them in memory,
// so that answering a DISCOVER costs no disk write and no scan. An address
// is never held by two clients at once: every change happens under one
// lock, and bound leases are written through to the database before they
// are acknowledged, by a claim that the database refuses when another
// client holds the address (another appliance bound it). Offers live in
// memory only (an offer lost in a restart was never acknowledged).
//
// On a database several appliances share (store.LeaseTables.Replicated),
// the database is the truth and memory only a cache of it: each DISCOVER,
// REQUEST and host binding first reads the client's leases, the requested
// address and the client's host binding from the database into memory;
// BoundTo, HostOf, AdmittedLeases and HostLeases read the database alone,
// and a failed read grants nothing. So an appliance answers for a lease or
// a host binding another appliance wrote. An appliance may still offer an
// address another appliance has bound; it then NAKs the REQUEST that
// follows, and the client starts over.
type Leases struct {
	mu        sync.Mutex
	t         *store.LeaseTables
	commits   chan commitReq
	stopped   chan struct{}
	closeOnce sync.Once
	byIP      map[uint32]*Lease      // live leases and offers, and declined addresses
	bound     map[string]uint32      // MAC → the client's bound lease
	offered   map[string]uint32      // MAC → the offer standing for the client (it may also hold a lease in the other pool)
	offers    map[string][]*Lease    // per pool: offers in the order they were made (some since bound or gone)
	hosts     map[string]hostBinding // MAC → host
	macOf     map[string]string      // host ID → MAC (one MAC per host)
	declined  map[uint32]time.Time   // declined addresses set aside, until when (at most MaxDeclined per pool)
	cursor    map[string]uint32      // per pool: where the next free-address search starts
	now       func() time.Time       // the clock of HostOf
	// shared: other appliances write the tables too (store.LeaseTables.
	// Replicated), so the database, not memory, decides.
	shared bool

	// Withdrawn counts offers withdrawn from clients to make room in a
	// full pool.
	Withdrawn atomic.Uint64
}

// OpenLeases opens the lease tables in the SQLite file at path, creating
// the file when missing; it may be the appliance's store file. The tables
// are part of the appliance's one schema: store.Migrate brings the file up
// to date (store and lease tables alike) and refuses a file of a newer
// bootgate (the error wraps store.ErrSchemaTooNew).
func OpenLeases(path string) (*Leases, error) {
	t, err := store.OpenLeaseTables(path)
	if err != nil {
		return nil, fmt.Errorf("open leases: %w", err)
	}
	l, err := NewLeases(t)
	if err != nil {
		t.Close()
		return nil, err
	}
	return l, nil
}

// NewLeases keeps the leases in t, loading the live ones into memory;
// Close closes t. With a PostgreSQL store's tables (store.DB.Leases),
// several appliances can serve one boot network.
func NewLeases(t *store.LeaseTables) (*Leases, error) {
	l := &Leases{t: t, byIP: map[uint32]*Lease{}, bound: map[string]uint32{}, offered: map[string]uint32{}, offers: map[string][]*Lease{},
		hosts: map[string]hostBinding{}, macOf: map[string]string{}, declined: map[uint32]time.Time{}, cursor: map[string]uint32{}, now: time.Now,
		shared: t.Replicated()}
	if err := l.load(time.Now()); err != nil {
		return nil, fmt.Errorf("open leases: %w", err)
	}
	l.commits, l.stopped = make(chan commitReq, 1024), make(chan struct{})
	go l.committer()
	return l, nil
}

// load reads the live leases and the MAC bindings into memory.
func (l *Leases) load(now time.Time) error {
	leases, hosts, err := l.t.Load(context.Background(), now.UnixNano())
	if err != nil {
		return err
	}
	for _, r := range leases {
		le := leaseOf(r)
		l.byIP[r.IP] = le
		switch {
		case le.MAC != nil:
			l.bound[r.MAC] = r.IP
		case r.Pool == poolDeclined:
			l.declined[r.IP] = le.Expires
		}
	}
	// Newest first: where an older version left a host behind several MACs,
	// the latest binding wins.
	for _, h := range hosts {
		if _, taken := l.macOf[h.HostID]; taken {
			continue
		}
		l.hosts[h.MAC] = hostBinding{id: h.HostID, expires: time.Unix(0, h.Expires)}
		l.macOf[h.HostID] = h.MAC
	}
	return nil
}

// refresh reads from the database what it holds now for the client key
// and the address ipn (0: none) and puts it into memory in place of what
// memory held of them, on a database several appliances share; otherwise
// it does nothing. Memory keeps its offers, except where the database
// holds a lease. An error changes nothing: the caller refuses.
func (l *Leases) refresh(ctx context.Context, key string, ipn uint32, now time.Time) error {
	if !l.shared {
		return nil
	}
	rows, host, err := l.t.Client(ctx, key, ipn, now.UnixNano())
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Bound leases of the client or of the address that the database no
	// longer holds (released, moved, taken over by another appliance).
	drop := func(ipn uint32) {
		if le := l.byIP[ipn]; le != nil && le.Bound {
			delete(l.byIP, ipn)
			delete(l.declined, ipn)
			l.forget(le, ipn)
		}
	}
	if cur, ok := l.bound[key]; ok {
		drop(cur)
	}
	if ipn != 0 {
		drop(ipn)
	}
	for _, r := range rows {
		if old := l.byIP[r.IP]; old != nil {
			delete(l.byIP, r.IP)
			l.forget(old, r.IP)
		}
		le := leaseOf(r)
		l.byIP[r.IP] = le
		switch {
		case le.MAC != nil:
			if prev, ok := l.bound[r.MAC]; ok && prev != r.IP {
				// The client's other lease in memory is gone from the
				// database (a client has one bound lease).
				drop(prev)
			}
			l.bound[r.MAC] = r.IP
		case r.Pool == poolDeclined:
			l.declined[r.IP] = le.Expires
		}
	}
	if hb, ok := l.hosts[key]; ok && l.macOf[hb.id] == key {
		delete(l.macOf, hb.id)
	}
	delete(l.hosts, key)
	if host != nil {
		if old, ok := l.macOf[host.HostID]; ok && old != key {
			delete(l.hosts, old)
		}
		l.hosts[key] = hostBinding{id: host.HostID, expires: time.Unix(0, host.Expires)}
		l.macOf[host.HostID] = key
	}
	return nil
}

// leaseOf is the Lease a stored row stands for.
func leaseOf(r store.LeaseRow) *Lease {
	hw, _ := net.ParseMAC(r.MAC)
	le := &Lease{IP: ipOf(r.IP), MAC: hw, Pool: r.Pool, Bound: r.Bound, Expires: time.Unix(0, r.Expires)}
	if ip := net.ParseIP(r.Relay).To4(); ip != nil {
		le.Relay = &Relay{Addr: ip, CircuitID: r.CircuitID, RemoteID: r.RemoteID}
	}
	return le
}

// live returns the unexpired lease of ip, dropping an expired one.
func (l *Leases) live(ipn uint32, now time.Time) *Lease {
	le, ok := l.byIP[ipn]
	if !ok {
		return nil
	}
	if !le.Expires.After(now) {
		delete(l.byIP, ipn)
		delete(l.declined, ipn)
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
		err = l.t.Close()
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
	if err := l.refresh(ctx, mac.String(), 0, now); err != nil {
		return nil, fmt.Errorf("offer: %w", err)
	}
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

// Bind is BindRelayed for a client on the boot network itself (no relay).
func (l *Leases) Bind(ctx context.Context, p *Pool, mac net.HardwareAddr, ip net.IP, now time.Time, ttl time.Duration) (bool, error) {
	return l.BindRelayed(ctx, p, mac, ip, now, ttl, nil)
}

// BindRelayed binds ip to mac in pool p for ttl, recording relay (nil: none)
// with the lease, and reports whether it did; false means the server NAKs
// (RFC 2131 §4.3.2) and nothing changed. It binds only
//   - the client's own live bound lease in p (a renewal), or
//   - when the client holds a bound lease in the other pool (it was
//     admitted or quarantined since), the address it was offered in p, or
//   - when it holds no lease, the address it was offered, or a free address
//     of p if no offer stands for it (a client that comes back after its
//     offer was lost in a restart).
//
// So a REQUEST never moves a client's bound lease to another address of the
// same pool, and never takes an address bound or offered to another client.
// Binding in the other pool ends the client's lease there. When mac is bound
// to a host (BindHost), the binding is extended to the new lease's expiry.
//
// The lease is in the database before BindRelayed returns: concurrent
// binds are written in one transaction (group commit), which is what lets
// a single SQLite file keep up with a boot storm. When the database
// refuses the address because another client holds it (another appliance
// bound it), BindRelayed returns false, changes nothing, and remembers
// that lease.
func (l *Leases) BindRelayed(ctx context.Context, p *Pool, mac net.HardwareAddr, ip net.IP, now time.Time, ttl time.Duration, relay *Relay) (bool, error) {
	if ip.To4() == nil || !p.Contains(ip) || len(mac) == 0 {
		return false, nil
	}
	ipn, key := ip4(ip), mac.String()
	exp := now.Add(ttl)
	if err := l.refresh(ctx, key, ipn, now); err != nil {
		return false, fmt.Errorf("bind lease: %w", err)
	}
	l.mu.Lock()
	if le := l.live(ipn, now); le != nil && (le.MAC == nil || le.MAC.String() != key) {
		l.mu.Unlock()
		return false, nil
	}
	cur, curIPN := l.boundLease(key, now)
	off, offIPN := l.standingOffer(key, now)
	if off != nil && off.Pool != p.Name {
		off = nil // an offer in the other pool says nothing about this one
	}
	switch {
	case cur != nil && cur.Pool == p.Name:
		if curIPN != ipn {
			l.mu.Unlock()
			return false, nil // no move within a pool
		}
	case cur != nil || off != nil:
		if off == nil || offIPN != ipn {
			l.mu.Unlock()
			return false, nil // a pool change, or a new client, binds what it was offered
		}
	}
	prevIP, prev := l.byIP[ipn]
	// The client's lease in the pool it leaves ends with this bind.
	hadOther := cur != nil && curIPN != ipn
	// Reserve in memory first, so that no one else takes the address while
	// it is being written.
	mine := &Lease{IP: ipOf(ipn), MAC: mac, Pool: p.Name, Bound: true, Expires: exp, Relay: relay}
	l.dropOffer(key)
	l.byIP[ipn] = mine
	l.bound[key] = ipn
	if hadOther {
		delete(l.byIP, curIPN)
	}
	hb, hasHost := l.hosts[key]
	var hostExp int64
	if hasHost && hb.expires.After(now) && exp.After(hb.expires) {
		l.hosts[key] = hostBinding{id: hb.id, expires: exp}
		hostExp = exp.UnixNano()
	}
	moved := hadOther
	if l.shared {
		// Another appliance may have bound the client elsewhere, or bound
		// it to a host, since the refresh: the claim ends the client's
		// other leases and extends its live binding in the database,
		// whichever appliance wrote them.
		moved, hostExp = true, exp.UnixNano()
	}
	l.mu.Unlock()

	req := commitReq{ip: ipn, mac: key, pool: p.Name, expires: exp.UnixNano(), moved: moved, relay: relay, hostExpires: hostExp, now: now.UnixNano(), done: make(chan error, 1)}
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
			if hadOther && l.byIP[curIPN] == nil {
				l.byIP[curIPN] = cur
				l.bound[key] = curIPN
			}
			if hasHost && l.hosts[key].id == hb.id {
				l.hosts[key] = hb
			}
		}
		l.mu.Unlock()
		if errors.Is(err, errTaken) {
			l.learn(ctx, ipn, now)
			return false, nil
		}
		return false, fmt.Errorf("bind lease: %w", err)
	}
	return true, nil
}

// errTaken is a claim the database refused: another client holds the
// address.
var errTaken = errors.New("the address is held by another client")

// learn puts the database's live lease of ipn, which another appliance
// wrote, into memory, so that the address is not offered again while it
// lasts. A failure to read it is ignored: the next claim is refused again.
func (l *Leases) learn(ctx context.Context, ipn uint32, now time.Time) {
	r, err := l.t.Lease(ctx, ipn, now.UnixNano())
	if err != nil || r == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.live(ipn, now) != nil {
		return
	}
	le := leaseOf(*r)
	l.byIP[ipn] = le
	switch {
	case le.MAC != nil:
		l.bound[r.MAC] = ipn
	case r.Pool == poolDeclined:
		l.declined[ipn] = le.Expires
	}
}

// boundLease returns the client's live bound lease and its address, or nil.
func (l *Leases) boundLease(key string, now time.Time) (*Lease, uint32) {
	ipn, ok := l.bound[key]
	if !ok {
		return nil, 0
	}
	le := l.live(ipn, now)
	if le == nil || !le.Bound || le.MAC == nil || le.MAC.String() != key {
		return nil, 0
	}
	return le, ipn
}

// standingOffer returns the offer standing for the client and its address,
// or nil.
func (l *Leases) standingOffer(key string, now time.Time) (*Lease, uint32) {
	ipn, ok := l.offered[key]
	if !ok {
		return nil, 0
	}
	le := l.live(ipn, now)
	if le == nil || le.Bound || le.MAC == nil || le.MAC.String() != key {
		return nil, 0
	}
	return le, ipn
}

// commitReq is one bound lease waiting to be written.
type commitReq struct {
	ip      uint32
	mac     string
	pool    string
	expires int64
	moved   bool // delete the client's other addresses
	relay   *Relay
	// hostExpires, when not 0, extends the client's host binding.
	hostExpires int64
	now         int64 // the bind's clock: a lease expired then may be taken over
	done        chan error
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
		ok, err := l.write(batch)
		for i, r := range batch {
			switch {
			case err != nil:
				r.done <- err
			case !ok[i]:
				r.done <- errTaken
			default:
				r.done <- nil
			}
		}
	}
}

// write claims the batch's leases in one transaction; see
// store.LeaseTables.Claim. The batch's clock is its earliest bind's, so
// that no claim takes over a lease that had not expired at its own time.
func (l *Leases) write(batch []commitReq) ([]bool, error) {
	claims := make([]store.LeaseClaim, len(batch))
	now := batch[0].now
	for i, r := range batch {
		row := store.LeaseRow{IP: r.ip, MAC: r.mac, Pool: r.pool, Bound: true, Expires: r.expires}
		if r.relay != nil {
			row.Relay, row.CircuitID, row.RemoteID = r.relay.Addr.String(), r.relay.CircuitID, r.relay.RemoteID
		}
		claims[i] = store.LeaseClaim{Lease: row, Moved: r.moved, HostExpires: r.hostExpires}
		now = min(now, r.now)
	}
	return l.t.Claim(context.Background(), now, claims)
}

// Holds reports whether mac holds a live bound lease of ip, or the offer
// of ip standing for it: whether a RELEASE or DECLINE of ip from mac could
// count (RFC 2131 §4.3.3, §4.3.4). It changes nothing.
func (l *Leases) Holds(mac net.HardwareAddr, ip net.IP, now time.Time) bool {
	if ip.To4() == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	le := l.live(ip4(ip), now)
	return le != nil && le.MAC != nil && le.MAC.String() == mac.String()
}

// Release ends mac's bound lease of ip (RFC 2131 §4.3.4). It returns
// ErrNotHolder, and changes nothing, when mac does not hold that lease. The
// client's host binding stays until it expires.
func (l *Leases) Release(ctx context.Context, mac net.HardwareAddr, ip net.IP) error {
	if ip.To4() == nil {
		return fmt.Errorf("release %v: %w", ip, ErrNotHolder)
	}
	ipn, key := ip4(ip), mac.String()
	l.mu.Lock()
	defer l.mu.Unlock()
	le := l.live(ipn, l.now())
	if le == nil || !le.Bound || le.MAC == nil || le.MAC.String() != key {
		return fmt.Errorf("release %s from %s: %w", ip, mac, ErrNotHolder)
	}
	if err := l.t.Release(ctx, ipn, key); err != nil {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	delete(l.byIP, ipn)
	l.forget(le, ipn)
	return nil
}

// poolDeclined is the pool name of declined addresses set aside.
const poolDeclined = store.PoolDeclined

// MaxDeclined is how many declined addresses pool p may have set aside at
// once: an eighth of the pool, at least one. Declines beyond it are
// refused, so that DECLINEs (even from clients that were each offered an
// address) cannot take more than an eighth of a pool out of use.
func MaxDeclined(p *Pool) int {
	return max(1, int((ip4(p.End)-ip4(p.Start)+1)/8))
}

// Decline sets ip, an address of pool p, aside for d, because mac, which
// holds it or was offered it, found another machine using it (RFC 2131
// §4.3.3); mac's lease or offer of it ends. It returns, changing nothing,
// ErrOutsidePools when ip is not in p, ErrNotHolder when mac neither holds
// nor was offered ip, and ErrTooManyDeclined when p already has
// MaxDeclined(p) addresses set aside.
func (l *Leases) Decline(ctx context.Context, p *Pool, mac net.HardwareAddr, ip net.IP, now time.Time, d time.Duration) error {
	if ip.To4() == nil || !p.Contains(ip) {
		return fmt.Errorf("decline %v: %w", ip, ErrOutsidePools)
	}
	ipn, key := ip4(ip), mac.String()
	l.mu.Lock()
	defer l.mu.Unlock()
	le := l.live(ipn, now)
	if le == nil || le.MAC == nil || le.MAC.String() != key {
		return fmt.Errorf("decline %s from %s: %w", ip, mac, ErrNotHolder)
	}
	n := 0
	for dip, until := range l.declined {
		switch {
		case !until.After(now):
			delete(l.declined, dip)
		case p.Contains(ipOf(dip)):
			n++
		}
	}
	if n >= MaxDeclined(p) {
		return fmt.Errorf("decline %s in pool %s (%d set aside): %w", ip, p.Name, n, ErrTooManyDeclined)
	}
	until := now.Add(d)
	ok, err := l.t.Decline(ctx, ipn, key, until.UnixNano(), now.UnixNano())
	if err != nil {
		return fmt.Errorf("decline %s: %w", ip, err)
	}
	if !ok {
		// Another appliance bound it to another client since.
		return fmt.Errorf("decline %s from %s: %w", ip, mac, ErrNotHolder)
	}
	l.forget(le, ipn)
	l.byIP[ipn] = &Lease{IP: ipOf(ipn), Pool: poolDeclined, Bound: true, Expires: until}
	l.declined[ipn] = until
	return nil
}

// ByIP returns the live bound lease of ip, from memory: on a database
// several appliances share, only what this appliance has seen (BoundTo
// reads the database).
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

// All returns every live bound lease, by address, from memory. On an
// SQLite file memory holds what the file holds (bound leases are written
// through); on a database several appliances share, only what this
// appliance has seen.
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

// BindHost records that the client with mac, which must hold a live bound
// lease, is the host hostID (its attestation came from that lease's
// address). A MAC stands for one host and a host is behind one MAC: the
// binding ends hostID's binding to another MAC together with that MAC's
// production lease (written to the database in one transaction). The binding
// expires with mac's lease, and is extended whenever mac is given a lease
// (BindRelayed) while it lasts, so a host that leaves the network unbinds
// itself.
//
// A live binding of mac to another host is never replaced: any TPM can
// quote any link it can name, so a MAC changes hosts only once its binding
// has expired. BindHost then returns an error wrapping ErrMACBound (the
// *MACBoundError names the host and when its binding expires) and changes
// nothing. It returns ErrNoLease, and changes nothing, when mac holds no
// live bound lease.
func (l *Leases) BindHost(ctx context.Context, mac net.HardwareAddr, hostID string, now time.Time) error {
	if hostID == "" || len(mac) == 0 {
		return errors.New("bind host: a host ID and a MAC address are required")
	}
	key := mac.String()
	if err := l.refresh(ctx, key, 0, now); err != nil {
		return fmt.Errorf("bind host %s to %s: %w", hostID, mac, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	le, _ := l.boundLease(key, now)
	if le == nil {
		return fmt.Errorf("bind host %s to %s: %w", hostID, mac, ErrNoLease)
	}
	if cur := l.hostOf(key, now); cur != "" && cur != hostID {
		return &MACBoundError{MAC: slices.Clone(mac), Host: cur, Until: l.hosts[key].expires}
	}
	exp := le.Expires
	if hb, ok := l.hosts[key]; ok && hb.id == hostID && hb.expires.After(exp) {
		exp = hb.expires
	}
	// The host's previous MAC and its production lease are the
	// database's (the rows BindHost replaces), not memory's: another
	// appliance may have bound the host since this one last saw it.
	b := store.HostBind{MAC: key, HostID: hostID, Now: now.UnixNano(), Expires: exp.UnixNano(), EndPool: PoolProduction}
	res, err := l.t.BindHost(ctx, b)
	if err != nil {
		return err
	}
	if other := res.Other; other != nil {
		// Another appliance bound the MAC to another host since the
		// refresh: memory learns it.
		l.hosts[key] = hostBinding{id: other.HostID, expires: time.Unix(0, other.Expires)}
		l.macOf[other.HostID] = key
		return &MACBoundError{MAC: slices.Clone(mac), Host: other.HostID, Until: time.Unix(0, other.Expires)}
	}
	if prev, ok := l.hosts[key]; ok && prev.id != hostID && l.macOf[prev.id] == key {
		delete(l.macOf, prev.id)
	}
	if old, ok := l.macOf[hostID]; ok && old != key {
		if hb, ok := l.hosts[old]; ok && hb.id == hostID {
			delete(l.hosts, old)
		}
	}
	for _, m := range res.Left {
		if hb, ok := l.hosts[m]; ok && hb.id == hostID {
			delete(l.hosts, m)
		}
	}
	for _, r := range res.Ended {
		if le, ok := l.byIP[r.IP]; ok && le.MAC != nil && le.MAC.String() == r.MAC {
			delete(l.byIP, r.IP)
			l.forget(le, r.IP)
		}
	}
	l.hosts[key] = hostBinding{id: hostID, expires: exp}
	l.macOf[hostID] = key
	return nil
}

// MACBoundError is BindHost's refusal to move a live binding: MAC is bound
// to Host until Until. It wraps ErrMACBound.
type MACBoundError struct {
	MAC   net.HardwareAddr
	Host  string
	Until time.Time
}

func (e *MACBoundError) Error() string {
	return fmt.Sprintf("%s is bound to host %s until %s: %v", e.MAC, e.Host, e.Until.UTC().Format(time.RFC3339), ErrMACBound)
}

// Unwrap returns ErrMACBound.
func (e *MACBoundError) Unwrap() error { return ErrMACBound }

// HostOf returns the host bound to mac (BindHost), or "" when none is or
// the binding has expired. On an SQLite file it reads memory and never
// fails; on a database several appliances share it reads the database,
// and an error means the binding is unknown (callers refuse: fail closed).
func (l *Leases) HostOf(ctx context.Context, mac net.HardwareAddr) (string, error) {
	if l.shared {
		h, err := l.t.HostOf(ctx, mac.String(), l.now().UnixNano())
		if err != nil || h == nil {
			return "", err
		}
		return h.HostID, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hostOf(mac.String(), l.now()), nil
}

// hostOf returns the host bound to the client now, or "".
func (l *Leases) hostOf(key string, now time.Time) string {
	hb, ok := l.hosts[key]
	if !ok {
		return ""
	}
	if !hb.expires.After(now) {
		delete(l.hosts, key)
		if l.macOf[hb.id] == key {
			delete(l.macOf, hb.id)
		}
		return ""
	}
	return hb.id
}

// CountByPool counts the live bound leases by pool, from memory; on a
// database several appliances share, every appliance's, from the database
// (none when it cannot be read).
func (l *Leases) CountByPool(now time.Time) map[string]int {
	if l.shared {
		out, err := l.t.CountByPool(context.Background(), now.UnixNano())
		if err != nil {
			return map[string]int{}
		}
		return out
	}
	all, _ := l.All(context.Background(), now)
	out := map[string]int{}
	for _, le := range all {
		out[le.Pool]++
	}
	return out
}

// HostLeases returns the live bound lease of each of the given hosts that
// has one (the lease of the MAC the host is bound to now), from memory; on
// a database several appliances share, from the database (none when it
// cannot be read).
func (l *Leases) HostLeases(hostIDs []string, now time.Time) map[string]Lease {
	if l.shared {
		out := map[string]Lease{}
		for ids := range slices.Chunk(hostIDs, store.MaxPage) {
			rows, err := l.t.HostLeases(context.Background(), "", ids, now.UnixNano())
			if err != nil {
				return map[string]Lease{}
			}
			for _, r := range rows {
				out[r.HostID] = *leaseOf(r.LeaseRow)
			}
		}
		return out
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]Lease{}
	for _, host := range hostIDs {
		mac, ok := l.macOf[host]
		if !ok || l.hostOf(mac, now) != host {
			continue
		}
		if le, _ := l.boundLease(mac, now); le != nil {
			out[host] = *le
		}
	}
	return out
}
