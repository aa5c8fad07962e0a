// Package dhcpgate is the appliance's DHCP server, whose answers depend on
// attestation: a host that is unknown, failed or quarantined gets a short
// lease from the quarantine pool, from which only the appliance is reachable;
// a host whose last attestation passed gets a lease from the production pool.
//
// Packets are parsed and built with github.com/insomniacslk/dhcp; the serve
// loop is bounded (a fixed number of workers and a queue that drops when
// full), since a boot storm must not turn into unbounded goroutines.
package dhcpgate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Pool names.
const (
	PoolQuarantine = "quarantine"
	PoolProduction = "production"
)

// Pool is a range of addresses and the options that go with them.
type Pool struct {
	Name       string
	Start, End net.IP
	Netmask    net.IPMask
	Router     net.IP   // nil: no default route (the quarantine pool's usual case)
	DNS        []net.IP // may be empty
	LeaseTime  time.Duration
}

// Contains reports whether ip is in the pool's range.
func (p *Pool) Contains(ip net.IP) bool {
	v := ip.To4()
	return v != nil && bytes.Compare(v, p.Start.To4()) >= 0 && bytes.Compare(v, p.End.To4()) <= 0
}

// Vendor option 43 sub-options that tell the agent where to attest and
// which CA to trust (documented in docs/dhcp.md).
const (
	SubOptEndpoint      = 1 // the attestation API's URL, text
	SubOptCAFingerprint = 2 // SHA-256 of the appliance CA certificate (DER), 32 bytes
)

// Config configures a Server.
type Config struct {
	ServerIP   net.IP // the appliance's address on the boot network
	Quarantine Pool
	Production Pool
	// Endpoint is the attestation API's URL handed to agents (option 43).
	Endpoint string
	// CACert is the appliance CA certificate (DER) whose SHA-256 agents get.
	CACert []byte
	// BootFile is the agent UKI's TFTP path for PXE clients; BootURL its
	// HTTP URL for UEFI HTTP boot clients.
	BootFile, BootURL string
	Workers           int // default 8
	Queue             int // packets waiting for a worker; default 1024
	OfferTTL          time.Duration
}

// Admission tells whether a client may have a production lease.
type Admission interface {
	Admitted(ctx context.Context, mac net.HardwareAddr) (bool, error)
}

// Stats counts what the server did.
type Stats struct {
	Received, Dropped, Malformed, Offers, Acks, Naks atomic.Uint64
}

// Server answers DHCPv4 on one socket.
type Server struct {
	cfg    Config
	leases *Leases
	admit  Admission
	log    *slog.Logger
	now    func() time.Time
	Stats  Stats
}

// New makes a server.
func New(cfg Config, leases *Leases, admit Admission, log *slog.Logger) (*Server, error) {
	if cfg.ServerIP.To4() == nil || leases == nil || admit == nil {
		return nil, errors.New("dhcp gate: server IP, leases and admission are required")
	}
	for _, p := range []*Pool{&cfg.Quarantine, &cfg.Production} {
		if p.Start.To4() == nil || p.End.To4() == nil || bytes.Compare(p.Start.To4(), p.End.To4()) > 0 || p.LeaseTime <= 0 {
			return nil, fmt.Errorf("dhcp gate: pool %s: bad range or lease time", p.Name)
		}
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	if cfg.OfferTTL <= 0 {
		cfg.OfferTTL = 30 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, leases: leases, admit: admit, log: log, now: time.Now}, nil
}

type packet struct {
	buf  []byte
	peer *net.UDPAddr
}

// Serve reads packets from conn until ctx ends or conn fails, and answers
// them with a fixed pool of workers. When the queue is full, packets are
// dropped (and counted): DHCP clients retry.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	queue := make(chan packet, s.cfg.Queue)
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range queue {
				s.handle(ctx, conn, p)
			}
		}()
	}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	var err error
	for {
		buf := make([]byte, 1500)
		n, peer, rerr := conn.ReadFrom(buf)
		if rerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("dhcp gate: read: %w", rerr)
			}
			break
		}
		s.Stats.Received.Add(1)
		up, ok := peer.(*net.UDPAddr)
		if !ok {
			continue
		}
		select {
		case queue <- packet{buf[:n], up}:
		default:
			s.Stats.Dropped.Add(1)
		}
	}
	close(queue)
	wg.Wait()
	return err
}

func (s *Server) handle(ctx context.Context, conn net.PacketConn, p packet) {
	req, err := dhcpv4.FromBytes(p.buf)
	if err != nil || req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		s.Stats.Malformed.Add(1)
		s.log.Warn("dropped malformed DHCP packet", "from", p.peer.String(), "bytes", len(p.buf), "err", err)
		return
	}
	resp, err := s.Reply(ctx, req)
	if err != nil {
		s.log.Warn("dhcp", "mac", req.ClientHWAddr.String(), "type", req.MessageType().String(), "err", err)
		return
	}
	if resp == nil {
		return
	}
	dst := p.peer
	switch {
	case !req.GatewayIPAddr.IsUnspecified():
		dst = &net.UDPAddr{IP: req.GatewayIPAddr, Port: dhcpv4.ServerPort}
	case resp.MessageType() == dhcpv4.MessageTypeNak || p.peer.IP.IsUnspecified() || req.IsBroadcast() || req.ClientIPAddr.IsUnspecified():
		dst = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	}
	if _, err := conn.WriteTo(resp.ToBytes(), dst); err != nil {
		s.log.Warn("dhcp: send", "mac", req.ClientHWAddr.String(), "err", err)
	}
}

