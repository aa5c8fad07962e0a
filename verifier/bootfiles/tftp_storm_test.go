package bootfiles

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// A read request repeated from one address and port for the same file
// must not make the appliance send a fresh data block each time: whoever
// can spoof a victim's address and port would get one 516-byte block sent
// to it per ~30-byte request, at the attacker's rate (docs/bootfiles.md
// promises a spoofed address at most 2 transfers at a time). Fails at
// 0f5a72a (100 blocks for 100 requests).
func TestTFTPRepeatedRequestsSendOneBlock(t *testing.T) {
	f, _ := setupWith(t, Limits{TFTPTimeout: 3 * time.Second, TFTPRetries: 2})
	srv := serveTFTP(t, f)
	victim := newPeer(t, "127.0.3.1") // its address and port are what the attacker spoofs
	const requests = 100
	req := rrq("bootgate/agent.efi")
	for range requests {
		victim.send(t, srv, req)
		time.Sleep(2 * time.Millisecond)
	}
	got := victim.collect(300*time.Millisecond, 2*time.Second)
	var data int
	for _, p := range got {
		if p.op == opDATA {
			data++
		}
	}
	st := f.TFTPStats()
	t.Logf("%d requests of %d bytes from one spoofed address and port: %d data blocks (%d bytes) sent to it; %+v",
		requests, len(req), data, data*(4+512), st)
	if limit := 2 * (1 + f.lim.TFTPRetries); data > limit {
		t.Errorf("a spoofed address got %d data blocks within 2 s, more than %d", data, limit)
	}
}

func fdCount() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// Replaced transfers end only once their goroutine runs again, and one not
// yet started still opens its file: peak goroutines and descriptors while
// one address and port repeats its request as fast as it can (bounded: 20000 requests or 2 s).
func TestTFTPRepeatedRequestsHoldNoDescriptors(t *testing.T) {
	f, _ := setupWith(t, Limits{})
	srv := serveTFTP(t, f)
	p := newPeer(t, "127.0.3.6")
	fd0, g0 := fdCount(), runtime.NumGoroutine()
	peakFD, peakG := fd0, g0
	req := rrq("bootgate/agent.efi")
	end := time.Now().Add(2 * time.Second)
	sent := 0
	for ; sent < 20000 && time.Now().Before(end); sent++ {
		p.conn.WriteToUDP(req, srv)
		if sent%200 == 0 {
			peakFD, peakG = max(peakFD, fdCount()), max(peakG, runtime.NumGoroutine())
			p.conn.SetReadBuffer(1 << 20)
		}
	}
	time.Sleep(200 * time.Millisecond)
	t.Logf("%d requests: peak fds %d (from %d), peak goroutines %d (from %d); %+v", sent, peakFD, fd0, peakG, g0, f.TFTPStats())
	// One source holds at most PerSource transfers, 2 descriptors each.
	if limit := fd0 + 2*f.lim.TFTPTransfers.PerSource; peakFD > limit {
		t.Errorf("one address and port held %d descriptors, more than the %d its caps allow", peakFD-fd0, limit-fd0)
	}
}

// With options, each replacement sends an option acknowledgement; tsize is
// acknowledged whatever its value, once per time it is named, so "tsize\0\0"
// repeated makes the acknowledgement larger than the request, at the
// request rate.
func TestTFTPRepeatedRequestsWithOptions(t *testing.T) {
	f, _ := setupWith(t, Limits{TFTPTimeout: 3 * time.Second, TFTPRetries: 2})
	srv := serveTFTP(t, f)
	victim := newPeer(t, "127.0.3.8")
	const requests = 100
	req := append([]byte{0, opRRQ}, "bootgate/agent.efi\x00octet\x00"...)
	for range 8 {
		req = append(req, "tsize\x00\x00"...)
	}
	for range requests {
		victim.send(t, srv, req)
		time.Sleep(2 * time.Millisecond)
	}
	buf := make([]byte, 2048)
	var n, bytes int
	end := time.Now().Add(2 * time.Second)
	for time.Now().Before(end) {
		victim.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		k, _, err := victim.conn.ReadFromUDP(buf)
		if err != nil {
			break
		}
		n++
		bytes += k
	}
	t.Logf("%d requests of %d bytes: %d datagrams, %d bytes back; %+v", requests, len(req), n, bytes, f.TFTPStats())
	if limit := 2 * (1 + f.lim.TFTPRetries); n > limit {
		t.Errorf("a spoofed address got %d datagrams within 2 s, more than %d", n, limit)
	}
}
