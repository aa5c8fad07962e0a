package bootfiles

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/bootgate/bootgate/verifier/connlimit"
)

// TFTP opcodes and error codes (RFC 1350).
const (
	opRRQ   = 1
	opWRQ   = 2
	opERROR = 5

	errAccessViolation = 2
)

// maxFilename bounds a read request's file name, in bytes.
const maxFilename = 255

// ServeTFTP answers read requests on conn until ctx ends (then it lets
// transfers in progress finish); writes are refused with an error packet.
//
// Every datagram passes a gate before github.com/pin/tftp sees it, because
// the library opens a socket for a request before its handler runs: the
// gate lets through only well-formed read requests (mode octet or
// netascii) within the TFTP caps, and not a second one from a client
// address whose transfer is running; everything else is dropped
// unanswered. A transfer sends one block at a time, waits TFTPTimeout for
// each acknowledgement, sends a block again at most TFTPRetries times, and
// is aborted after TransferTime. The library then uses 512-byte blocks
// (RFC 1350; larger blksize options are clamped), since it only learns the
// interface's MTU from a bare *net.UDPConn. ServeTFTP returns nil once ctx
// has ended, or an error if conn's local address is unusable.
func (f *Files) ServeTFTP(ctx context.Context, conn net.PacketConn) error {
	gate := &tftpGate{PacketConn: conn, f: f, maxAge: f.lim.transferAge(), running: make(map[string]transfer)}
	s := tftp.NewServer(func(name string, rf io.ReaderFrom) error {
		if ot, ok := rf.(tftp.OutgoingTransfer); ok {
			addr := ot.RemoteAddr()
			defer gate.done(&addr)
		}
		file, err := f.Open(name)
		if err != nil {
			f.log.Warn("tftp: refused", "file", name)
			return err
		}
		defer file.Close()
		if fi, err := file.Stat(); err == nil {
			if t, ok := rf.(tftp.OutgoingTransfer); ok {
				t.SetSize(fi.Size())
			}
		}
		start := time.Now()
		n, err := rf.ReadFrom(&deadlineReader{r: file, deadline: start.Add(f.lim.TransferTime)})
		f.log.Info("tftp: sent", "file", name, "bytes", n, "ms", time.Since(start).Milliseconds(), "err", err)
		return err
	}, nil)
	s.SetTimeout(f.lim.TFTPTimeout)
	s.SetRetries(f.lim.TFTPRetries)
	s.SetBackoff(func(int) time.Duration { return 0 }) // the timeout already spaces retries
	stop := context.AfterFunc(ctx, s.Shutdown)
	defer stop()
	return s.Serve(gate)
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
	// Active is the number of transfers running now.
	Active int
}

// TFTPStats returns the TFTP gate's counters (zero before ServeTFTP).
func (f *Files) TFTPStats() TFTPStats {
	total, _ := f.tftpSlots.Active()
	return TFTPStats{Admitted: f.tftpAdmitted.Load(), Shed: f.tftpSlots.Shed(), Dropped: f.tftpDropped.Load(), Active: total}
}

// errTransferTime aborts a TFTP transfer that ran out of time.
var errTransferTime = errors.New("transfer took too long")

// deadlineReader fails reads after its deadline.
type deadlineReader struct {
	r        io.Reader
	deadline time.Time
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if time.Now().After(d.deadline) {
		return 0, errTransferTime
	}
	return d.r.Read(p)
}

// tftpGate is the listening socket as the TFTP library sees it: reads
// return only admitted read requests, each holding a slot of the TFTP caps
// until its handler calls done.
type tftpGate struct {
	net.PacketConn
	f      *Files
	maxAge time.Duration // a slot never released (the library failed before the handler) expires after this

	mu      sync.Mutex
	running map[string]transfer // by client address (ip:port); at most the total cap
	lastLog atomic.Int64
}

type transfer struct {
	src   netip.Addr
	since time.Time
}

// ReadFrom returns the next admitted read request.
func (g *tftpGate) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := g.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		if n < 4 {
			g.drop()
			continue
		}
		switch binary.BigEndian.Uint16(p) {
		case opRRQ:
			if !wellFormedRRQ(p[2:n]) {
				g.drop()
				continue
			}
			if g.admit(addr) {
				return n, addr, nil
			}
		case opWRQ:
			// One small packet, no state: the client stops at once.
			_, _ = g.PacketConn.WriteTo(errorPacket(errAccessViolation, "read only"), addr)
		default:
			g.drop()
		}
	}
}

// wellFormedRRQ reports whether b (a request after its opcode) holds a
// file name of 1 to 255 bytes and mode octet or netascii, each ended by a
// zero byte (options after them are the library's concern).
func wellFormedRRQ(b []byte) bool {
	if len(b) == 0 || b[len(b)-1] != 0 {
		return false
	}
	parts := bytes.SplitN(b, []byte{0}, 3)
	if len(parts) < 3 || len(parts[0]) == 0 || len(parts[0]) > maxFilename {
		return false
	}
	mode := strings.ToLower(string(parts[1]))
	return mode == "octet" || mode == "netascii"
}

func (g *tftpGate) drop() { g.f.tftpDropped.Add(1) }

// admit takes a slot for a read request from addr, unless addr's transfer
// is running already (the request was repeated) or the caps are full.
func (g *tftpGate) admit(addr net.Addr) bool {
	key := addr.String()
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.running[key]; ok {
		g.drop()
		return false
	}
	src := connlimit.Source(addr)
	if !g.f.tftpSlots.Acquire(src) && (g.expire(now) == 0 || !g.f.tftpSlots.Acquire(src)) {
		g.report(src)
		return false
	}
	g.running[key] = transfer{src: src, since: now}
	g.f.tftpAdmitted.Add(1)
	return true
}

// expire releases the slots of transfers older than maxAge, which only a
// transfer whose handler never ran can be, and returns how many there
// were. It runs only when the caps are full: at most the total cap
// entries to look at.
func (g *tftpGate) expire(now time.Time) int {
	n := 0
	for k, t := range g.running {
		if now.Sub(t.since) > g.maxAge {
			delete(g.running, k)
			g.f.tftpSlots.Release(t.src)
			n++
		}
	}
	return n
}

// done releases the slot of addr's transfer.
func (g *tftpGate) done(addr net.Addr) {
	key := addr.String()
	g.mu.Lock()
	defer g.mu.Unlock()
	if t, ok := g.running[key]; ok {
		delete(g.running, key)
		g.f.tftpSlots.Release(t.src)
	}
}

func (g *tftpGate) report(src netip.Addr) {
	now := time.Now().UnixNano()
	last := g.lastLog.Load()
	if now-last < int64(10*time.Second) || !g.lastLog.CompareAndSwap(last, now) {
		return
	}
	total, sources := g.f.tftpSlots.Active()
	lim := g.f.tftpSlots.Limits()
	g.f.log.Warn("tftp: read requests over the caps dropped", "source", src.String(), "shed_total", g.f.tftpSlots.Shed(),
		"active", total, "sources", sources, "max", lim.Total, "max_per_source", lim.PerSource)
}

// errorPacket is a TFTP ERROR packet.
func errorPacket(code uint16, msg string) []byte {
	b := make([]byte, 4, 5+len(msg))
	binary.BigEndian.PutUint16(b, opERROR)
	binary.BigEndian.PutUint16(b[2:], code)
	b = append(b, msg...)
	return append(b, 0)
}
