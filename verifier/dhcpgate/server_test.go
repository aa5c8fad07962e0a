package dhcpgate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

type fakeAdmission struct {
	mu  sync.Mutex
	set map[string]bool
}

func (f *fakeAdmission) Admitted(_ context.Context, mac net.HardwareAddr) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.set[mac.String()], nil
}

func (f *fakeAdmission) admit(mac net.HardwareAddr, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set[mac.String()] = ok
}

func testConfig() Config {
	mask := net.CIDRMask(24, 32)
	return Config{
		ServerIP: net.IPv4(10, 24, 0, 1),
		Quarantine: Pool{Name: PoolQuarantine, Start: net.IPv4(10, 24, 0, 100), End: net.IPv4(10, 24, 0, 102),
			Netmask: mask, LeaseTime: time.Minute},
		Production: Pool{Name: PoolProduction, Start: net.IPv4(10, 24, 0, 200), End: net.IPv4(10, 24, 0, 250),
			Netmask: mask, Router: net.IPv4(10, 24, 0, 1), LeaseTime: time.Hour},
		Endpoint: "https://10.24.0.1:8443", CACert: []byte("ca"), BootFile: "bootgate/agent.efi",
	}
}

func newTestServer(t *testing.T) (*Server, *fakeAdmission, *Leases, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "leases.db")
	l, err := OpenLeases(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	adm := &fakeAdmission{set: map[string]bool{}}
	s, err := New(testConfig(), l, adm, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, adm, l, path
}

func mac(n byte) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, 0, n} }

func exchange(t *testing.T, s *Server, hw net.HardwareAddr) *dhcpv4.DHCPv4 {
	t.Helper()
	ctx := context.Background()
	disc, err := dhcpv4.NewDiscovery(hw)
	if err != nil {
		t.Fatal(err)
	}
	offer, err := s.Reply(ctx, disc)
	if err != nil || offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("discover: %v %v", offer, err)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := s.Reply(ctx, req)
	if err != nil || ack == nil {
		t.Fatalf("request: %v", err)
	}
	return ack
}

func TestPoolFollowsAttestation(t *testing.T) {
	s, adm, _, _ := newTestServer(t)
	hw := mac(1)
	ack := exchange(t, s, hw)
	if ack.MessageType() != dhcpv4.MessageTypeAck || !s.cfg.Quarantine.Contains(ack.YourIPAddr) {
		t.Fatalf("unknown host got %v %v", ack.MessageType(), ack.YourIPAddr)
	}
	if len(ack.Router()) != 0 {
		t.Error("the quarantine lease has a default route")
	}
	vendor := ack.Options.Get(dhcpv4.OptionVendorSpecificInformation)
	if len(vendor) < 2 || vendor[0] != wire.VendorEndpoint || string(vendor[2:2+int(vendor[1])]) != "https://10.24.0.1:8443" {
		t.Errorf("vendor option %x lacks the endpoint", vendor)
	}
	// Admitted: renewing the quarantine address is refused, a new exchange
	// gives a production lease.
	adm.admit(hw, true)
	renew, _ := dhcpv4.NewRequestFromOffer(ack)
	nak, err := s.Reply(context.Background(), renew)
	if err != nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("renewing a quarantine lease after admission: %v %v", nak, err)
	}
	ack = exchange(t, s, hw)
	if !s.cfg.Production.Contains(ack.YourIPAddr) || len(ack.Router()) == 0 {
		t.Fatalf("admitted host got %v, router %v", ack.YourIPAddr, ack.Router())
	}
	// Quarantined again: back to the quarantine pool at the next exchange.
	adm.admit(hw, false)
	ack = exchange(t, s, hw)
	if !s.cfg.Quarantine.Contains(ack.YourIPAddr) {
		t.Fatalf("re-quarantined host got %v", ack.YourIPAddr)
	}
}

