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
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/bootgate/bootgate/verifier/wire"
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

// Config configures a Server.
type Config struct {
	ServerIP   net.IP // the appliance's address on the boot network
	Quarantine Pool
	Production Pool
	// Endpoint is the attestation API's URL handed to agents (option 43,
	// wire.Vendor); at most 255 bytes.
	Endpoint string
	// Alternates are the attestation API URLs of the appliance's other
	// replicas (sharing its store and session key), which agents try when
	// Endpoint cannot be reached; option 43 holds them with Endpoint in 255
	// bytes.
	Alternates []string
	// CACert is the appliance CA certificate (DER) whose SHA-256 agents get.
	CACert []byte
	// BootFile is the agent UKI's TFTP path for PXE clients; BootURL its
	// HTTP URL for UEFI HTTP boot clients.
	BootFile, BootURL string
	Workers           int // default 8
	Queue             int // packets waiting for a worker; default 1024
	OfferTTL          time.Duration
	// Relays are the DHCP relay agents (their giaddr, RFC 2131 §4.1) whose
	// requests are answered. A request with any other nonzero giaddr, or a
	// relayed request whose UDP source is not a listed relay, gets no
	// answer. Empty (the default): only clients on the boot network itself.
	Relays []net.IP
	// DeclineTime is how long a declined address is set aside (default
	// 10 min).
	DeclineTime time.Duration
}

// Errors for requests the server drops without answering; Reply returns
// them (wrapped) and changes nothing.
var (
	// ErrUnknownRelay: the request names a relay (giaddr) that is not in
	// Config.Relays, or came from an address that is not.
	ErrUnknownRelay = errors.New("relay agent not configured")
	// ErrBadRelayInfo: a relayed request whose relay agent information
	// option (82) does not parse (RFC 3046 §2.0).
	ErrBadRelayInfo = errors.New("malformed relay agent information option")
	// ErrRateLimited: a RELEASE or DECLINE beyond the rate limits (one per
	// client per 10 s, 5 per second overall with bursts of 20).
	ErrRateLimited = errors.New("too many RELEASE or DECLINE messages")
	// ErrSourceMismatch: a RELEASE that no relay carried came from another
	// UDP source address than the address it releases (ciaddr), or from an
	// unknown one. A client unicasts DHCPRELEASE from its leased address
	// (RFC 2131 §4.4.6, §4.3.4).
	ErrSourceMismatch = errors.New("RELEASE not sent from the released address")
)

// Admission tells whether a client may have a production lease.
type Admission interface {
	Admitted(ctx context.Context, mac net.HardwareAddr) (bool, error)
}

// Stats counts what the server did.
type Stats struct {
	Received, Dropped, Malformed, Offers, Acks, Naks atomic.Uint64
	// Refused counts RELEASEs and DECLINEs that did not count: from a
	// client that does not hold the address, for an address outside every
	// pool, beyond the rate limits or the pool's declined-address cap.
	Refused atomic.Uint64
	// UnknownRelay counts requests with a giaddr (or from a relay) that is
	// not configured, and relayed requests with a malformed option 82.
	UnknownRelay atomic.Uint64
}

