package dhcpgate

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/bootgate/bootgate/verifier/store"
)

// admittedHost sets up host-a behind mac(1) with a production lease, as
// after a passing attestation, and returns the server, the leases and the
// production address.
func admittedHost(t *testing.T) (*Server, *Leases, fakeHosts, net.IP) {
	t.Helper()
	l, err := OpenLeases(filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	hosts := fakeHosts{"host-a": store.HostAdmitted}
	s, err := New(testConfig(), l, StoreAdmission{Leases: l, Hosts: hosts}, nil)
	if err != nil {
		t.Fatal(err)
	}
	q := exchange(t, s, mac(1)).YourIPAddr
	if err := l.attested(context.Background(), "host-a", q, time.Now()); err != nil {
		t.Fatal(err)
	}
	p := exchange(t, s, mac(1)).YourIPAddr
	if !s.cfg.Production.Contains(p) {
		t.Fatalf("admitted host got %v", p)
	}
	return s, l, hosts, p
}

func request(hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	req, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest)}, mods...)...)
	if err != nil {
		panic(err)
	}
	return req
}

// holder returns the MAC that holds ip's bound lease, or "".
func holder(l *Leases, ip net.IP) string {
	le, err := l.ByIP(context.Background(), ip, time.Now())
	if err != nil {
		return ""
	}
	return le.MAC.String()
}

// TestSpoofedRequestCannotMoveLease: a machine that copies an admitted
// host's MAC into a REQUEST for another production address (by option 50,
// by ciaddr, or for a quarantine address) is NAKed; the host keeps its
// lease, its binding and its place in the gateway's set. A REQUEST for the
// host's own address only renews it.
func TestSpoofedRequestCannotMoveLease(t *testing.T) {
	s, l, hosts, p := admittedHost(t)
	ctx := context.Background()
	other := net.IPv4(10, 24, 0, 240)
	for _, tc := range []struct {
		name string
		req  *dhcpv4.DHCPv4
	}{
		{"another production address (option 50)", request(mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(other)))},
		{"another production address (ciaddr)", request(mac(1), dhcpv4.WithClientIP(other))},
		{"a quarantine address", request(mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 24, 0, 101))))},
		{"an address outside every pool", request(mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 0, 2, 1))))},
	} {
		r, err := s.Reply(ctx, tc.req)
		if err != nil || r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
			t.Errorf("%s: %v %v, want a NAK", tc.name, r, err)
		}
		if h := holder(l, p); h != mac(1).String() {
			t.Fatalf("%s: the host's lease of %v is now held by %q", tc.name, p, h)
		}
		if h := holder(l, tc.req.RequestedIPAddress()); h != "" {
			t.Errorf("%s: %v bound to %s", tc.name, tc.req.RequestedIPAddress(), h)
		}
	}
	// A DISCOVER with the copied MAC is offered the host's own address.
	disc, _ := dhcpv4.NewDiscovery(mac(1))
	if offer, err := s.Reply(ctx, disc); err != nil || !offer.YourIPAddr.Equal(p) {
		t.Errorf("DISCOVER with the host's MAC: offered %v (%v), want %v", offer, err, p)
	}
	// The host's own address: a renewal, same address.
	if r, err := s.Reply(ctx, request(mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(p)))); err != nil || r.MessageType() != dhcpv4.MessageTypeAck || !r.YourIPAddr.Equal(p) {
		t.Errorf("renewing %v: %v %v", p, r, err)
	}
	adm, err := l.AdmittedLeases(ctx, time.Now(), hosts)
	if err != nil || len(adm) != 1 || !adm[0].IP.Equal(p) || adm[0].MAC.String() != mac(1).String() {
		t.Errorf("admitted leases %+v (%v), want %v at %s", adm, err, p, mac(1))
	}
}

