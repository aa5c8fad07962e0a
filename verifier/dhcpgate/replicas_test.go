package dhcpgate

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/pgtest"
	"github.com/bootgate/bootgate/verifier/store"
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