func TestNoAddressTwiceAndPersistence(t *testing.T) {
	s, _, l, path := newTestServer(t)
	seen := map[string]string{}
	for i := byte(1); i <= 3; i++ {
		ack := exchange(t, s, mac(i))
		if other, dup := seen[ack.YourIPAddr.String()]; dup {
			t.Fatalf("%v given to %s and %s", ack.YourIPAddr, other, mac(i))
		}
		seen[ack.YourIPAddr.String()] = mac(i).String()
	}
	// The pool (3 addresses) is full now.
	disc, _ := dhcpv4.NewDiscovery(mac(4))
	if r, err := s.Reply(context.Background(), disc); err == nil || r != nil {
		t.Fatalf("full pool answered %v", r)
	}
	// Requesting another client's address is refused.
	var taken net.IP
	for ip := range seen {
		taken = net.ParseIP(ip)
		break
	}
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(5)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(taken)))
	if r, _ := s.Reply(context.Background(), req); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("another client's address was not refused: %v", r)
	}
	// A restart keeps the leases.
	l.Close()
	l2, err := OpenLeases(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	all, err := l2.All(context.Background(), time.Now())
	if err != nil || len(all) != 3 {
		t.Fatalf("after restart: %d leases, %v", len(all), err)
	}
	// Release frees an address.
	if err := l2.Release(context.Background(), all[0].MAC, all[0].IP); err != nil {
		t.Fatal(err)
	}
	s2, _ := New(testConfig(), l2, &fakeAdmission{set: map[string]bool{}}, nil)
	if ack := exchange(t, s2, mac(4)); !ack.YourIPAddr.Equal(all[0].IP) {
		t.Fatalf("released %v, then got %v", all[0].IP, ack.YourIPAddr)
	}
}

