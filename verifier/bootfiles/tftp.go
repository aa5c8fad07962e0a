package bootfiles

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pin/tftp/v3/netascii"
	"golang.org/x/sys/unix"

	"github.com/bootgate/bootgate/verifier/connlimit"
)

// TFTP opcodes and error codes (RFC 1350, RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6

	errNotDefined      = 0
	errFileNotFound    = 1
	errAccessViolation = 2
)

// maxFilename bounds a read request's file name, in bytes.
const maxFilename = 255

// Block sizes (RFC 1350, RFC 2348).
const (
	defaultBlockSize = 512
	minBlockSize     = 8
	maxBlockSize     = 65464
)

// ServeTFTP answers read requests on conn until ctx ends, then closes conn
// and waits for the transfers in progress to finish; writes are refused
// with an error packet.
//
// Every datagram on conn passes a gate: it lets through only well-formed
// read requests (mode octet or netascii) within the TFTP caps; everything
// else is dropped unanswered, before anything is opened for it. An
// admitted request gets its own socket, connected to the client, and a
// transfer that sends one block at a time, waits TFTPTimeout for each
// acknowledgement, sends a block again at most TFTPRetries times, and is
// aborted after TransferTime. A request repeated from the same client
// address for the same file is dropped once its transfer has sent a data
// block (a retransmission), and replaces the transfer while it has sent only
// its option acknowledgement (a PXE client's tsize probe, aborted and asked
// again). An error packet
// from the client ends its transfer without an answer (RFC 1350). Blocks
// are as large as the client's blksize option asks, up to the MTU of the
// interface the transfer's socket sends on (RFC 2348). ServeTFTP returns
// nil once ctx has ended, or the error that stopped reading conn.
func (f *Files) ServeTFTP(ctx context.Context, conn net.PacketConn) error {
	g := &tftpGate{conn: conn, f: f, running: make(map[string]*tftpTransfer)}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	defer g.wg.Wait()
	defer g.endAll()
	defer conn.Close()
	buf := make([]byte, 2048)
	for {
		n, addr, err := conn.ReadFrom(buf)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		g.handle(buf[:n], addr)
	}
}

// TFTPStats counts what the TFTP gate did.
type TFTPStats struct {
	// Admitted is the number of read requests handed to a transfer.
	Admitted uint64
	// Shed is the number of read requests dropped for the caps.
	Shed uint64
	// Dropped is the number of other datagrams dropped: malformed, not a
	// request, or a repeated request of a running transfer.
	Dropped uint64
	// Replaced is the number of transfers ended, before any block was
	// acknowledged, by a new request from the same client address for the
	// same file.
	Replaced uint64
	// Active is the number of transfers running now.
	Active int
}

// TFTPStats returns the TFTP gate's counters (zero before ServeTFTP).
func (f *Files) TFTPStats() TFTPStats {
	total, _ := f.tftpSlots.Active()
	return TFTPStats{Admitted: f.tftpAdmitted.Load(), Shed: f.tftpSlots.Shed(), Dropped: f.tftpDropped.Load(),
		Replaced: f.tftpReplaced.Load(), Active: total}
}

// errTransferTime aborts a TFTP transfer that ran out of time.
var errTransferTime = errors.New("transfer took too long")

// tftpGate admits read requests from the listening socket and runs their
// transfers, each holding a slot of the TFTP caps until it ends.
type tftpGate struct {
	conn net.PacketConn
	f    *Files
	wg   sync.WaitGroup

	mu      sync.Mutex
	running map[string]*tftpTransfer // by client address (ip:port); at most the total cap
}

// tftpTransfer is one admitted read request.
type tftpTransfer struct {
	key    string
	src    netip.Addr
	client *net.UDPAddr
	name   string
	mode   string
	opts   []tftpOption
	acked  atomic.Bool // a data block was acknowledged
	// dataSent: a data block was sent. Until then the transfer has sent an
	// OACK at most, no larger than the request, so replacing it on a
	// repeated request amplifies nothing.
	dataSent atomic.Bool
	// ended: the transfer was replaced, and must not open its file.
	ended atomic.Bool
	// replaced: when this transfer replaced another (zero if it did not).
	replaced time.Time

	// conn is the transfer's socket; closing it ends the transfer.
	conn *net.UDPConn
}

type tftpOption struct{ name, value string }

// handle gates one datagram received on the listening socket.
func (g *tftpGate) handle(p []byte, addr net.Addr) {
	if len(p) < 4 {
		g.drop()
		return
	}
	switch binary.BigEndian.Uint16(p) {
	case opRRQ:
		t, ok := parseRRQ(p[2:])
		ua, isUDP := addr.(*net.UDPAddr)
		if !ok || !isUDP {
			g.drop()
			return
		}
		t.client = ua
		t.key = addr.String()
		t.src = connlimit.Source(addr)
		if g.admit(t) {
			g.wg.Add(1)
			go g.run(t)
		}
	case opWRQ:
		// One small packet, no state: the client stops at once.
		_, _ = g.conn.WriteTo(errorPacket(errAccessViolation, "read only"), addr)
	default:
		g.drop()
	}
}

