package appliance

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/admin"
	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/dhcpgate"
	"github.com/bootgate/bootgate/verifier/gateway"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
)

// dhcpGate is the running DHCP gate of the appliance.
type dhcpGate struct {
	server *dhcpgate.Server
	leases *dhcpgate.Leases
	conn   net.PacketConn
}

func pool(name string, c config.Pool) (dhcpgate.Pool, error) {
	p := dhcpgate.Pool{Name: name, Start: net.ParseIP(c.Start).To4(), End: net.ParseIP(c.End).To4(),
		Netmask: net.CIDRMask(c.PrefixLen, 32), LeaseTime: c.LeaseTime}
	if p.Start == nil || p.End == nil {
		return p, fmt.Errorf("dhcp.%s: start and end must be IPv4 addresses", name)
	}
	if c.Router != "" {
		if p.Router = net.ParseIP(c.Router).To4(); p.Router == nil {
			return p, fmt.Errorf("dhcp.%s.router: %q is not an IPv4 address", name, c.Router)
		}
	}
	for _, d := range c.DNS {
		ip := net.ParseIP(d).To4()
		if ip == nil {
			return p, fmt.Errorf("dhcp.%s.dns: %q is not an IPv4 address", name, d)
		}
		p.DNS = append(p.DNS, ip)
	}
	return p, nil
}

// relayWarnings returns what the operator must be told about c's relays
// (dhcp.relays): nothing without relays; with some, that relayed clients
// get quarantine-only service in this release and that their option 82
// IDs are unverified. The configuration stays valid: relayed clients can
// still be netbooted and attest from quarantine.
func relayWarnings(c *config.DHCP) []string {
	if len(c.Relays) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("dhcp.relays %v: relayed clients get quarantine-only service in this release: "+
		"their addresses come from the boot network's pools, not from the relay's subnet (RFC 2131 §4.3.1), "+
		"and the gateway never forwards them (it sees the relay router's MAC, not the client's); "+
		"option 82 circuit and remote IDs are unverified (a relay is recognised by a forgeable UDP source address)", c.Relays)}
}

// startDHCP keeps the leases in the store's database (st.Leases) and binds
// the DHCP socket to the boot network interface.
func startDHCP(c *config.DHCP, st *store.DB, log *slog.Logger) (*dhcpGate, error) {
	q, err := pool(dhcpgate.PoolQuarantine, c.Quarantine)
	if err != nil {
		return nil, err
	}
	p, err := pool(dhcpgate.PoolProduction, c.Production)
	if err != nil {
		return nil, err
	}
	cfg := dhcpgate.Config{ServerIP: net.ParseIP(c.ServerIP).To4(), Quarantine: q, Production: p,
		Endpoint: c.Endpoint, Alternates: c.Alternates, BootFile: c.BootFile, BootURL: c.BootURL}
	if cfg.ServerIP == nil {
		return nil, fmt.Errorf("dhcp.server_ip: %q is not an IPv4 address", c.ServerIP)
	}
	for _, w := range relayWarnings(c) {
		log.Warn(w)
	}
	for _, r := range c.Relays {
		ip := net.ParseIP(r).To4()
		if ip == nil {
			return nil, fmt.Errorf("dhcp.relays: %q is not an IPv4 address", r)
		}
		cfg.Relays = append(cfg.Relays, ip)
	}
	if c.CA != "" {
		b, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("dhcp.ca: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("dhcp.ca: no PEM certificate in %s", c.CA)
		}
		cfg.CACert = blk.Bytes
	}
	// The leases live in the store's database, on its one write connection:
	// on PostgreSQL appliances sharing it share the leases; on SQLite lease
	// writes queue with the verdicts instead of contending as a second
	// writer of the file.
	leases, err := dhcpgate.NewLeases(st.Leases())
	if err != nil {
		return nil, err
	}
	srv, err := dhcpgate.New(cfg, leases, dhcpgate.StoreAdmission{Leases: leases, Hosts: st}, log.With("component", "dhcp"))
	if err != nil {
		leases.Close()
		return nil, err
	}
	conn, err := server4.NewIPv4UDPConn(c.Interface, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		leases.Close()
		return nil, fmt.Errorf("dhcp: listen on %s: %w", c.Interface, err)
	}
	return &dhcpGate{server: srv, leases: leases, conn: conn}, nil
}

// Audit log fields of a host binding the DHCP gate refused: actor
// server.ActorAttestationAPI, action ActionBindRefused, target the host ID
// whose verdict was recorded.
const ActionBindRefused = "dhcp.bind.refused"

