package dhcpgate

import (
	"context"
	"net"
	"time"
)

// attested binds the client holding remote's lease to hostID, as the
// attestation API does for a quoted link (BindHost on the link's MAC).
func (l *Leases) attested(ctx context.Context, hostID string, remote net.IP, now time.Time) error {
	lease, err := l.ByIP(ctx, remote, now)
	if err != nil {
		return err
	}
	return l.BindHost(ctx, lease.MAC, hostID, now)
}

// admittedIPs returns the addresses of AdmittedLeases, in order: what the
// gateway forwards.
func (l *Leases) admittedIPs(ctx context.Context, now time.Time, hosts AdmittedSet) ([]net.IP, error) {
	leases, err := l.AdmittedLeases(ctx, now, hosts)
	if err != nil {
		return nil, err
	}
	out := make([]net.IP, len(leases))
	for i, le := range leases {
		out[i] = le.IP
	}
	return out, nil
}

// boundMAC returns the MAC address the host is bound to now, or nil.
func (l *Leases) boundMAC(hostID string, now time.Time) net.HardwareAddr {
	l.mu.Lock()
	defer l.mu.Unlock()
	key, ok := l.macOf[hostID]
	if !ok || l.hostOf(key, now) != hostID {
		return nil
	}
	hw, _ := net.ParseMAC(key)
	return hw
}
