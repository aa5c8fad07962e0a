package dhcpgate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/bootgate/bootgate/internal/pgtest"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// replicaBackends open the lease tables of one database twice, as two
// appliances serving one boot network would: an SQLite file opened by two
// Leases, and a PostgreSQL database opened by two stores.
var replicaBackends = []struct {
	name string
	open func(t *testing.T) (*Leases, *Leases)
}{
	{"sqlite", func(t *testing.T) (*Leases, *Leases) {
		path := filepath.Join(t.TempDir(), "bootgate.db")
		return mustOpenT(t, path), mustOpenT(t, path)
	}},
	{"postgres", func(t *testing.T) (*Leases, *Leases) {
		url := pgtest.DB(t)
		open := func() *Leases {
			st, err := store.Open(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			l, err := NewLeases(st.Leases())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			return l
		}
		return open(), open()
	}},
}

func mustOpenT(t *testing.T, path string) *Leases {
	t.Helper()
	l := mustOpen(t, path)
	t.Cleanup(func() { l.Close() })
	return l
}

// TestReplicasNeverShareAnAddress: two appliances on one database hand
// out one small pool to more clients than it has addresses, at once. Each
// appliance's memory knows only its own leases, so they offer the same
// addresses; the database's claim lets only one client bind each, and the
// other appliance NAKs. No address is ever acknowledged to two clients,
// and every acknowledged lease is the one stored.
func TestReplicasNeverShareAnAddress(t *testing.T) {
	for _, b := range replicaBackends {
		t.Run(b.name, func(t *testing.T) {
			r1, r2 := b.open(t)
			replicas := []*Leases{r1, r2}
			pool := &Pool{Name: PoolQuarantine, Start: net.IPv4(10, 24, 0, 100), End: net.IPv4(10, 24, 0, 115),
				Netmask: net.CIDRMask(24, 32), LeaseTime: time.Hour}
			const clients, attempts = 24, 8
			ctx := context.Background()
			now := time.Now()
			var (
				mu    sync.Mutex
				acked = map[uint32][]string{} // address → clients it was acknowledged to
				naks  int
				wg    sync.WaitGroup
			)
			errs := make(chan error, clients)
			for c := range clients {
				hw := net.HardwareAddr{0x02, 0, 0, 0, 1, byte(c)}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range attempts {
						l := replicas[(c+i)%len(replicas)]
						le, err := l.Offer(ctx, pool, hw, now, time.Minute)
						if err != nil {
							return // the pool is full (as this appliance sees it)
						}
						ok, err := l.Bind(ctx, pool, hw, le.IP, now, time.Hour)
						if err != nil {
							errs <- fmt.Errorf("client %d: %w", c, err)
							return
						}
						mu.Lock()
						if ok {
							acked[ip4(le.IP)] = append(acked[ip4(le.IP)], hw.String())
						} else {
							naks++
						}
						mu.Unlock()
						if ok {
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			size := int(ip4(pool.End) - ip4(pool.Start) + 1)
			if len(acked) != size {
				t.Errorf("%d addresses bound, want the whole pool of %d", len(acked), size)
			}
			for ipn, macs := range acked {
				if len(macs) > 1 {
					// A client may be acknowledged twice for its own
					// address (it asked both appliances); never two clients.
					for _, m := range macs[1:] {
						if m != macs[0] {
							t.Errorf("%s acknowledged to %v", ipOf(ipn), macs)
							break
						}
					}
				}
				var mac string
				if err := r1.t.DB().QueryRow(`SELECT mac FROM dhcp_leases WHERE ip = $1`, ipn).Scan(&mac); err != nil || mac != macs[0] {
					t.Errorf("stored lease of %s: %q, %v; want %s", ipOf(ipn), mac, err, macs[0])
				}
			}
			t.Logf("%d bound, %d NAKed as taken by the other appliance", len(acked), naks)
		})
	}
}

// openReplicasPG opens two appliances' stores and leases on one fresh
// PostgreSQL database.
func openReplicasPG(t *testing.T) (stA, stB *store.DB, la, lb *Leases) {
	t.Helper()
	url := pgtest.DB(t)
	open := func() (*store.DB, *Leases) {
		st, err := store.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		l, err := NewLeases(st.Leases())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return st, l
	}
	stA, la = open()
	stB, lb = open()
	return stA, stB, la, lb
}

// TestReplicasShareLeasesAndBindings: a lease and a host binding written
// through appliance A are what appliance B answers with (BoundTo, HostOf,
// its DHCP pool choice and its gateway's input), without a restart; a
// production lease B binds for the host is in A's gateway input; and an
// operator's quarantine through A takes the host out of B's.
func TestReplicasShareLeasesAndBindings(t *testing.T) {
	stA, stB, la, lb := openReplicasPG(t)
	ctx := context.Background()
	now := time.Now()
	q := &Pool{Name: PoolQuarantine, Start: net.IPv4(10, 25, 0, 100), End: net.IPv4(10, 25, 0, 199),
		Netmask: net.CIDRMask(24, 32), LeaseTime: time.Hour}
	p := &Pool{Name: PoolProduction, Start: net.IPv4(10, 25, 1, 100), End: net.IPv4(10, 25, 1, 199),
		Netmask: net.CIDRMask(24, 32), LeaseTime: time.Hour}
	mac := net.HardwareAddr{0x02, 0, 0, 0, 2, 1}

	// B starts knowing nothing; A leases the client and binds it to h1.
	off, err := la.Offer(ctx, q, mac, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := la.Bind(ctx, q, mac, off.IP, now, time.Hour); err != nil || !ok {
		t.Fatalf("bind through A: %v, %v", ok, err)
	}
	if got, ok := lb.BoundTo(ctx, off.IP, now); !ok || got.String() != mac.String() {
		t.Errorf("B: BoundTo(%s) = %v, %v; want %s", off.IP, got, ok, mac)
	}
	if err := la.BindHost(ctx, mac, "h1", now); err != nil {
		t.Fatal(err)
	}
	if got, err := lb.HostOf(ctx, mac); err != nil || got != "h1" {
		t.Errorf("B: HostOf(%s) = %q, %v; want h1", mac, got, err)
	}
	// B refuses to bind the MAC to another host, as A would.
	if err := lb.BindHost(ctx, mac, "h2", now); !errors.Is(err, ErrMACBound) {
		t.Errorf("B: BindHost(%s, h2) = %v; want ErrMACBound", mac, err)
	}

	// h1 passes (recorded through A): B's DHCP gate admits it.
	pass := &store.Attestation{HostID: "h1", Time: now, Verdict: wire.VerdictPass, PolicyName: "p", PolicyDigest: "d"}
	if _, err := stA.Record(ctx, pass, store.Host{ID: "h1"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := (StoreAdmission{Leases: lb, Hosts: stB}).Admitted(ctx, mac); err != nil || !ok {
		t.Errorf("B: Admitted(%s) = %v, %v; want true", mac, ok, err)
	}
	// The client moves to production through B.
	poff, err := lb.Offer(ctx, p, mac, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := lb.Bind(ctx, p, mac, poff.IP, now, time.Hour); err != nil || !ok {
		t.Fatalf("bind production through B: %v, %v", ok, err)
	}
	if _, ok := la.BoundTo(ctx, off.IP, now); ok {
		t.Errorf("A: the quarantine lease %s outlived the client's move to production through B", off.IP)
	}
	want := []string{poff.IP.String() + " " + mac.String()}
	for name, r := range map[string]struct {
		l  *Leases
		st *store.DB
	}{"A": {la, stA}, "B": {lb, stB}} {
		if got := admittedOf(t, r.l, r.st, now); !slices.Equal(got, want) {
			t.Errorf("%s: AdmittedLeases = %v; want %v", name, got, want)
		}
		if hl := r.l.HostLeases([]string{"h1"}, now); hl["h1"].IP.String() != poff.IP.String() {
			t.Errorf("%s: HostLeases(h1) = %+v; want %s", name, hl, poff.IP)
		}
	}

	if got := la.CountByPool(now); got[PoolProduction] != 1 || got[PoolQuarantine] != 0 {
		t.Errorf("A: CountByPool = %v; want the production lease B bound", got)
	}

	// h1 attests from another MAC, and is bound to it through A: the
	// production lease of the MAC it leaves, which B bound, ends.
	mac2 := net.HardwareAddr{0x02, 0, 0, 0, 2, 2}
	off2, err := la.Offer(ctx, q, mac2, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := la.Bind(ctx, q, mac2, off2.IP, now, time.Hour); err != nil || !ok {
		t.Fatalf("bind %s through A: %v, %v", mac2, ok, err)
	}
	if err := la.BindHost(ctx, mac2, "h1", now); err != nil {
		t.Fatal(err)
	}
	if got, ok := lb.BoundTo(ctx, poff.IP, now); ok {
		t.Errorf("B: BoundTo(%s) = %s after h1 moved to %s; want no lease", poff.IP, got, mac2)
	}
	if got, err := lb.HostOf(ctx, mac); err != nil || got != "" {
		t.Errorf("B: HostOf(%s) = %q, %v after h1 moved; want none", mac, got, err)
	}
	if got := admittedOf(t, lb, stB, now); len(got) != 0 {
		t.Errorf("B: AdmittedLeases after h1 moved to a quarantine lease = %v; want none", got)
	}

	// An operator quarantines h1 through A: B's gateway input loses it.
	// (h1 is back on a production lease first.)
	poff2, err := lb.Offer(ctx, p, mac2, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := lb.Bind(ctx, p, mac2, poff2.IP, now, time.Hour); err != nil || !ok {
		t.Fatalf("bind production for %s through B: %v, %v", mac2, ok, err)
	}
	if got := admittedOf(t, lb, stB, now); len(got) != 1 {
		t.Fatalf("B: AdmittedLeases = %v; want h1's lease on %s", got, mac2)
	}
	if err := stA.Quarantine(ctx, "h1", "local:alice"); err != nil {
		t.Fatal(err)
	}
	if got := admittedOf(t, lb, stB, now); len(got) != 0 {
		t.Errorf("B: AdmittedLeases after the quarantine through A = %v; want none", got)
	}
	// A set of admitted hosts read before the quarantine (a gateway sync
	// that read it, then the leases) does not bring the host back: on a
	// shared database admission and leases are read in one statement.
	if les, err := lb.AdmittedLeases(ctx, now, staleAdmitted{"h1": true}); err != nil || len(les) != 0 {
		t.Errorf("B: AdmittedLeases with a stale admitted set = %v, %v; want none", les, err)
	}
	if ok, err := (StoreAdmission{Leases: lb, Hosts: stB}).Admitted(ctx, mac2); err != nil || ok {
		t.Errorf("B: Admitted(%s) after the quarantine = %v, %v; want false", mac2, ok, err)
	}
}

// staleAdmitted is an admitted set read before a change.
type staleAdmitted map[string]bool

func (s staleAdmitted) AdmittedHosts(context.Context) (map[string]bool, error) { return s, nil }

// admittedOf lists l.AdmittedLeases as "ip mac".
func admittedOf(t *testing.T, l *Leases, st *store.DB, now time.Time) []string {
	t.Helper()
	les, err := l.AdmittedLeases(context.Background(), now, st)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, le := range les {
		out = append(out, le.IP.String()+" "+le.MAC.String())
	}
	return out
}

// TestReplicasRenewThroughTheOther: a client bound through A renews
// through B (B reads the lease from the database: an ACK, not a NAK), and
// A then sees the lease B wrote.
func TestReplicasRenewThroughTheOther(t *testing.T) {
	_, _, la, lb := openReplicasPG(t)
	ctx := context.Background()
	now := time.Now()
	q := &Pool{Name: PoolQuarantine, Start: net.IPv4(10, 26, 0, 100), End: net.IPv4(10, 26, 0, 199),
		Netmask: net.CIDRMask(24, 32), LeaseTime: time.Hour}
	mac := net.HardwareAddr{0x02, 0, 0, 0, 3, 1}
	// Another client's offer on A first, so that the client's address is
	// not the one B would offer a new client.
	if _, err := la.Offer(ctx, q, net.HardwareAddr{0x02, 0, 0, 0, 3, 2}, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	off, err := la.Offer(ctx, q, mac, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := la.Bind(ctx, q, mac, off.IP, now, time.Hour); err != nil || !ok {
		t.Fatalf("bind through A: %v, %v", ok, err)
	}
	// B offers the client its own lease, and renews it.
	later := now.Add(time.Minute)
	boff, err := lb.Offer(ctx, q, mac, later, time.Minute)
	if err != nil || !boff.IP.Equal(off.IP) {
		t.Fatalf("B: Offer = %+v, %v; want the client's lease %s", boff, err, off.IP)
	}
	if ok, err := lb.Bind(ctx, q, mac, off.IP, later, time.Hour); err != nil || !ok {
		t.Fatalf("renew through B: %v, %v", ok, err)
	}
	le, err := la.t.Lease(ctx, ip4(off.IP), now.UnixNano())
	if err != nil || le == nil || le.Expires != later.Add(time.Hour).UnixNano() {
		t.Errorf("stored lease after the renewal through B: %+v, %v", le, err)
	}
}

// TestReplicasPoolFollowsAttestation: two DHCP gates on one PostgreSQL
// database. A client leased and bound to its host through gate A is
// answered by gate B as the database says: once the host is admitted
// (through A), B refuses to renew its quarantine lease and gives it a
// production lease, which A's gateway input holds; once an operator
// quarantines it through A, B gives it the quarantine pool again.
func TestReplicasPoolFollowsAttestation(t *testing.T) {
	stA, stB, la, lb := openReplicasPG(t)
	ctx := context.Background()
	newServer := func(l *Leases, st *store.DB) *Server {
		s, err := New(testConfig(), l, StoreAdmission{Leases: l, Hosts: st}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := newServer(la, stA), newServer(lb, stB)
	hw := mac(7)
	ack := exchange(t, a, hw)
	if !a.cfg.Quarantine.Contains(ack.YourIPAddr) {
		t.Fatalf("unknown host got %v through A", ack.YourIPAddr)
	}
	// The attestation API of A records a pass over the client's link.
	now := time.Now()
	if err := la.BindHost(ctx, hw, "h1", now); err != nil {
		t.Fatal(err)
	}
	pass := &store.Attestation{HostID: "h1", Time: now, Verdict: wire.VerdictPass, PolicyName: "p", PolicyDigest: "d"}
	if _, err := stA.Record(ctx, pass, store.Host{ID: "h1"}); err != nil {
		t.Fatal(err)
	}

	renew, _ := dhcpv4.NewRequestFromOffer(ack)
	if nak, err := b.Reply(ctx, renew); err != nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("B: renewing the quarantine lease of an admitted host: %v, %v; want a NAK", nak, err)
	}
	ack = exchange(t, b, hw)
	if !b.cfg.Production.Contains(ack.YourIPAddr) {
		t.Fatalf("B gave the admitted host %v, not a production address", ack.YourIPAddr)
	}
	want := []string{ack.YourIPAddr.String() + " " + hw.String()}
	if got := admittedOf(t, la, stA, time.Now()); !slices.Equal(got, want) {
		t.Errorf("A: AdmittedLeases = %v; want %v", got, want)
	}

	if err := stA.Quarantine(ctx, "h1", "local:alice"); err != nil {
		t.Fatal(err)
	}
	ack = exchange(t, b, hw)
	if !b.cfg.Quarantine.Contains(ack.YourIPAddr) {
		t.Errorf("B gave the host quarantined through A %v, not a quarantine address", ack.YourIPAddr)
	}
	if got := admittedOf(t, lb, stB, time.Now()); len(got) != 0 {
		t.Errorf("B: AdmittedLeases after the quarantine = %v; want none", got)
	}
}

// TestReplicasForwardAHostOnOneAddress: one host (one TPM) attests from
// two MACs, bound through two appliances on one PostgreSQL database: one
// after the other, and then at once. The gateways of both appliances
// together forward the host on at most one address, whichever appliance
// bound it last and whatever the other still holds in memory.
func TestReplicasForwardAHostOnOneAddress(t *testing.T) {
	for _, b := range replicaBackends {
		t.Run(b.name, func(t *testing.T) {
			if b.name == "sqlite" {
				t.Skip("an SQLite file serves one appliance: its gateway reads its own memory")
			}
			r1, r2 := b.open(t)
			ctx := context.Background()
			now := time.Now()
			// Each appliance offers from its own part of the pool, so that
			// neither offers an address the other has bound.
			p1 := &Pool{Name: PoolProduction, Start: net.IPv4(10, 27, 0, 10), End: net.IPv4(10, 27, 0, 120),
				Netmask: net.CIDRMask(24, 32), LeaseTime: time.Hour}
			p2 := &Pool{Name: PoolProduction, Start: net.IPv4(10, 27, 0, 130), End: net.IPv4(10, 27, 0, 240),
				Netmask: net.CIDRMask(24, 32), LeaseTime: time.Hour}
			lease := func(l *Leases, mac net.HardwareAddr) {
				t.Helper()
				p := p1
				if l == r2 {
					p = p2
				}
				off, err := l.Offer(ctx, p, mac, now, time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				if ok, err := l.Bind(ctx, p, mac, off.IP, now, time.Hour); err != nil || !ok {
					t.Fatalf("bind %s: %v, %v", mac, ok, err)
				}
			}
			forwarded := func(hosts fakeHosts) []string {
				t.Helper()
				var all []string
				for _, l := range []*Leases{r1, r2} {
					ips, err := l.admittedIPs(ctx, now, hosts)
					if err != nil {
						t.Fatal(err)
					}
					for _, ip := range ips {
						if !slices.Contains(all, ip.String()) {
							all = append(all, ip.String())
						}
					}
				}
				return all
			}

			// One after the other: MAC1 through r1, then MAC2 through r2.
			mac1, mac2 := net.HardwareAddr{0x02, 0, 0, 0, 4, 1}, net.HardwareAddr{0x02, 0, 0, 0, 4, 2}
			lease(r1, mac1)
			if err := r1.BindHost(ctx, mac1, "h1", now); err != nil {
				t.Fatal(err)
			}
			lease(r2, mac2)
			if err := r2.BindHost(ctx, mac2, "h1", now); err != nil {
				t.Fatal(err)
			}
			if got := forwarded(fakeHosts{"h1": store.HostAdmitted}); len(got) > 1 {
				t.Errorf("h1 bound to %s through r1, then to %s through r2: forwarded on %v; want at most one address", mac1, mac2, got)
			}

			// At once: each round a new host binds two MACs, one through
			// each appliance.
			for i := range 40 {
				host := fmt.Sprintf("h-%d", i)
				m := [2]net.HardwareAddr{{0x02, 1, 0, 0, 0, byte(i)}, {0x02, 2, 0, 0, 0, byte(i)}}
				lease(r1, m[0])
				lease(r2, m[1])
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for j, l := range []*Leases{r1, r2} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[j] = l.BindHost(ctx, m[j], host, now)
					}()
				}
				wg.Wait()
				for j, err := range errs {
					if err != nil {
						t.Fatalf("round %d: BindHost(%s, %s): %v", i, m[j], host, err)
					}
				}
				if got := forwarded(fakeHosts{host: store.HostAdmitted}); len(got) > 1 {
					t.Fatalf("round %d: %s bound to %s and %s at once through two appliances: forwarded on %v; want at most one address", i, host, m[0], m[1], got)
				}
			}
		})
	}
}
