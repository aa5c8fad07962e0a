package dhcpgate

import (
	"context"
	"net"
	"time"
)

// BoundTo returns the MAC that holds ip's live, bound lease at now (a copy),
// and false when ip has none: an offer, a declined address, an expired or
// missing lease. The attestation API asks it whether a quoted (IP, MAC) link
// is a lease of this gate. On a database several appliances share it reads
// the database (a lease another appliance bound counts), and a failed read
// is false (fail closed).
func (l *Leases) BoundTo(ctx context.Context, ip net.IP, now time.Time) (net.HardwareAddr, bool) {
	if l.shared {
		if ip.To4() == nil {
			return nil, false
		}
		r, err := l.t.Lease(ctx, ip4(ip), now.UnixNano())
		if err != nil || r == nil || !r.Bound || r.MAC == "" {
			return nil, false
		}
		mac, err := net.ParseMAC(r.MAC)
		if err != nil {
			return nil, false
		}
		return mac, true
	}
	le, err := l.ByIP(ctx, ip, now)
	if err != nil {
		return nil, false
	}
	return le.MAC, true
}
