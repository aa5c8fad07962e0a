package dhcpgate

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/bootgate/bootgate/internal/pgtest"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// BenchmarkLease is one DISCOVER/OFFER, REQUEST/ACK exchange of a new client
// through the protocol logic and the lease store (no sockets), with
// attestation gating: the admission lookup runs for every packet.
// On PostgreSQL (a database appliances share) each message also reads the
// client's leases and host binding from the database.
func BenchmarkLease(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		l, err := OpenLeases(filepath.Join(b.TempDir(), "bench.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		benchLease(b, l)
	})
	b.Run("postgres", func(b *testing.B) {
		st, err := store.Open(context.Background(), pgtest.DB(b))
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		l, err := NewLeases(st.Leases())
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		benchLease(b, l)
	})
}

func benchLease(b *testing.B, l *Leases) {
	cfg := testConfig()
	cfg.Quarantine.Start, cfg.Quarantine.End = net.IPv4(10, 24, 0, 0), net.IPv4(10, 31, 255, 255)
	cfg.Quarantine.Netmask = net.CIDRMask(13, 32)
	s, err := New(cfg, l, StoreAdmission{Leases: l, Hosts: fakeHosts{}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		hw := net.HardwareAddr{2, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		disc, _ := dhcpv4.NewDiscovery(hw)
		offer, err := s.Reply(ctx, disc)
		if err != nil {
			b.Fatal(err)
		}
		req, _ := dhcpv4.NewRequestFromOffer(offer)
		if ack, err := s.Reply(ctx, req); err != nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			b.Fatal(err)
		}
		_ = offer.ToBytes()
	}
}

// BenchmarkOfferFullPool is a DISCOVER from a new client while the pool
// (65 536 addresses) is full of offers nobody took up, as under a DISCOVER
// flood or overload: the oldest offer is withdrawn for it.
func BenchmarkOfferFullPool(b *testing.B) {
	l, err := OpenLeases(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	p := &Pool{Name: PoolQuarantine, Start: net.IPv4(10, 30, 0, 0), End: net.IPv4(10, 30, 255, 255), Netmask: net.CIDRMask(16, 32)}
	ctx, now := context.Background(), time.Now()
	macOf := func(i int) net.HardwareAddr {
		return net.HardwareAddr{0x02, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
	}
	i := 0
	for ; i < 65536; i++ {
		if _, err := l.Offer(ctx, p, macOf(i), now, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Offer(ctx, p, macOf(i), now, time.Minute); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if l.Withdrawn.Load() == 0 {
		b.Fatal("no offer was withdrawn")
	}
}

// BenchmarkAdmittedIPs is one gateway sync's read (every second): 5 000
// admitted hosts with production leases, in the appliance's store file.
func BenchmarkAdmittedIPs(b *testing.B) {
	path := filepath.Join(b.TempDir(), "bootgate.db")
	st, err := store.OpenSQLite(path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	l, err := OpenLeases(path)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	p := &Pool{Name: PoolProduction, Start: net.IPv4(10, 30, 0, 0), End: net.IPv4(10, 30, 255, 255), Netmask: net.CIDRMask(16, 32)}
	ctx, now := context.Background(), time.Now()
	const n = 5000
	for i := range n {
		mac := net.HardwareAddr{0x02, 0, 0, 0, byte(i >> 8), byte(i)}
		host := fmt.Sprintf("host-%05d", i)
		a := &store.Attestation{HostID: host, Time: now, Verdict: wire.VerdictPass, PolicyName: "p", PolicyDigest: "d"}
		if _, err := st.Record(ctx, a, store.Host{}); err != nil {
			b.Fatal(err)
		}
		le, err := l.Offer(ctx, p, mac, now, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if ok, err := l.Bind(ctx, p, mac, le.IP, now, time.Hour); !ok || err != nil {
			b.Fatal(ok, err)
		}
		if err := l.BindHost(ctx, mac, host, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		ips, err := l.admittedIPs(ctx, now, st)
		if err != nil || len(ips) != n {
			b.Fatalf("%d addresses, %v", len(ips), err)
		}
	}
}