// TestPoolChangeBindsOnlyTheOffer: a client that changes pools binds the
// address it was offered, nothing else.
func TestPoolChangeBindsOnlyTheOffer(t *testing.T) {
	s, adm, l, _ := newTestServer(t)
	ctx := context.Background()
	q := exchange(t, s, mac(1)).YourIPAddr
	adm.admit(mac(1), true)
	want := net.IPv4(10, 24, 0, 230)
	if r, _ := s.Reply(ctx, request(mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want)))); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("unoffered production address: %v, want a NAK", r)
	}
	disc, _ := dhcpv4.NewDiscovery(mac(1))
	offer, err := s.Reply(ctx, disc)
	if err != nil || !s.cfg.Production.Contains(offer.YourIPAddr) || offer.YourIPAddr.Equal(want) {
		t.Fatalf("offer %v %v", offer, err)
	}
	if r, _ := s.Reply(ctx, request(mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want)))); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("another address than offered: %v, want a NAK", r)
	}
	if holder(l, q) != mac(1).String() {
		t.Fatal("a refused REQUEST ended the client's quarantine lease")
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer)
	if r, err := s.Reply(ctx, req); err != nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("the offered address: %v %v", r, err)
	}
	if holder(l, q) != "" {
		t.Error("the quarantine lease outlived the move to production")
	}
}

