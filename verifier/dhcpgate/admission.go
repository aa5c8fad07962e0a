package dhcpgate

import (
	"context"
	"errors"
	"fmt"
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

// AdmittedIPs returns the addresses of bound production leases whose client
// is bound to a host that is admitted now: what the gateway may forward.
func (l *Leases) AdmittedIPs(ctx context.Context, now time.Time, hosts HostStates) ([]net.IP, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT l.ip, m.host_id FROM dhcp_leases l JOIN dhcp_host_macs m ON l.mac = m.mac
		WHERE l.pool = ? AND l.bound = 1 AND l.expires > ?`, PoolProduction, now.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("admitted addresses: %w", err)
	}
	type row struct {
		ip   uint32
		host string
	}
	var rs []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.ip, &r.host); err != nil {
			rows.Close()
			return nil, fmt.Errorf("admitted addresses: %w", err)
		}
		rs = append(rs, r)
	}
	rows.Close()
	state := map[string]bool{}
	var out []net.IP
	for _, r := range rs {
		ok, seen := state[r.host]
		if !seen {
			h, err := hosts.Host(ctx, r.host)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("admitted addresses: %w", err)
			}
			ok = err == nil && h.State == store.HostAdmitted
			state[r.host] = ok
		}
		if ok {
			out = append(out, ipOf(r.ip))
		}
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
