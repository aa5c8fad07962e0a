package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// testLeaseTables: a claim binds a free address, renews the same client's
// lease, and is refused for an address another client holds until that
// lease expires; a decline sets aside only its holder's address; a host
// binding is never taken from another live host.
func testLeaseTables(t *testing.T, open opener) {
	lt := open(t).Leases()
	ctx := context.Background()
	const now, hour = int64(1_000_000_000_000), int64(3_600_000_000_000)
	lease := func(ip uint32, mac string, exp int64) LeaseClaim {
		return LeaseClaim{Lease: LeaseRow{IP: ip, MAC: mac, Pool: "quarantine", Bound: true, Expires: exp,
			Relay: "192.0.2.1", CircuitID: []byte{}, RemoteID: []byte{0, 1}}}
	}
	claim := func(at int64, c ...LeaseClaim) []bool {
		t.Helper()
		ok, err := lt.Claim(ctx, at, c)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		return ok
	}
	const ipA, ipB = 0x0a180064, 0x0a180065 // 10.24.0.100, .101
	if ok := claim(now, lease(ipA, "m1", now+hour), lease(ipB, "m2", now+hour)); !ok[0] || !ok[1] {
		t.Fatalf("claims of free addresses: %v", ok)
	}
	if ok := claim(now, lease(ipA, "m3", now+hour), lease(ipA, "m1", now+2*hour)); ok[0] || !ok[1] {
		t.Errorf("another client's claim and a renewal: %v, want [false true]", ok)
	}
	r, err := lt.Lease(ctx, ipA, now)
	if err != nil || r == nil || r.MAC != "m1" || r.Expires != now+2*hour || !r.Bound || r.CircuitID == nil || len(r.CircuitID) != 0 || len(r.RemoteID) != 2 {
		t.Fatalf("lease of A = %+v, %v", r, err)
	}
	if ok := claim(now+2*hour, lease(ipA, "m3", now+3*hour)); !ok[0] {
		t.Errorf("a claim of an expired lease was refused")
	}

	if ok, err := lt.Decline(ctx, ipB, "m9", now+hour, now); err != nil || ok {
		t.Errorf("decline by a client that does not hold it: %v, %v", ok, err)
	}
	if ok, err := lt.Decline(ctx, ipB, "m2", now+hour, now); err != nil || !ok {
		t.Errorf("decline by the holder: %v, %v", ok, err)
	}
	if ok := claim(now, lease(ipB, "m2", now+hour)); ok[0] {
		t.Errorf("a declined address was claimed")
	}
	if err := lt.Release(ctx, ipA, "m1"); err != nil {
		t.Fatal(err)
	}
	if r, err := lt.Lease(ctx, ipA, now+2*hour); err != nil || r == nil || r.MAC != "m3" {
		t.Errorf("a release by a client that does not hold it changed the lease: %+v, %v", r, err)
	}

	if got, err := lt.BindHost(ctx, HostBind{MAC: "m3", HostID: "h1", Now: now, Expires: now + hour}); err != nil || got.Other != nil {
		t.Fatalf("BindHost: %+v, %v", got, err)
	}
	if got, err := lt.BindHost(ctx, HostBind{MAC: "m3", HostID: "h2", Now: now, Expires: now + hour}); err != nil || got.Other == nil || got.Other.HostID != "h1" {
		t.Errorf("binding a MAC bound to another live host: %+v, %v; want h1's binding", got, err)
	}
	if got, err := lt.BindHost(ctx, HostBind{MAC: "m3", HostID: "h2", Now: now + hour, Expires: now + 2*hour}); err != nil || got.Other != nil {
		t.Errorf("binding a MAC whose binding expired: %+v, %v", got, err)
	}
	leases, hosts, err := lt.Load(ctx, now+2*hour-1)
	if err != nil || len(leases) != 1 || leases[0].MAC != "m3" || len(hosts) != 1 || hosts[0].HostID != "h2" {
		t.Errorf("Load = %+v, %+v, %v", leases, hosts, err)
	}

	// What appliances sharing the database read (Replicated).
	at := now + hour - 1 // B declined until now+hour, h2 bound to m3 until now+2h
	rows, host, err := lt.Client(ctx, "m3", ipB, at)
	if err != nil || len(rows) != 2 || host == nil || host.HostID != "h2" {
		t.Errorf("Client(m3, B) = %+v, %+v, %v; want m3's lease, B's declined row and h2", rows, host, err)
	}
	if h, err := lt.HostOf(ctx, "m3", now+2*hour); err != nil || h != nil {
		t.Errorf("HostOf(m3) once expired = %+v, %v; want none", h, err)
	}
	for _, c := range []struct {
		pool  string
		hosts []string
		want  int
	}{
		{"", nil, 1}, {"quarantine", []string{"h2"}, 1}, {"quarantine", []string{"h1"}, 0},
		{"production", nil, 0}, {"", []string{}, 0},
	} {
		got, err := lt.HostLeases(ctx, c.pool, c.hosts, at)
		if err != nil || len(got) != c.want || (c.want == 1 && (got[0].HostID != "h2" || got[0].IP != ipA || got[0].MAC != "m3")) {
			t.Errorf("HostLeases(%q, %v) = %+v, %v; want %d of h2", c.pool, c.hosts, got, err, c.want)
		}
	}
	if n, err := lt.CountByPool(ctx, at); err != nil || len(n) != 1 || n["quarantine"] != 1 {
		t.Errorf("CountByPool = %v, %v; want quarantine 1 (declined addresses left out)", n, err)
	}
}