// TestOneHostOneMAC: a host is behind one MAC and a MAC stands for one
// host; binding a host to a new MAC ends the old MAC's binding and its
// production lease, in memory and after a restart; another host cannot
// take a bound MAC over until its binding expires.
func TestOneHostOneMAC(t *testing.T) {
	s, l, hosts, p := admittedHost(t)
	ctx, now := context.Background(), time.Now()
	// The host comes back with another NIC (mac 2), attests from its
	// quarantine address.
	q2 := exchange(t, s, mac(2)).YourIPAddr
	if !s.cfg.Quarantine.Contains(q2) {
		t.Fatalf("a new MAC got %v", q2)
	}
	if err := l.attested(ctx, "host-a", q2, now); err != nil {
		t.Fatal(err)
	}
	if id, _ := l.HostOf(ctx, mac(1)); id != "" {
		t.Errorf("the old MAC is still host %q", id)
	}
	if id, _ := l.HostOf(ctx, mac(2)); id != "host-a" {
		t.Errorf("the new MAC is host %q", id)
	}
	if m := l.boundMAC("host-a", now); m.String() != mac(2).String() {
		t.Errorf("host-a is behind %v", m)
	}
	if holder(l, p) != "" {
		t.Errorf("the old MAC kept its production lease of %v", p)
	}
	if adm, _ := l.AdmittedLeases(ctx, time.Now(), hosts); len(adm) != 0 {
		t.Errorf("admitted before the new MAC has a production lease: %+v", adm)
	}
	// Another host attesting from the same MAC does not take it over while
	// host-a's binding lasts: any TPM can quote any link it can name.
	hosts["host-b"] = store.HostAdmitted
	err := l.attested(ctx, "host-b", q2, now)
	var mb *MACBoundError
	if !errors.Is(err, ErrMACBound) || !errors.As(err, &mb) || mb.Host != "host-a" {
		t.Fatalf("another host binding a bound MAC: %v, want ErrMACBound naming host-a", err)
	}
	if m := l.boundMAC("host-a", now); m.String() != mac(2).String() {
		t.Errorf("host-a is behind %v after the refused takeover, want %v", m, mac(2))
	}
	if m := l.boundMAC("host-b", now); m != nil {
		t.Errorf("host-b is behind %v", m)
	}
	// In SQLite: one binding, host-a's.
	if n := countRows(t, l, `SELECT COUNT(*) FROM dhcp_host_macs`); n != 1 {
		t.Errorf("%d host bindings stored, want 1", n)
	}
	if n := countRows(t, l, `SELECT COUNT(*) FROM dhcp_host_macs WHERE host_id = 'host-a' AND mac = '`+mac(2).String()+`'`); n != 1 {
		t.Errorf("host-a's binding is not stored")
	}
	// Once the binding has expired (with the MAC's lease), another host
	// may bind the MAC.
	later := now.Add(2 * time.Hour)
	l.now = func() time.Time { return later }
	le, err := l.Offer(ctx, &s.cfg.Quarantine, mac(2), later, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := l.Bind(ctx, &s.cfg.Quarantine, mac(2), le.IP, later, time.Minute); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if err := l.BindHost(ctx, mac(2), "host-b", later); err != nil {
		t.Fatalf("binding an expired MAC to another host: %v", err)
	}
	if id, _ := l.HostOf(ctx, mac(2)); id != "host-b" {
		t.Errorf("after expiry the MAC is host %q, want host-b", id)
	}
	// A host cannot be bound to a MAC without a lease.
	if err := l.BindHost(ctx, mac(7), "host-c", now); !errors.Is(err, ErrNoLease) {
		t.Errorf("binding to a MAC without a lease: %v, want ErrNoLease", err)
	}
}

func countRows(t *testing.T, l *Leases, q string) int {
	t.Helper()
	var n int
	if err := l.t.DB().QueryRow(q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHostBindingExpiresWithTheLease: the binding lasts until the latest
// lease given to the MAC while bound expires, then the MAC is unknown
// again, also after a restart.
func TestHostBindingExpiresWithTheLease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	l, err := OpenLeases(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	cfg := testConfig()
	ctx := context.Background()
	t0 := time.Now()
	clock := t0
	l.now = func() time.Time { return clock }
	le, err := l.Offer(ctx, &cfg.Quarantine, mac(1), t0, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := l.Bind(ctx, &cfg.Quarantine, mac(1), le.IP, t0, time.Minute); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if err := l.BindHost(ctx, mac(1), "host-a", t0); err != nil {
		t.Fatal(err)
	}
	// A renewal at t0+50s extends the binding to t0+110s.
	if ok, err := l.Bind(ctx, &cfg.Quarantine, mac(1), le.IP, t0.Add(50*time.Second), time.Minute); !ok || err != nil {
		t.Fatal(ok, err)
	}
	for _, c := range []struct {
		at   time.Duration
		want string
	}{{59 * time.Second, "host-a"}, {109 * time.Second, "host-a"}, {111 * time.Second, ""}} {
		clock = t0.Add(c.at)
		if id, _ := l.HostOf(ctx, mac(1)); id != c.want {
			t.Errorf("at +%v: host %q, want %q", c.at, id, c.want)
		}
	}
	if m := l.boundMAC("host-a", clock); m != nil {
		t.Errorf("expired host still behind %v", m)
	}
	// The extension was stored.
	l.Close()
	var exp int64
	db := mustOpen(t, path)
	if err := db.t.DB().QueryRow(`SELECT expires FROM dhcp_host_macs WHERE mac = ?`, mac(1).String()).Scan(&exp); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if got := time.Unix(0, exp); !got.Equal(t0.Add(110 * time.Second)) {
		t.Errorf("stored binding expiry %v, want %v", got.Sub(t0), 110*time.Second)
	}
	l = mustOpen(t, path) // closed by the deferred Close
}

func mustOpen(t *testing.T, path string) *Leases {
	t.Helper()
	l, err := OpenLeases(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestOldBindingsExpire: host bindings of the older schema (no expiry) are
// expired after the upgrade: those hosts attest again.
func TestOldBindingsExpire(t *testing.T) {
	// The lease tables as the first version made them, in a file of their
	// own (before migrations were files).
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`
		CREATE TABLE dhcp_leases (ip INTEGER PRIMARY KEY, mac TEXT NOT NULL, pool TEXT NOT NULL, bound INTEGER NOT NULL, expires INTEGER NOT NULL);
		CREATE TABLE dhcp_host_macs (mac TEXT PRIMARY KEY, host_id TEXT NOT NULL, updated INTEGER NOT NULL);`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO dhcp_host_macs VALUES (?, 'host-a', 1), (?, 'host-a', 2)`, mac(1).String(), mac(2).String()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO dhcp_leases VALUES (?, ?, 'production', 1, ?)`, ip4(net.IPv4(10, 24, 0, 200)), mac(1).String(), time.Now().Add(time.Hour).UnixNano()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	l := mustOpen(t, path)
	defer l.Close()
	for _, m := range []net.HardwareAddr{mac(1), mac(2)} {
		if id, _ := l.HostOf(context.Background(), m); id != "" {
			t.Errorf("%s: old binding to %q still counts", m, id)
		}
	}
	if holder(l, net.IPv4(10, 24, 0, 200)) != mac(1).String() {
		t.Error("the old lease was lost in the upgrade")
	}
}

// TestReleaseAndDeclineFromStrangers: RELEASE and DECLINE of another
// client's address, or of an address outside every pool, change nothing
// and are counted.
func TestReleaseAndDeclineFromStrangers(t *testing.T) {
	s, l, hosts, p := admittedHost(t)
	ctx := context.Background()
	stranger := mac(9)
	outside := net.IPv4(192, 0, 2, 7)
	for _, tc := range []struct {
		name string
		req  *dhcpv4.DHCPv4
		want error
	}{
		{"RELEASE of another client's address", mustNew(stranger, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(p)), ErrNotHolder},
		{"DECLINE of another client's address", mustNew(stranger, dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(p))), ErrNotHolder},
		{"DECLINE outside every pool", mustNew(mac(1), dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(outside))), ErrOutsidePools},
		{"DECLINE without an address", mustNew(mac(1), dhcpv4.MessageTypeDecline), ErrOutsidePools},
		{"RELEASE outside every pool", mustNew(mac(1), dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(outside)), ErrOutsidePools},
		{"RELEASE of a free address", mustNew(stranger, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(net.IPv4(10, 24, 0, 222))), ErrNotHolder},
	} {
		before := s.Stats.Refused.Load()
		r, err := s.Reply(ctx, tc.req)
		if r != nil || !errors.Is(err, tc.want) {
			t.Errorf("%s: %v %v, want %v", tc.name, r, err, tc.want)
		}
		if s.Stats.Refused.Load() != before+1 {
			t.Errorf("%s: not counted", tc.name)
		}
		if holder(l, p) != mac(1).String() {
			t.Fatalf("%s: the host lost its lease", tc.name)
		}
	}
	if n := countRows(t, l, `SELECT COUNT(*) FROM dhcp_leases WHERE pool = 'declined'`); n != 0 {
		t.Errorf("%d declined addresses stored", n)
	}
	if adm, _ := l.AdmittedLeases(ctx, time.Now(), hosts); len(adm) != 1 {
		t.Errorf("the host lost forwarding: %+v", adm)
	}
	// The holder's own RELEASE, sent from the address, counts.
	if _, err := s.ReplyFrom(ctx, mustNew(mac(1), dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(p)), p); err != nil {
		t.Fatal(err)
	}
	if holder(l, p) != "" {
		t.Error("the holder's RELEASE did not end its lease")
	}
}

func mustNew(hw net.HardwareAddr, typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	d, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(typ)}, mods...)...)
	if err != nil {
		panic(err)
	}
	return d
}

// TestDeclineFloodCannotEmptyThePool: 200 made-up MACs each take an offer
// in a 50-address quarantine pool and decline it. At most an eighth of the
// pool is set aside, the rest is refused, and a real client still gets a
// lease.
func TestDeclineFloodCannotEmptyThePool(t *testing.T) {
	cfg := testConfig()
	cfg.Quarantine.End = net.IPv4(10, 24, 0, 149) // 50 addresses
	l := mustOpen(t, filepath.Join(t.TempDir(), "l.db"))
	defer l.Close()
	s, err := New(cfg, l, &fakeAdmission{set: map[string]bool{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	declined := 0
	for i := range 200 {
		hw := net.HardwareAddr{0x02, 0xdd, 0, 0, byte(i >> 8), byte(i)}
		disc, _ := dhcpv4.NewDiscovery(hw)
		offer, err := s.Reply(ctx, disc)
		if err != nil {
			t.Fatal(err)
		}
		dec := mustNew(hw, dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)))
		if _, err := s.Reply(ctx, dec); err == nil {
			declined++
		} else if !errors.Is(err, ErrTooManyDeclined) && !errors.Is(err, ErrRateLimited) {
			t.Fatalf("decline %d: %v", i, err)
		}
	}
	if max := MaxDeclined(&cfg.Quarantine); declined > max || declined == 0 {
		t.Errorf("%d addresses declined, want 1..%d", declined, max)
	}
	if n := countRows(t, l, `SELECT COUNT(*) FROM dhcp_leases WHERE pool = 'declined'`); n != declined {
		t.Errorf("%d declined stored, %d accepted", n, declined)
	}
	for i := byte(1); i <= 40; i++ {
		if ack := exchange(t, s, mac(i)); ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("client %d after the flood: %v", i, ack.MessageType())
		}
	}
}

// TestDeclineRules: a DECLINE from the holder sets the address aside; a
// second one from the same client within the per-client interval is
// refused.
func TestDeclineRules(t *testing.T) {
	s, _, l, _ := newTestServer(t)
	ctx := context.Background()
	ack := exchange(t, s, mac(1))
	if _, err := s.Reply(ctx, mustNew(mac(1), dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ack.YourIPAddr)))); err != nil {
		t.Fatal(err)
	}
	if le, err := l.ByIP(ctx, ack.YourIPAddr, time.Now()); err == nil {
		t.Fatalf("declined address still leased: %+v", le)
	}
	// The declined address is not offered again.
	ack2 := exchange(t, s, mac(1))
	if ack2.YourIPAddr.Equal(ack.YourIPAddr) {
		t.Fatal("the declined address was handed out again")
	}
	_, err := s.Reply(ctx, mustNew(mac(1), dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ack2.YourIPAddr))))
	if !errors.Is(err, ErrRateLimited) {
		t.Errorf("second DECLINE at once: %v, want ErrRateLimited", err)
	}
	if holder(l, ack2.YourIPAddr) != mac(1).String() {
		t.Error("a refused DECLINE ended the lease")
	}
}

