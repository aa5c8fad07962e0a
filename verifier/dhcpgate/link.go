package dhcpgate

import (
	"context"
	"net"
	"time"
)

// BoundTo returns the MAC that holds ip's live, bound lease at now (a copy),
// and false when ip has none: an offer, a declined address, an expired or
// missing lease. The attestation API asks it whether a quoted (IP, MAC) link
// is a lease of this gate.
func (l *Leases) BoundTo(ctx context.Context, ip net.IP, now time.Time) (net.HardwareAddr, bool) {
	le, err := l.ByIP(ctx, ip, now)
	if err != nil {
		return nil, false
	}
	return le.MAC, true
}