// recorded binds the client whose link the host's TPM quoted (and whose
// lease the attestation API checked) to the host: the MAC the TPM signed,
// not whichever client holds the address by now. A MAC bound to another
// host stays bound (dhcpgate.ErrMACBound; the attestation API refuses such
// links before recording, so this is a race between two attestations over
// one link): the refusal is logged as an error and audited.
func (g *dhcpGate) recorded(log *slog.Logger, audit server.RefusalLog) func(context.Context, string, server.Link) {
	return func(ctx context.Context, hostID string, link server.Link) {
		err := g.leases.BindHost(ctx, link.MAC, hostID, time.Now())
		if err == nil {
			return
		}
		var mb *dhcpgate.MACBoundError
		if !errors.As(err, &mb) {
			log.Warn("bind the attested link to its host", "host", hostID, "mac", link.MAC.String(), "ip", link.IP.String(), "err", err)
			return
		}
		log.Error("refused to move a MAC bound to another host", "host", hostID, "mac", link.MAC.String(), "ip", link.IP.String(),
			"bound_host", mb.Host, "until", mb.Until)
		if audit == nil {
			return
		}
		detail := fmt.Sprintf("quoted mac %s ip %s; %v", link.MAC, link.IP, err)
		if aerr := audit.RecordAction(ctx, server.ActorAttestationAPI, ActionBindRefused, hostID, detail); aerr != nil {
			log.Error("record refused binding", "err", aerr)
		}
	}
}

// reconcile keeps the gateway's admitted sets equal to the admitted hosts'
// production leases (address and MAC) until ctx ends, then empties them
// (fail closed). On a PostgreSQL store several appliances share, each
// reconciles its own sets from the database (dhcpgate.Leases.
// AdmittedLeases reads it), so a host admitted or quarantined through
// another appliance is forwarded or stopped here within one interval. It syncs every interval whether or not anything changed:
// each sync re-arms the elements' timeouts (gatewayTimeout), so the gate
// also closes when this loop stops without reaching Close.
func reconcile(ctx context.Context, gw *gateway.Gateway, leases *dhcpgate.Leases, st store.Store, every time.Duration, log *slog.Logger) {
	every = syncInterval(every)
	t := time.NewTicker(every)
	defer t.Stop()
	last := -1
	for {
		var hosts []gateway.Host
		admitted, err := leases.AdmittedLeases(ctx, time.Now(), st)
		if err == nil {
			for _, le := range admitted {
				hosts = append(hosts, gateway.Host{IP: le.IP, MAC: le.MAC})
			}
			err = gw.Sync(hosts)
		} else if eerr := gw.Ensure(); eerr != nil {
			// Nothing to write, but a removed table is put back (empty).
			err = errors.Join(err, eerr)
		}
		switch {
		case errors.Is(err, gateway.ErrReinstalled):
			// The gate was open since something removed or altered the
			// table; it is in place again.
			log.Error("gateway: the nftables table was removed or altered (ruleset flushed or reloaded?) and has been reinstalled", "err", err)
		case err != nil && ctx.Err() == nil:
			log.Error("gateway sync", "err", err)
		case len(hosts) != last:
			log.Info("gateway: admitted hosts", "count", len(hosts))
			last = len(hosts)
		}
		select {
		case <-ctx.Done():
			if err := gw.Close(); err != nil {
				log.Error("gateway close", "err", err)
			}
			return
		case <-t.C:
		}
	}
}

// syncInterval is the gateway's sync interval: gateway.sync, 1 s by default.
func syncInterval(every time.Duration) time.Duration {
	if every <= 0 {
		return time.Second
	}
	return every
}

// gatewayTimeout is how long the gateway forwards an admitted host after
// the last sync: three sync intervals, so that one or two late syncs do
// not interrupt admitted hosts, and a crashed or frozen appliance closes
// the gate within 3 × gateway.sync (docs/dhcp.md).
func gatewayTimeout(every time.Duration) time.Duration { return 3 * syncInterval(every) }

// adminLeases shows the DHCP gate's leases on the admin API.
type adminLeases struct{ l *dhcpgate.Leases }

func (a adminLeases) HostLeases(ids []string, now time.Time) map[string]admin.Lease {
	out := map[string]admin.Lease{}
	for id, le := range a.l.HostLeases(ids, now) {
		al := admin.Lease{IP: le.IP.String(), MAC: le.MAC.String(), Pool: le.Pool, Expires: le.Expires}
		if le.Relay != nil {
			al.Relay = &admin.LeaseRelay{Addr: le.Relay.Addr.String(),
				CircuitID: textsafe.Bytes(le.Relay.CircuitID), RemoteID: textsafe.Bytes(le.Relay.RemoteID)}
		}
		out[id] = al
	}
	return out
}

func (a adminLeases) CountByPool(now time.Time) map[string]int { return a.l.CountByPool(now) }