// TestLeaseTablesDurable: the lease tables' own SQLite connection syncs
// every commit, as the store's do.
func TestLeaseTablesDurable(t *testing.T) {
	lt, err := OpenLeaseTables(filepath.Join(t.TempDir(), "bootgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer lt.Close()
	for p, want := range map[string]string{"synchronous": "2", "journal_mode": "wal", "busy_timeout": "5000"} {
		var got string
		if err := lt.DB().QueryRow("PRAGMA " + p).Scan(&got); err != nil || got != want {
			t.Errorf("PRAGMA %s = %q, %v; want %q", p, got, err, want)
		}
	}
}

// testBindHostTwoHandles: two handles on one database (two appliances)
// bind one new host to two MACs at once, round after round. Whichever
// commits second must end the first's binding: the host is bound to at
// most one MAC after every round, and only that MAC keeps its production
// lease.
func testBindHostTwoHandles(t *testing.T, loc string) {
	a, b := openAt(t, loc).Leases(), openAt(t, loc).Leases()
	ctx := context.Background()
	const hour = int64(3600e9)
	for i := range 200 {
		now := int64(i+1) * 1e9
		host := fmt.Sprintf("h-%d", i)
		macs := [2]string{fmt.Sprintf("a-%d", i), fmt.Sprintf("b-%d", i)}
		ok, err := a.Claim(ctx, now, []LeaseClaim{
			{Lease: LeaseRow{IP: uint32(2*i + 1), MAC: macs[0], Pool: "production", Bound: true, Expires: now + hour}},
			{Lease: LeaseRow{IP: uint32(2*i + 2), MAC: macs[1], Pool: "production", Bound: true, Expires: now + hour}},
		})
		if err != nil || !ok[0] || !ok[1] {
			t.Fatalf("round %d: Claim = %v, %v", i, ok, err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j, lt := range []*LeaseTables{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[j] = lt.BindHost(ctx, HostBind{MAC: macs[j], HostID: host, Now: now, Expires: now + hour, EndPool: "production"})
			}()
		}
		wg.Wait()
		for j, err := range errs {
			if err != nil {
				t.Fatalf("round %d: BindHost(%s): %v", i, macs[j], err)
			}
		}
		var n int
		if err := a.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM dhcp_host_macs WHERE host_id = ?`, host).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 1 {
			t.Fatalf("round %d: host %s is bound to %d MACs after two concurrent binds; want at most 1", i, host, n)
		}
		hl, err := a.HostLeases(ctx, "production", []string{host}, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(hl) != 1 {
			t.Fatalf("round %d: host %s has %d production leases bound to it: %+v; want 1", i, host, len(hl), hl)
		}
		var others int
		if err := a.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM dhcp_leases WHERE pool = 'production' AND mac IN (?, ?)`, macs[0], macs[1]).Scan(&others); err != nil {
			t.Fatal(err)
		}
		if others != 1 {
			t.Errorf("round %d: %d production leases on the host's two MACs; want only the bound MAC's", i, others)
		}
	}
}
