package dhcpgate

import (
	"context"
	"errors"
	"net"
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