// Reply computes the answer to one request, or nil for none. It is the whole
// protocol logic, testable without sockets.
func (s *Server) Reply(ctx context.Context, req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	mac := req.ClientHWAddr
	if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(s.cfg.ServerIP) {
		return nil, nil // meant for another server
	}
	pool, err := s.poolFor(ctx, mac)
	if err != nil {
		return nil, err
	}
	now := s.now()
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		l, err := s.leases.Offer(ctx, pool, mac, now, s.cfg.OfferTTL)
		if err != nil {
			return nil, err
		}
		s.Stats.Offers.Add(1)
		return s.build(req, dhcpv4.MessageTypeOffer, pool, l.IP)
	case dhcpv4.MessageTypeRequest:
		ip := req.RequestedIPAddress()
		if ip == nil || ip.IsUnspecified() {
			ip = req.ClientIPAddr
		}
		ok, err := s.leases.Bind(ctx, pool, mac, ip, now, pool.LeaseTime)
		if err != nil {
			return nil, err
		}
		if !ok {
			// Wrong pool (the host was admitted or quarantined since), or
			// not its address: the client starts over with a DISCOVER.
			s.Stats.Naks.Add(1)
			return dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)))
		}
		s.Stats.Acks.Add(1)
		s.log.Debug("lease", "mac", mac.String(), "ip", ip.String(), "pool", pool.Name)
		return s.build(req, dhcpv4.MessageTypeAck, pool, ip)
	case dhcpv4.MessageTypeRelease:
		return nil, s.leases.Release(ctx, mac, req.ClientIPAddr)
	case dhcpv4.MessageTypeDecline:
		return nil, s.leases.Decline(ctx, req.RequestedIPAddress(), now, 10*time.Minute)
	case dhcpv4.MessageTypeInform:
		return s.build(req, dhcpv4.MessageTypeAck, pool, nil)
	default:
		return nil, fmt.Errorf("unhandled message type %v", req.MessageType())
	}
}

func (s *Server) poolFor(ctx context.Context, mac net.HardwareAddr) (*Pool, error) {
	ok, err := s.admit.Admitted(ctx, mac)
	if err != nil {
		return nil, fmt.Errorf("admission of %s: %w", mac, err)
	}
	if ok {
		return &s.cfg.Production, nil
	}
	return &s.cfg.Quarantine, nil
}

func (s *Server) build(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType, p *Pool, ip net.IP) (*dhcpv4.DHCPv4, error) {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithServerIP(s.cfg.ServerIP),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)),
		dhcpv4.WithNetmask(p.Netmask),
	}
	if ip != nil {
		mods = append(mods, dhcpv4.WithYourIP(ip), dhcpv4.WithLeaseTime(uint32(p.LeaseTime/time.Second)))
	}
	if p.Router != nil {
		mods = append(mods, dhcpv4.WithRouter(p.Router))
	}
	if len(p.DNS) > 0 {
		mods = append(mods, dhcpv4.WithDNS(p.DNS...))
	}
	if vendor := s.vendorOption(); len(vendor) > 0 {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, vendor))
	}
	// PXE and UEFI HTTP boot clients get the agent UKI.
	switch vc := req.ClassIdentifier(); {
	case len(vc) >= 10 && vc[:10] == "HTTPClient" && s.cfg.BootURL != "":
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient")), dhcpv4.WithOption(dhcpv4.OptBootFileName(s.cfg.BootURL)))
	case len(vc) >= 9 && vc[:9] == "PXEClient" && s.cfg.BootFile != "":
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptBootFileName(s.cfg.BootFile)),
			dhcpv4.WithOption(dhcpv4.OptTFTPServerName(s.cfg.ServerIP.String())))
		mods = append(mods, func(d *dhcpv4.DHCPv4) { d.BootFileName = s.cfg.BootFile })
	}
	return dhcpv4.NewReplyFromRequest(req, mods...)
}

// vendorOption encodes option 43's sub-options (type, length, value).
func (s *Server) vendorOption() []byte {
	var b []byte
	add := func(code byte, v []byte) {
		if len(v) > 0 && len(v) < 256 {
			b = append(append(b, code, byte(len(v))), v...)
		}
	}
	add(SubOptEndpoint, []byte(s.cfg.Endpoint))
	if len(s.cfg.CACert) > 0 {
		sum := sha256.Sum256(s.cfg.CACert)
		add(SubOptCAFingerprint, sum[:])
	}
	return b
}

// CAFingerprint is the hex SHA-256 agents get for cert (DER).
func CAFingerprint(cert []byte) string {
	sum := sha256.Sum256(cert)
	return hex.EncodeToString(sum[:])
}
