package eventlog

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// sha1Event is one TCG_PCR_EVENT (SHA-1 log format).
func sha1Event(pcr, typ uint32, digest [20]byte, data []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, pcr)
	b = binary.LittleEndian.AppendUint32(b, typ)
	b = append(b, digest[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// A 1 MiB log of minimal events is framed whole. The time is logged, not
// asserted (BenchmarkFrame measures it); frame finds trailing padding once,
// not at every event boundary.
func TestFrameLinear(t *testing.T) {
	var raw []byte
	for len(raw)+32 <= MaxLogBytes {
		raw = append(raw, sha1Event(1, uint32(0x1), [20]byte{1}, nil)...)
	}
	start := time.Now()
	_, f, err := frame(raw)
	d := time.Since(start)
	t.Logf("frame: %d events in %v (err %v)", f.events, d, err)
}

// An event data size of 0xFFFFFFE0 is truncation, also where int is 32
// bits (GOARCH=386), where it once converted to -32 and looped.
func TestFrameHugeSizeOn32Bit(t *testing.T) {
	raw := sha1Event(0, uint32(0x1), [20]byte{}, []byte("head"))
	ev := sha1Event(1, uint32(0x1), [20]byte{1}, nil)
	binary.LittleEndian.PutUint32(ev[28:], 0xFFFFFFE0) // 32 bytes back: to the event's start
	raw = append(raw, ev...)
	done := make(chan error, 1)
	go func() { _, _, err := frame(raw); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("frame: %v, want truncation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("frame does not return on an event size of 0xFFFFFFE0 (int is 32 bits)")
	}
}

func BenchmarkFrame(b *testing.B) {
	var raw []byte
	for len(raw)+32 <= MaxLogBytes {
		raw = append(raw, sha1Event(1, uint32(0x1), [20]byte{1}, nil)...)
	}
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, _, err := frame(raw); err != nil {
			b.Fatal(err)
		}
	}
}