// Server answers DHCPv4 on one socket.
type Server struct {
	cfg    Config
	vendor []byte // option 43's data (wire.Vendor), encoded once
	leases *Leases
	admit  Admission
	log    *slog.Logger
	now    func() time.Time
	limit  limiter
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
	if cfg.DeclineTime <= 0 {
		cfg.DeclineTime = 10 * time.Minute
	}
	for _, r := range cfg.Relays {
		if r.To4() == nil || r.To4().IsUnspecified() {
			return nil, fmt.Errorf("dhcp gate: relay %v is not an IPv4 address", r)
		}
	}
	v := wire.Vendor{Endpoint: cfg.Endpoint, Alternates: cfg.Alternates}
	if len(cfg.CACert) > 0 {
		sum := sha256.Sum256(cfg.CACert)
		v.CAFingerprint = sum[:]
	}
	vendor, err := v.Marshal()
	if err != nil {
		return nil, fmt.Errorf("dhcp gate: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, vendor: vendor, leases: leases, admit: admit, log: log, now: time.Now, limit: limiter{last: map[string]time.Time{}}}, nil
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
	// A relayed request must come from the relay it names (RFC 2131 §4.1:
	// the relay sends from its own address); Reply checks the name.
	if gi := req.GatewayIPAddr; gi != nil && !gi.IsUnspecified() && !s.isRelay(p.peer.IP) {
		s.Stats.UnknownRelay.Add(1)
		s.log.Warn("dropped relayed DHCP packet from an address that is not a configured relay",
			"mac", req.ClientHWAddr.String(), "from", p.peer.String(), "giaddr", gi.String())
		return
	}
	resp, err := s.ReplyFrom(ctx, req, p.peer.IP)
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
// protocol logic, testable without sockets. A request it drops comes back
// as an error that says why (ErrUnknownRelay, ErrBadRelayInfo, ErrNotHolder,
// ErrOutsidePools, ErrRateLimited, ErrTooManyDeclined), with nothing
// changed.
//
// Relays (RFC 2131 §4.1, RFC 3046): a request with a nonzero giaddr is
// answered only when giaddr is in Config.Relays; its option 82 circuit and
// remote IDs are recorded with the lease it binds and echoed in the reply
// (RFC 3046 §2.2). Option 82 in a request that no relay carried is ignored
// and not echoed.
//
// RELEASE (§4.3.4) and DECLINE (§4.3.3) count only for an address inside
// a pool, from the client that holds it (or, for DECLINE, was offered it),
// within the rate limits; a DECLINE sets the address aside for
// Config.DeclineTime, up to MaxDeclined addresses per pool.
//
// Reply does not know the UDP source address, so it drops every RELEASE
// that no relay carried (ErrSourceMismatch); the server itself answers
// with ReplyFrom.
func (s *Server) Reply(ctx context.Context, req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	return s.ReplyFrom(ctx, req, nil)
}

// ReplyFrom is Reply for a request that arrived from the UDP source
// address src (4 or 16 bytes; nil when unknown). A RELEASE with a zero
// giaddr counts only when src equals its ciaddr (RFC 2131 §4.4.6: the
// client unicasts DHCPRELEASE from the address it releases); otherwise it
// is dropped with ErrSourceMismatch and changes nothing. A relayed RELEASE
// (nonzero giaddr) comes from the relay, whose address Serve has checked,
// so it is held to the other RELEASE rules only. The source of other
// messages is not used here.
func (s *Server) ReplyFrom(ctx context.Context, req *dhcpv4.DHCPv4, src net.IP) (*dhcpv4.DHCPv4, error) {
	mac := req.ClientHWAddr
	relay, err := s.relayOf(req)
	if err != nil {
		s.Stats.UnknownRelay.Add(1)
		return nil, err
	}
	if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(s.cfg.ServerIP) {
		return nil, nil // meant for another server
	}
	now := s.now()
	switch req.MessageType() {
	case dhcpv4.MessageTypeRelease:
		return nil, s.refused(s.release(ctx, mac, req.ClientIPAddr, relay != nil, src, now))
	case dhcpv4.MessageTypeDecline:
		return nil, s.refused(s.decline(ctx, mac, req.RequestedIPAddress(), now))
	}
	pool, err := s.poolFor(ctx, mac)
	if err != nil {
		return nil, err
	}
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
		ok, err := s.leases.BindRelayed(ctx, pool, mac, ip, now, pool.LeaseTime, relay)
		if err != nil {
			return nil, err
		}
		if !ok {
			// Wrong pool (the host was admitted or quarantined since), not
			// its address, or another address than its bound lease: the
			// client starts over with a DISCOVER.
			s.Stats.Naks.Add(1)
			s.log.Debug("nak", "mac", mac.String(), "ip", ip.String(), "pool", pool.Name)
			return dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)), unrelayed(req))
		}
		s.Stats.Acks.Add(1)
		s.log.Debug("lease", "mac", mac.String(), "ip", ip.String(), "pool", pool.Name, "relay", relay.String())
		return s.build(req, dhcpv4.MessageTypeAck, pool, ip)
	case dhcpv4.MessageTypeInform:
		return s.build(req, dhcpv4.MessageTypeAck, pool, nil)
	default:
		return nil, fmt.Errorf("unhandled message type %v", req.MessageType())
	}
}

// refused counts err, a RELEASE or DECLINE that did not count.
func (s *Server) refused(err error) error {
	if err != nil {
		s.Stats.Refused.Add(1)
	}
	return err
}

// poolOf returns the configured pool that holds ip, or nil.
func (s *Server) poolOf(ip net.IP) *Pool {
	for _, p := range []*Pool{&s.cfg.Quarantine, &s.cfg.Production} {
		if p.Contains(ip) {
			return p
		}
	}
	return nil
}

// release ends mac's lease of ip (RFC 2131 §4.3.4) when ip is in a pool,
// mac holds it, the message came from ip itself unless a relay carried it
// (relayed; src is then the relay), and the rate limits allow it.
func (s *Server) release(ctx context.Context, mac net.HardwareAddr, ip net.IP, relayed bool, src net.IP, now time.Time) error {
	if s.poolOf(ip) == nil {
		return fmt.Errorf("release %v from %s: %w", ip, mac, ErrOutsidePools)
	}
	if !s.leases.Holds(mac, ip, now) {
		return fmt.Errorf("release %s from %s: %w", ip, mac, ErrNotHolder)
	}
	if !relayed && (src == nil || !src.Equal(ip)) {
		return fmt.Errorf("release %s from %s sent from %v: %w", ip, mac, src, ErrSourceMismatch)
	}
	if !s.limit.allow(mac.String(), now) {
		return fmt.Errorf("release %s from %s: %w", ip, mac, ErrRateLimited)
	}
	if err := s.leases.Release(ctx, mac, ip); err != nil {
		return err
	}
	s.log.Info("lease released", "mac", mac.String(), "ip", ip.String())
	return nil
}

