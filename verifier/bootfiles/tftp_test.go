package bootfiles

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

// oackOptions parses an option acknowledgement's options.
func oackOptions(p []byte) map[string]string {
	opts := make(map[string]string)
	parts := bytes.Split(bytes.TrimSuffix(p[2:], []byte{0}), []byte{0})
	for i := 0; i+1 < len(parts); i += 2 {
		opts[string(parts[i])] = string(parts[i+1])
	}
	return opts
}

// read returns the next datagram c receives within limit.
func read(c *net.UDPConn, limit time.Duration) ([]byte, *net.UDPAddr, error) {
	buf := make([]byte, 70000)
	c.SetReadDeadline(time.Now().Add(limit))
	n, from, err := c.ReadFromUDP(buf)
	return buf[:n], from, err
}

// download reads a whole transfer on c from srv, as a client does that
// asked with blksize and not tsize: an option acknowledgement, then data
// blocks, each acknowledged. It fails on anything else, such as a tsize
// probe's option acknowledgement or error packet, or datagrams from two
// ports, and gives up after 5 s or more datagrams than the file can need.
func download(t *testing.T, c *net.UDPConn, srv *net.UDPAddr, blksize, size int) []byte {
	t.Helper()
	var got []byte
	var port int
	end := time.Now().Add(5 * time.Second)
	for i := 0; i < size/blksize+10 && time.Now().Before(end); i++ {
		p, from, err := read(c, time.Until(end))
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		if port == 0 {
			port = from.Port
		} else if from.Port != port {
			t.Fatalf("datagrams from ports %d and %d", port, from.Port)
		}
		to := &net.UDPAddr{IP: srv.IP, Port: port}
		switch op := binary.BigEndian.Uint16(p); op {
		case opOACK:
			opts := oackOptions(p)
			if len(got) > 0 || opts["tsize"] != "" || opts["blksize"] != strconv.Itoa(blksize) {
				t.Fatalf("after %d bytes: option acknowledgement %q, want blksize %d only", len(got), opts, blksize)
			}
			c.WriteToUDP([]byte{0, opACK, 0, 0}, to)
		case opDATA:
			block := binary.BigEndian.Uint16(p[2:])
			if int(block) != len(got)/blksize+1 {
				t.Fatalf("block %d after %d bytes", block, len(got))
			}
			got = append(got, p[4:]...)
			c.WriteToUDP([]byte{0, opACK, p[2], p[3]}, to)
			if len(p)-4 < blksize {
				return got
			}
		default:
			t.Fatalf("after %d bytes: opcode %d: %q", len(got), op, p[4:])
		}
	}
	t.Fatalf("transfer not finished: %d of %d bytes", len(got), size)
	return nil
}