// parseRRQ reads a request after its opcode: a file name of 1 to 255
// bytes and mode octet or netascii, each ended by a zero byte, then
// options (name and value pairs, RFC 2347).
func parseRRQ(b []byte) (*tftpTransfer, bool) {
	if len(b) == 0 || b[len(b)-1] != 0 {
		return nil, false
	}
	parts := bytes.Split(b[:len(b)-1], []byte{0})
	if len(parts) < 2 || len(parts[0]) == 0 || len(parts[0]) > maxFilename {
		return nil, false
	}
	mode := strings.ToLower(string(parts[1]))
	if mode != "octet" && mode != "netascii" {
		return nil, false
	}
	t := &tftpTransfer{name: string(parts[0]), mode: mode}
	for i := 2; i+1 < len(parts) && len(t.opts) < 8; i += 2 {
		name := strings.ToLower(string(parts[i]))
		if slices.ContainsFunc(t.opts, func(o tftpOption) bool { return o.name == name }) {
			continue // each option is answered once; the first one counts
		}
		t.opts = append(t.opts, tftpOption{name, string(parts[i+1])})
	}
	return t, true
}

func (g *tftpGate) drop() { g.f.tftpDropped.Add(1) }

// admit takes a slot for t, unless a transfer for t's client address is
// running already and has sent a data block or is of another file (t is a
// repeated request), or the caps are full. A running transfer of the same
// file that has sent only its option acknowledgement is ended and its slot
// freed first: the client gave it up and asked again (a PXE client's tsize
// probe). A transfer that sent data is never replaced: each replacement
// would send another block, and a spoofed source could have the appliance
// send blocks to a victim at the rate it sends requests.
func (g *tftpGate) admit(t *tftpTransfer) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if old, ok := g.running[t.key]; ok {
		now := time.Now()
		// One replacement per client address and TFTP timeout is all a PXE
		// client's probe needs; more would have the appliance answer a
		// spoofed source at the rate it sends requests.
		if old.name != t.name || old.acked.Load() || old.dataSent.Load() ||
			!old.replaced.IsZero() && now.Sub(old.replaced) < g.f.lim.TFTPTimeout {
			g.drop()
			return false
		}
		delete(g.running, old.key)
		g.f.tftpSlots.Release(old.src)
		old.ended.Store(true)
		old.conn.Close()
		g.f.tftpReplaced.Add(1)
		t.replaced = now
	}
	if !g.f.tftpSlots.Acquire(t.src) {
		g.f.tftpSlots.ReportShed(g.f.log, "tftp: read requests over the caps dropped", t.src)
		return false
	}
	// The transfer's socket, connected to the client: the kernel picks the
	// source address (and so the interface) a reply to the client takes.
	local := &net.UDPAddr{}
	if la, ok := g.conn.LocalAddr().(*net.UDPAddr); ok && !la.IP.IsUnspecified() {
		local.IP = la.IP
	}
	c, err := net.DialUDP("udp", local, t.client)
	if err != nil {
		g.f.tftpSlots.Release(t.src)
		g.f.log.Warn("tftp: no socket for a transfer", "err", err)
		return false
	}
	t.conn = c
	g.running[t.key] = t
	g.f.tftpAdmitted.Add(1)
	return true
}

// endAll ends every running transfer: ServeTFTP is returning, and none may
// hold it for its transfer time.
func (g *tftpGate) endAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range g.running {
		t.ended.Store(true)
		t.conn.Close()
	}
}

// finish releases t's slot, unless a new request replaced t.
func (g *tftpGate) finish(t *tftpTransfer) {
	t.conn.Close()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running[t.key] == t {
		delete(g.running, t.key)
		g.f.tftpSlots.Release(t.src)
	}
}

// run sends t's file, then releases its slot.
func (g *tftpGate) run(t *tftpTransfer) {
	defer g.wg.Done()
	defer g.finish(t)
	f := g.f
	if t.ended.Load() {
		return // replaced before it started: its slot is gone already
	}
	file, err := f.Open(t.name)
	if err != nil {
		f.log.Warn("tftp: refused", "file", t.name)
		_, _ = t.conn.Write(errorPacket(errFileNotFound, ErrNotFound.Error()))
		return
	}
	defer file.Close()
	start := time.Now()
	s := &tftpSender{t: t, timeout: f.lim.TFTPTimeout, retries: f.lim.TFTPRetries, deadline: start.Add(f.lim.TransferTime)}
	var r io.Reader = file
	size := int64(-1)
	if t.mode == "netascii" {
		r = netascii.ToReader(file)
	} else if fi, err := file.Stat(); err == nil {
		size = fi.Size()
	}
	n, err := s.send(r, size, func() int { return g.maxBlockSize(t.conn) })
	if errors.Is(err, net.ErrClosed) && !t.acked.Load() {
		err = errors.New("replaced by a new request")
	}
	f.log.Info("tftp: sent", "file", t.name, "bytes", n, "blksize", s.blksize, "ms", time.Since(start).Milliseconds(), "err", err)
}