func TestPXEClientGetsTheAgent(t *testing.T) {
	s, _, _, _ := newTestServer(t)
	disc, _ := dhcpv4.NewDiscovery(mac(9), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")))
	offer, err := s.Reply(context.Background(), disc)
	if err != nil || offer.BootFileName != "bootgate/agent.efi" || offer.BootFileNameOption() != "bootgate/agent.efi" {
		t.Fatalf("PXE offer %v: %v", offer, err)
	}
}

type fakeHosts map[string]string // host ID → state

func (f fakeHosts) Host(_ context.Context, id string) (*store.Host, error) {
	s, ok := f[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return &store.Host{ID: id, State: s}, nil
}

func (f fakeHosts) AdmittedHosts(context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	for id, s := range f {
		out[id] = s == store.HostAdmitted
	}
	return out, nil
}

// TestAdmittedIPs follows a host from its attestation (bound by its
// quarantine lease's address) to a production lease, and checks that only
// admitted hosts' production leases are forwarded, and that a quarantine
// takes the address out.
func TestAdmittedIPs(t *testing.T) {
	l, err := OpenLeases(filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hosts := fakeHosts{"host-a": store.HostAdmitted, "host-b": store.HostQuarantined}
	adm := StoreAdmission{Leases: l, Hosts: hosts}
	s, err := New(testConfig(), l, adm, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, now := context.Background(), time.Now()
	a, b := mac(1), mac(2)
	qa, qb := exchange(t, s, a).YourIPAddr, exchange(t, s, b).YourIPAddr
	if !s.cfg.Quarantine.Contains(qa) || !s.cfg.Quarantine.Contains(qb) {
		t.Fatal("unknown hosts were not quarantined")
	}
	// Their attestations arrive from their quarantine addresses.
	if err := l.attested(ctx, "host-a", qa, now); err != nil {
		t.Fatal(err)
	}
	if err := l.attested(ctx, "host-b", qb, now); err != nil {
		t.Fatal(err)
	}
	pa, pb := exchange(t, s, a).YourIPAddr, exchange(t, s, b).YourIPAddr
	if !s.cfg.Production.Contains(pa) || !s.cfg.Quarantine.Contains(pb) {
		t.Fatalf("admitted host got %v, quarantined host %v", pa, pb)
	}
	ips, err := l.admittedIPs(ctx, time.Now(), hosts)
	if err != nil || len(ips) != 1 || !ips[0].Equal(pa) {
		t.Fatalf("admitted addresses %v (%v), want [%v]", ips, err, pa)
	}
	byHost := l.HostLeases([]string{"host-a", "host-b", "host-z"}, time.Now())
	if len(byHost) != 2 || !byHost["host-a"].IP.Equal(pa) || byHost["host-a"].Pool != PoolProduction || !byHost["host-b"].IP.Equal(pb) {
		t.Fatalf("leases by host: %+v", byHost)
	}
	// Moving to production ended host-a's quarantine lease, in memory and
	// in the store: the address is free at once.
	if _, err := l.ByIP(ctx, qa, time.Now()); err == nil {
		t.Errorf("host-a still holds its quarantine address %v", qa)
	}
	if n := storedLeases(t, l, PoolQuarantine); n != 1 {
		t.Errorf("%d quarantine leases stored, want host-b's only", n)
	}
	hosts["host-a"] = store.HostQuarantined
	if ips, _ := l.admittedIPs(ctx, time.Now(), hosts); len(ips) != 0 {
		t.Fatalf("a quarantined host is still forwarded: %v", ips)
	}
	// And back: quarantined, host-a gives up its production address.
	if q := exchange(t, s, a).YourIPAddr; !s.cfg.Quarantine.Contains(q) {
		t.Fatalf("quarantined host-a got %v", q)
	}
	if c := l.CountByPool(time.Now()); c[PoolProduction] != 0 || c[PoolQuarantine] != 2 || storedLeases(t, l, PoolProduction) != 0 {
		t.Errorf("leases by pool after host-a's quarantine: %v, %d production stored", c, storedLeases(t, l, PoolProduction))
	}
	// An attestation from an address without a lease binds nothing.
	if err := l.attested(ctx, "host-c", net.IPv4(10, 24, 0, 99), now); err == nil {
		t.Error("bound a host to an address nobody leased")
	}
}

func storedLeases(t *testing.T, l *Leases, pool string) int {
	t.Helper()
	var n int
	if err := l.t.DB().QueryRow(`SELECT COUNT(*) FROM dhcp_leases WHERE pool = ?`, pool).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRestartDuringStorm has 300 clients (16 at a time) get leases while the
// appliance restarts halfway (the lease store is closed and reopened, a new
// server made); clients whose exchange fails retry. Afterwards every
// acknowledged lease is in the store, no address is held twice, and every
// client renewing its address gets it.
func TestRestartDuringStorm(t *testing.T) {
	path := filepath.Join(t.TempDir(), "storm.db")
	cfg := testConfig()
	cfg.Quarantine.End = net.IPv4(10, 24, 0, 199) // 100 addresses
	cfg.Production.Start, cfg.Production.End = net.IPv4(10, 24, 1, 0), net.IPv4(10, 24, 2, 255)
	cfg.Quarantine.Netmask, cfg.Production.Netmask = net.CIDRMask(16, 32), net.CIDRMask(16, 32)
	adm := &fakeAdmission{set: map[string]bool{}}
	var mu sync.RWMutex
	open := func() *Server {
		l, err := OpenLeases(path)
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(cfg, l, adm, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	srv := open()
	const clients = 300
	for i := range clients {
		adm.admit(mac2(i), i%3 != 0) // two thirds admitted
	}
	acked := make([]net.IP, clients)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				for try := 0; try < 20 && acked[i] == nil; try++ {
					mu.RLock()
					s := srv
					ip, err := lease(s, mac2(i))
					mu.RUnlock()
					if err == nil {
						acked[i] = ip
					}
				}
			}
		}()
	}
	for i := range clients {
		if i == clients/2 {
			mu.Lock() // the restart: no exchange runs while the store is swapped
			srv.leases.Close()
			srv = open()
			mu.Unlock()
		}
		work <- i
	}
	close(work)
	wg.Wait()
	defer srv.leases.Close()

	seen := map[string]int{}
	for i, ip := range acked {
		if ip == nil {
			t.Fatalf("client %d never got a lease", i)
		}
		if j, dup := seen[ip.String()]; dup {
			t.Fatalf("%v acknowledged to clients %d and %d", ip, j, i)
		}
		seen[ip.String()] = i
	}
	all, err := srv.leases.All(context.Background(), time.Now())
	if err != nil || len(all) != clients {
		t.Fatalf("%d leases in the store after the storm, want %d (%v)", len(all), clients, err)
	}
	for i, ip := range acked {
		req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac2(i)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)))
		if r, err := srv.Reply(context.Background(), req); err != nil || r.MessageType() != dhcpv4.MessageTypeAck || !r.YourIPAddr.Equal(ip) {
			t.Fatalf("client %d renewing %v: %v %v", i, ip, r, err)
		}
	}
}

func mac2(i int) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 1, 0, byte(i >> 8), byte(i)} }