func (s *Server) decline(ctx context.Context, mac net.HardwareAddr, ip net.IP, now time.Time) error {
	p := s.poolOf(ip)
	if p == nil {
		return fmt.Errorf("decline %v from %s: %w", ip, mac, ErrOutsidePools)
	}
	if !s.leases.Holds(mac, ip, now) {
		return fmt.Errorf("decline %s from %s: %w", ip, mac, ErrNotHolder)
	}
	if !s.limit.allow(mac.String(), now) {
		return fmt.Errorf("decline %s from %s: %w", ip, mac, ErrRateLimited)
	}
	if err := s.leases.Decline(ctx, p, mac, ip, now, s.cfg.DeclineTime); err != nil {
		return err
	}
	s.log.Warn("address declined: another machine uses it", "mac", mac.String(), "ip", ip.String(), "until", now.Add(s.cfg.DeclineTime))
	return nil
}

// isRelay reports whether ip is a configured relay.
func (s *Server) isRelay(ip net.IP) bool {
	return slices.ContainsFunc(s.cfg.Relays, ip.Equal)
}

// relayOf returns the relay that carried req and what it said about the
// client (RFC 3046 sub-options 1 and 2), nil for a request without giaddr,
// or ErrUnknownRelay / ErrBadRelayInfo.
func (s *Server) relayOf(req *dhcpv4.DHCPv4) (*Relay, error) {
	gi := req.GatewayIPAddr
	if gi == nil || gi.IsUnspecified() {
		return nil, nil
	}
	if !s.isRelay(gi) {
		return nil, fmt.Errorf("request from %s via giaddr %s: %w", req.ClientHWAddr, gi, ErrUnknownRelay)
	}
	r := &Relay{Addr: gi.To4()}
	if req.Options.Has(dhcpv4.OptionRelayAgentInformation) {
		info := req.RelayAgentInfo()
		if info == nil {
			return nil, fmt.Errorf("request from %s via %s: %w", req.ClientHWAddr, gi, ErrBadRelayInfo)
		}
		r.CircuitID = info.Get(dhcpv4.AgentCircuitIDSubOption)
		r.RemoteID = info.Get(dhcpv4.AgentRemoteIDSubOption)
	}
	return r, nil
}

// unrelayed drops option 82 from the reply to a request no relay carried
// (NewReplyFromRequest copies it, as RFC 3046 §2.2 asks of relayed ones).
func unrelayed(req *dhcpv4.DHCPv4) dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) {
		if req.GatewayIPAddr == nil || req.GatewayIPAddr.IsUnspecified() {
			d.Options.Del(dhcpv4.OptionRelayAgentInformation)
		}
	}
}

// Rate limits of RELEASE and DECLINE (documented in docs/dhcp.md).
const (
	limitPerClient = 10 * time.Second // one per client per this
	limitRate      = 5.0              // per second, overall
	limitBurst     = 20.0
	limitClients   = 4096 // clients remembered at once
)

// limiter bounds the RELEASEs and DECLINEs that count: one per client per
// limitPerClient, and limitRate per second overall with bursts of
// limitBurst. It remembers at most limitClients clients.
type limiter struct {
	mu     sync.Mutex
	last   map[string]time.Time
	tokens float64
	at     time.Time
}

func (r *limiter) allow(client string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.last[client]; ok && now.Sub(t) < limitPerClient && !now.Before(t) {
		return false
	}
	if r.at.IsZero() {
		r.tokens, r.at = limitBurst, now
	}
	if d := now.Sub(r.at); d > 0 {
		r.tokens = min(limitBurst, r.tokens+d.Seconds()*limitRate)
		r.at = now
	}
	if r.tokens < 1 {
		return false
	}
	if len(r.last) >= limitClients {
		for k, t := range r.last {
			if now.Sub(t) >= limitPerClient {
				delete(r.last, k)
			}
		}
		if len(r.last) >= limitClients {
			return false
		}
	}
	r.tokens--
	r.last[client] = now
	return true
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
		unrelayed(req),
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
	if len(s.vendor) > 0 {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, s.vendor))
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

// CAFingerprint is the hex SHA-256 agents get for cert (DER).
func CAFingerprint(cert []byte) string {
	sum := sha256.Sum256(cert)
	return hex.EncodeToString(sum[:])
}
