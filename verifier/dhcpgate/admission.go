package dhcpgate

import (
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

// AdmittedIPs returns the addresses of bound production leases whose client
// is bound to a host that is admitted now: what the gateway may forward. It
// reads the leases and their hosts from memory (which holds what SQLite
// holds) and the admitted hosts in one query.
func (l *Leases) AdmittedIPs(ctx context.Context, now time.Time, hosts AdmittedSet) ([]net.IP, error) {
	admitted, err := hosts.AdmittedHosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("admitted addresses: %w", err)
	}
	l.mu.Lock()
	var ipns []uint32
	for mac, ipn := range l.bound {
		if le := l.live(ipn, now); le != nil && le.Pool == PoolProduction && admitted[l.hosts[mac]] {
			ipns = append(ipns, ipn)
		}
	}
	l.mu.Unlock()
	slices.Sort(ipns)
	out := make([]net.IP, len(ipns))
	for i, ipn := range ipns {
		out[i] = ipOf(ipn)
	}
	return out, nil
}

// Attested binds the client that holds remote's lease to hostID: the
// attestation came from that address. Called by the attestation API after
// every recorded verdict.
func (l *Leases) Attested(ctx context.Context, hostID string, remote net.IP, now time.Time) error {
	lease, err := l.ByIP(ctx, remote, now)
	if err != nil {
		return err
	}
	return l.BindHost(ctx, lease.MAC, hostID, now)
}