func TestLimiter(t *testing.T) {
	r := limiter{last: map[string]time.Time{}}
	t0 := time.Now()
	n := 0
	for i := range 100 {
		if r.allow(string(rune(i)), t0) {
			n++
		}
	}
	if n != limitBurst {
		t.Errorf("%d allowed at once, want the burst %v", n, limitBurst)
	}
	// Refilled at limitRate per second; each client once per interval.
	if !r.allow("x", t0.Add(time.Second)) || r.allow("x", t0.Add(time.Second+limitPerClient/2)) {
		t.Error("per-client limit")
	}
	if !r.allow("x", t0.Add(time.Second+limitPerClient)) {
		t.Error("a client is not allowed again after the interval")
	}
	// Memory stays bounded.
	at := t0.Add(time.Hour)
	for i := range 3 * limitClients {
		r.tokens = limitBurst
		r.allow(string(rune(i+1000)), at)
	}
	if len(r.last) > limitClients {
		t.Errorf("%d clients remembered, bound %d", len(r.last), limitClients)
	}
}

// TestRelays: a request naming an unknown relay gets no answer; a
// configured relay's option 82 is recorded with the lease, kept across a
// restart, echoed to the relay, and shown escaped; option 82 without a
// relay is ignored.
func TestRelays(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	l := mustOpen(t, path)
	cfg := testConfig()
	relay := net.IPv4(10, 24, 9, 1)
	cfg.Relays = []net.IP{relay}
	s, err := New(cfg, l, &fakeAdmission{set: map[string]bool{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opt82 := dhcpv4.OptRelayAgentInfo(
		dhcpv4.OptGeneric(dhcpv4.AgentCircuitIDSubOption, []byte("swp7\x1b[31m\n")),
		dhcpv4.OptGeneric(dhcpv4.AgentRemoteIDSubOption, []byte("leaf-3")))

	disc, _ := dhcpv4.NewDiscovery(mac(1), dhcpv4.WithGatewayIP(net.IPv4(10, 24, 9, 2)), dhcpv4.WithOption(opt82))
	if r, err := s.Reply(ctx, disc); r != nil || !errors.Is(err, ErrUnknownRelay) {
		t.Fatalf("unknown giaddr: %v %v, want no answer", r, err)
	}
	if s.Stats.UnknownRelay.Load() != 1 {
		t.Error("unknown relay not counted")
	}
	bad, _ := dhcpv4.NewDiscovery(mac(1), dhcpv4.WithGatewayIP(relay), dhcpv4.WithGeneric(dhcpv4.OptionRelayAgentInformation, []byte{1, 200, 'x'}))
	if r, err := s.Reply(ctx, bad); r != nil || !errors.Is(err, ErrBadRelayInfo) {
		t.Fatalf("malformed option 82: %v %v", r, err)
	}

	disc, _ = dhcpv4.NewDiscovery(mac(1), dhcpv4.WithGatewayIP(relay), dhcpv4.WithOption(opt82))
	offer, err := s.Reply(ctx, disc)
	if err != nil || offer == nil {
		t.Fatalf("configured relay: %v %v", offer, err)
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithGatewayIP(relay), dhcpv4.WithOption(opt82))
	ack, err := s.Reply(ctx, req)
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("relayed REQUEST: %v %v", ack, err)
	}
	if ri := ack.RelayAgentInfo(); ri == nil || string(ri.Get(dhcpv4.AgentRemoteIDSubOption)) != "leaf-3" {
		t.Errorf("option 82 not echoed to the relay: %v", ack.Options.Get(dhcpv4.OptionRelayAgentInformation))
	}
	if !ack.GatewayIPAddr.Equal(relay) {
		t.Errorf("giaddr %v in the reply", ack.GatewayIPAddr)
	}
	check := func(l *Leases) {
		t.Helper()
		le, err := l.ByIP(ctx, ack.YourIPAddr, time.Now())
		if err != nil || le.Relay == nil {
			t.Fatalf("lease %+v %v: no relay recorded", le, err)
		}
		if !le.Relay.Addr.Equal(relay) || string(le.Relay.CircuitID) != "swp7\x1b[31m\n" || string(le.Relay.RemoteID) != "leaf-3" {
			t.Errorf("recorded %+v", le.Relay)
		}
		shown := le.Relay.String()
		if strings.ContainsAny(shown, "\x1b\n") || !strings.Contains(shown, `circuit-id "swp7\x1b[31m\x0a"`) {
			t.Errorf("shown as %q", shown)
		}
	}
	check(l)
	l.Close()
	l = mustOpen(t, path)
	defer l.Close()
	check(l)

	// Option 82 from a client on the boot network itself: not recorded,
	// not echoed.
	s, _ = New(cfg, l, &fakeAdmission{set: map[string]bool{}}, nil)
	disc, _ = dhcpv4.NewDiscovery(mac(2), dhcpv4.WithOption(opt82))
	offer, _ = s.Reply(ctx, disc)
	if offer.Options.Has(dhcpv4.OptionRelayAgentInformation) {
		t.Error("option 82 echoed to a client without relay")
	}
	req, _ = dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(opt82))
	ack, err = s.Reply(ctx, req)
	if err != nil || ack.Options.Has(dhcpv4.OptionRelayAgentInformation) {
		t.Fatalf("unrelayed REQUEST with option 82: %v %v", ack, err)
	}
	if le, _ := l.ByIP(ctx, ack.YourIPAddr, time.Now()); le == nil || le.Relay != nil {
		t.Errorf("unrelayed lease %+v", le)
	}
}

// TestRelaysConfigRefused: a relay that is not an IPv4 address is refused.
func TestRelaysConfigRefused(t *testing.T) {
	l := mustOpen(t, filepath.Join(t.TempDir(), "l.db"))
	defer l.Close()
	cfg := testConfig()
	cfg.Relays = []net.IP{net.ParseIP("2001:db8::1")}
	if _, err := New(cfg, l, &fakeAdmission{set: map[string]bool{}}, nil); err == nil {
		t.Error("an IPv6 relay was accepted")
	}
}

// TestReleaseOnlyFromItsAddress: a RELEASE with the holder's MAC and
// address counts only when it was sent from that address (RFC 2131
// §4.4.6); from any other source, or an unknown one, it is dropped,
// counted, and the holder keeps its lease and forwarding. A relayed
// RELEASE comes from its relay and counts by the holder check.
func TestReleaseOnlyFromItsAddress(t *testing.T) {
	s, l, hosts, p := admittedHost(t)
	ctx := context.Background()
	rel := mustNew(mac(1), dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(p))
	for _, src := range []net.IP{nil, net.IPv4(10, 24, 0, 77), net.IPv4(10, 24, 0, 100), net.IPv4zero, net.ParseIP("::ffff:10.24.0.78")} {
		before := s.Stats.Refused.Load()
		if r, err := s.ReplyFrom(ctx, rel, src); r != nil || !errors.Is(err, ErrSourceMismatch) {
			t.Errorf("RELEASE of %v with its MAC from %v: %v %v, want ErrSourceMismatch", p, src, r, err)
		}
		if s.Stats.Refused.Load() != before+1 {
			t.Errorf("RELEASE from %v: not counted", src)
		}
		if holder(l, p) != mac(1).String() {
			t.Fatalf("RELEASE from %v ended the host's lease", src)
		}
	}
	// Reply knows no source: it drops every unrelayed RELEASE.
	if _, err := s.Reply(ctx, rel); !errors.Is(err, ErrSourceMismatch) {
		t.Errorf("Reply(RELEASE): %v, want ErrSourceMismatch", err)
	}
	if adm, _ := l.AdmittedLeases(ctx, time.Now(), hosts); len(adm) != 1 {
		t.Errorf("the host lost forwarding: %+v", adm)
	}
	// From the address itself (also as an IPv4-mapped IPv6 address).
	if _, err := s.ReplyFrom(ctx, rel, net.ParseIP("::ffff:"+p.String())); err != nil {
		t.Fatalf("RELEASE from the released address: %v", err)
	}
	if holder(l, p) != "" {
		t.Error("the holder's RELEASE from its address did not end its lease")
	}

	// Relayed: the relay is the source; the holder check alone decides.
	cfg := testConfig()
	relay := net.IPv4(10, 24, 9, 1)
	cfg.Relays = []net.IP{relay}
	l2 := mustOpen(t, filepath.Join(t.TempDir(), "r.db"))
	defer l2.Close()
	s2, err := New(cfg, l2, &fakeAdmission{set: map[string]bool{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	disc, _ := dhcpv4.NewDiscovery(mac(2), dhcpv4.WithGatewayIP(relay))
	offer, err := s2.ReplyFrom(ctx, disc, relay)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithGatewayIP(relay))
	if ack, err := s2.ReplyFrom(ctx, req, relay); err != nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("relayed REQUEST: %v %v", ack, err)
	}
	ip := offer.YourIPAddr
	if _, err := s2.ReplyFrom(ctx, mustNew(mac(9), dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ip), dhcpv4.WithGatewayIP(relay)), relay); !errors.Is(err, ErrNotHolder) {
		t.Errorf("relayed RELEASE from a stranger: %v, want ErrNotHolder", err)
	}
	if _, err := s2.ReplyFrom(ctx, mustNew(mac(2), dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ip), dhcpv4.WithGatewayIP(relay)), relay); err != nil {
		t.Errorf("relayed RELEASE from the holder: %v", err)
	}
	if holder(l2, ip) != "" {
		t.Error("the relayed holder's RELEASE did not end its lease")
	}
}
