package dhcpgate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/bootgate/bootgate/verifier/store"
)

// HostStates reads hosts' attestation states.
type HostStates interface {
	Host(ctx context.Context, id string) (*store.Host, error)
}

// StoreAdmission admits a client whose MAC is bound to a host whose last
// attestation passed. Unknown clients, unbound MACs, failed and quarantined
// hosts get the quarantine pool.
type StoreAdmission struct {
	Leases *Leases
	Hosts  HostStates
}

// Admitted implements Admission.
func (a StoreAdmission) Admitted(ctx context.Context, mac net.HardwareAddr) (bool, error) {
	id, err := a.Leases.HostOf(ctx, mac)
	if err != nil || id == "" {
		return false, err
	}
	h, err := a.Hosts.Host(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return h.State == store.HostAdmitted, nil
}

// AdmittedSet lists the hosts admitted now.
type AdmittedSet interface {
	AdmittedHosts(ctx context.Context) (map[string]bool, error)
}

// AdmittedLeases returns the live bound production leases whose client is
// bound (BindHost, unexpired) to a host that is admitted now, by address:
// what the gateway may forward, each address with the MAC address that
// holds it. On an SQLite file it reads the leases and their hosts from
// memory (which holds what the file holds), the admitted hosts from hosts;
// on a database several appliances share, leases, bindings and admission
// from the database in one statement (store.LeaseTables.AdmittedLeases),
// so that a host bound and admitted through another appliance is included
// and one quarantined through another appliance before it is not.
func (l *Leases) AdmittedLeases(ctx context.Context, now time.Time, hosts AdmittedSet) ([]Lease, error) {
	if l.shared {
		rows, err := l.t.AdmittedLeases(ctx, PoolProduction, now.UnixNano())
		if err != nil {
			return nil, fmt.Errorf("admitted addresses: %w", err)
		}
		var out []Lease
		for _, r := range rows {
			out = append(out, *leaseOf(r.LeaseRow))
		}
		return out, nil
	}
	admitted, err := hosts.AdmittedHosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("admitted addresses: %w", err)
	}
	l.mu.Lock()
	var out []Lease
	for mac, ipn := range l.bound {
		le := l.live(ipn, now)
		if le == nil || !le.Bound || le.Pool != PoolProduction || le.MAC == nil || le.MAC.String() != mac {
			continue
		}
		if id := l.hostOf(mac, now); id != "" && admitted[id] {
			out = append(out, *le)
		}
	}
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b Lease) int { return cmp.Compare(ip4(a.IP), ip4(b.IP)) })
	return out, nil
}