// maxBlockSize is the largest block that fits one datagram on the path of
// c, a socket connected to the client: the kernel's MTU for that route
// (IP_MTU, ip(7); IPV6_MTU for IPv6) less the UDP and IP headers, or 512 if
// it is unknown.
func (g *tftpGate) maxBlockSize(c *net.UDPConn) int {
	la, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok {
		return defaultBlockSize
	}
	level, opt, overhead := unix.IPPROTO_IP, unix.IP_MTU, 8+20 // UDP, IPv4
	if la.IP.To4() == nil {
		level, opt, overhead = unix.IPPROTO_IPV6, unix.IPV6_MTU, 8+40
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return defaultBlockSize
	}
	mtu, serr := 0, error(nil)
	if err := rc.Control(func(fd uintptr) { mtu, serr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil || serr != nil {
		return defaultBlockSize
	}
	return min(max(mtu-overhead, defaultBlockSize), maxBlockSize)
}

// errPeerError ends a transfer whose client sent an error packet.
var errPeerError = errors.New("client sent an error")

// tftpSender runs one transfer on its connected socket.
type tftpSender struct {
	t        *tftpTransfer
	timeout  time.Duration
	retries  int
	deadline time.Time
	blksize  int
	buf      []byte // a data packet
	in       [1024]byte
}

// send negotiates the options, then sends r block by block; size is the
// file's size, or -1 if unknown.
func (s *tftpSender) send(r io.Reader, size int64, maxBlk func() int) (int64, error) {
	s.blksize = defaultBlockSize
	var oack []byte
	for _, o := range s.t.opts {
		switch o.name {
		case "blksize":
			n, err := strconv.Atoi(o.value)
			if err != nil || n < minBlockSize {
				continue
			}
			s.blksize = min(n, maxBlk())
			oack = append(append(append(oack, "blksize\x00"...), strconv.Itoa(s.blksize)...), 0)
		case "tsize":
			if size < 0 {
				continue
			}
			oack = append(append(append(oack, "tsize\x00"...), strconv.FormatInt(size, 10)...), 0)
		}
	}
	if len(oack) > 0 {
		p := append([]byte{0, opOACK}, oack...)
		if err := s.exchange(p, 0); err != nil {
			return 0, err
		}
	}
	s.buf = make([]byte, 4+s.blksize)
	var n int64
	for block := uint16(1); ; block++ {
		if time.Now().After(s.deadline) {
			s.fail(errNotDefined, errTransferTime)
			return n, errTransferTime
		}
		l, err := io.ReadFull(r, s.buf[4:])
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			s.fail(errNotDefined, errors.New("read error"))
			return n, err
		}
		binary.BigEndian.PutUint16(s.buf[0:], opDATA)
		binary.BigEndian.PutUint16(s.buf[2:], block)
		s.t.dataSent.Store(true)
		if err := s.exchange(s.buf[:4+l], block); err != nil {
			return n, err
		}
		n += int64(l)
		if l < s.blksize {
			return n, nil
		}
	}
}

// exchange sends p until the client acknowledges block, at most 1 +
// retries times, TFTPTimeout apart. A data block acknowledged marks the
// transfer acked. An error packet from the client ends the transfer
// unanswered; no acknowledgement after the last copy ends it with one
// error packet.
func (s *tftpSender) exchange(p []byte, block uint16) error {
	c := s.t.conn
	for range 1 + s.retries {
		if _, err := c.Write(p); err != nil {
			return err
		}
		if err := c.SetReadDeadline(time.Now().Add(s.timeout)); err != nil {
			return err
		}
		for {
			n, err := c.Read(s.in[:])
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return err // closed (replaced), or the client's port is unreachable
			}
			if n < 4 {
				continue
			}
			switch binary.BigEndian.Uint16(s.in[:]) {
			case opACK:
				if binary.BigEndian.Uint16(s.in[2:]) == block {
					if p[1] == opDATA {
						s.t.acked.Store(true)
					}
					return nil
				}
				// An old block's acknowledgement: wait on (sending
				// again would start the Sorcerer's Apprentice).
			case opERROR:
				return errPeerError
			}
		}
	}
	err := errors.New("no acknowledgement")
	s.fail(errNotDefined, err)
	return err
}

// fail sends the client one error packet.
func (s *tftpSender) fail(code uint16, err error) {
	_, _ = s.t.conn.Write(errorPacket(code, err.Error()))
}

// errorPacket is a TFTP ERROR packet.
func errorPacket(code uint16, msg string) []byte {
	b := make([]byte, 4, 5+len(msg))
	binary.BigEndian.PutUint16(b, opERROR)
	binary.BigEndian.PutUint16(b[2:], code)
	b = append(b, msg...)
	return append(b, 0)
}