// TestTFTPTsizeProbeThenRead plays a PXE client (EDK2's Mtftp4, iPXE): it
// asks for the file with tsize=0, reads the size from the option
// acknowledgement, aborts with an error packet, and at once asks again,
// from the same port or a new one (and, in case its error packet was
// lost, also without it). Every run must download the whole file, and the
// probe's transfer must never answer the client's error packet, nor send
// anything to a port that asked again. Each run's client has its own
// address; the per-source cap is the default 2.
func TestTFTPTsizeProbeThenRead(t *testing.T) {
	f, uki := setupWith(t, Limits{TFTPTimeout: 300 * time.Millisecond})
	srv := serveTFTP(t, f)
	const name, blksize = "bootgate/agent.efi", 1468
	variants := []struct {
		name            string
		samePort, abort bool
	}{
		{"same port", true, true},
		{"new port", false, true},
		{"same port, error lost", true, false},
		{"new port, error lost", false, false},
	}
	const runs = 24
	for i := range runs {
		v := variants[i%len(variants)]
		src := fmt.Sprintf("127.0.1.%d", 10+i)
		probe := newPeer(t, src)
		probe.send(t, srv, rrq(name, "tsize", "0", "blksize", strconv.Itoa(blksize)))
		p, from, err := read(probe.conn, 2*time.Second)
		if err != nil || binary.BigEndian.Uint16(p) != opOACK {
			t.Fatalf("run %d (%s): probe answered %q, %v; stats %+v", i, v.name, p, err, f.TFTPStats())
		}
		if size := oackOptions(p)["tsize"]; size != strconv.Itoa(len(uki)) {
			t.Fatalf("run %d: tsize %q, want %d", i, size, len(uki))
		}
		if v.abort {
			abort := append([]byte{0, opERROR, 0, 8}, "aborted\x00"...)
			probe.conn.WriteToUDP(abort, from)
		}
		reader := probe
		if !v.samePort {
			reader = newPeer(t, src)
		}
		reader.send(t, srv, rrq(name, "blksize", strconv.Itoa(blksize)))
		got := download(t, reader.conn, srv, blksize, len(uki))
		if !bytes.Equal(got, uki) {
			t.Fatalf("run %d (%s): %d bytes, want %d", i, v.name, len(got), len(uki))
		}
		if v.samePort || v.abort {
			// Nothing more from the probe's transfer: not an answer to
			// the error packet, nor a copy of the option acknowledgement.
			if late := probe.collect(400*time.Millisecond, time.Second); len(late) > 0 {
				t.Fatalf("run %d (%s): after the download the client got %+v", i, v.name, late)
			}
		}
	}
	// Every slot comes back: the probes with no error packet give up after
	// 1 + 2 copies of their option acknowledgement, 300 ms apart.
	deadline := time.Now().Add(3 * time.Second)
	for f.TFTPStats().Active != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	st := f.TFTPStats()
	if st.Active != 0 || st.Admitted != 2*runs || st.Shed != 0 {
		t.Fatalf("after %d runs: %+v, want %d admitted, none shed or active", runs, st, 2*runs)
	}
	if st.Replaced > runs/2 {
		t.Errorf("%d transfers replaced, more than the %d same-port runs", st.Replaced, runs/2)
	}
	t.Logf("%d probe-then-read runs downloaded %d bytes each; %+v", runs, len(uki), st)
}

// TestTFTPBlockSize: blksize is honoured up to what one datagram on the
// interface can carry, and capped at 65464 (RFC 2348); a client that asks
// no option gets 512-byte blocks; octet and netascii both download.
func TestTFTPBlockSize(t *testing.T) {
	f, uki := setup(t)
	srv := serveTFTP(t, f)
	for i, tc := range []struct{ ask, want string }{{"1468", "1468"}, {"65535", "65464"}, {"8", "8"}} {
		// One address each: a transfer's slot is freed only once it has
		// read the error packet below, and the per-source cap is 2.
		p := newPeer(t, fmt.Sprintf("127.0.2.%d", 1+i))
		p.send(t, srv, rrq("bootgate/agent.efi", "blksize", tc.ask))
		b, from, err := read(p.conn, 2*time.Second)
		if err != nil || binary.BigEndian.Uint16(b) != opOACK || oackOptions(b)["blksize"] != tc.want {
			t.Fatalf("blksize %s: got %q, %v; want %s", tc.ask, b, err, tc.want)
		}
		p.conn.WriteToUDP(append([]byte{0, opERROR, 0, 8}, "enough\x00"...), from)
	}
	p := newPeer(t, "127.0.2.10")
	p.send(t, srv, rrq("bootgate/agent.efi"))
	b, from, err := read(p.conn, 2*time.Second)
	if err != nil || binary.BigEndian.Uint16(b) != opDATA || len(b) != 4+512 {
		t.Fatalf("no options: %d bytes, %v", len(b), err)
	}
	p.conn.WriteToUDP(append([]byte{0, opERROR, 0, 0}, "enough\x00"...), from)

	// The library's client, with a large block size.
	c, err := tftp.NewClient(srv.String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetBlockSize(8192)
	wt, err := c.Receive("bootgate/agent.efi", "octet")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil || !bytes.Equal(got.Bytes(), uki) {
		t.Fatalf("blksize 8192: %d bytes, %v", got.Len(), err)
	}

	// netascii (the file has no line ends to convert).
	c.SetBlockSize(1468)
	if wt, err = c.Receive("bootgate/agent.efi", "netascii"); err != nil {
		t.Fatal(err)
	}
	got.Reset()
	if _, err := wt.WriteTo(&got); err != nil || !bytes.Equal(got.Bytes(), uki) {
		t.Fatalf("netascii: %d bytes, %v", got.Len(), err)
	}
}