// lease runs DISCOVER, REQUEST for one client and returns the acknowledged
// address.
func lease(s *Server, hw net.HardwareAddr) (net.IP, error) {
	ctx := context.Background()
	disc, _ := dhcpv4.NewDiscovery(hw)
	offer, err := s.Reply(ctx, disc)
	if err != nil || offer == nil {
		return nil, fmt.Errorf("no offer: %v", err)
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer)
	ack, err := s.Reply(ctx, req)
	if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		return nil, fmt.Errorf("no ack: %v", err)
	}
	return ack.YourIPAddr, nil
}

// TestDiscoverFloodDoesNotLockOutClients: made-up MACs that only DISCOVER
// fill the quarantine pool (3 addresses) with offers; a real client still
// gets a lease, because the oldest offer is withdrawn for it. Bound leases
// are never taken: with the pool bound full, a newcomer gets nothing.
func TestDiscoverFloodDoesNotLockOutClients(t *testing.T) {
	s, _, l, _ := newTestServer(t)
	ctx := context.Background()
	for i := range 200 {
		disc, err := dhcpv4.NewDiscovery(net.HardwareAddr{0x02, 0xee, 0, 0, byte(i >> 8), byte(i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Reply(ctx, disc); err != nil {
			t.Fatal(err)
		}
	}
	if l.Withdrawn.Load() < 197 {
		t.Fatalf("%d offers withdrawn for 200 DISCOVERs into 3 addresses", l.Withdrawn.Load())
	}
	var bound []net.IP
	for i := byte(1); i <= 3; i++ {
		ack := exchange(t, s, mac(i))
		if ack.MessageType() != dhcpv4.MessageTypeAck || !s.cfg.Quarantine.Contains(ack.YourIPAddr) {
			t.Fatalf("real client %d after the flood: %v %v", i, ack.MessageType(), ack.YourIPAddr)
		}
		bound = append(bound, ack.YourIPAddr)
	}
	if bound[0].Equal(bound[1]) || bound[1].Equal(bound[2]) || bound[0].Equal(bound[2]) {
		t.Fatalf("addresses bound twice: %v", bound)
	}
	disc, _ := dhcpv4.NewDiscovery(mac(9))
	if offer, err := s.Reply(ctx, disc); err == nil && offer != nil {
		t.Fatalf("a bound lease was withdrawn for a newcomer: offered %v", offer.YourIPAddr)
	}
	for i := byte(1); i <= 3; i++ {
		if le, err := l.ByIP(ctx, bound[i-1], time.Now()); err != nil || le.MAC.String() != mac(i).String() {
			t.Errorf("client %d lost its lease: %+v %v", i, le, err)
		}
	}
}

// TestVendorOptionReachesAgent: what the gate puts in option 43 is what the
// agent's decoder (wire.ParseVendor) reads, and an endpoint that does not
// fit is refused when the server is made, not dropped from every answer.
func TestVendorOptionReachesAgent(t *testing.T) {
	s, _, _, _ := newTestServer(t)
	ack := exchange(t, s, mac(9))
	v, err := wire.ParseVendor(ack.Options.Get(dhcpv4.OptionVendorSpecificInformation))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256([]byte("ca")); v.Endpoint != "https://10.24.0.1:8443" || !bytes.Equal(v.CAFingerprint, sum[:]) {
		t.Errorf("agent reads %+v", v)
	}
	cfg := s.cfg
	cfg.Endpoint = "https://" + strings.Repeat("a", 250)
	if _, err := New(cfg, s.leases, s.admit, nil); !errors.Is(err, wire.ErrBadVendor) {
		t.Errorf("New with a %d-byte endpoint: %v, want ErrBadVendor", len(cfg.Endpoint), err)
	}
}
