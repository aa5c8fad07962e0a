package eventlog

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/bootgate/bootgate/internal/eventlogtest"
)

// boundaries returns the byte offsets at which raw's events end.
func boundaries(t *testing.T, raw []byte) []int {
	t.Helper()
	l, err := eventlogtest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	out := []int{len(l.Header)}
	for k := range l.Events {
		out = append(out, len((&eventlogtest.Log{Header: l.Header, Events: l.Events[:k+1], SHA1: l.SHA1}).Bytes()))
	}
	return out
}

// Every cut of a real log inside an event is reported as truncation, with
// the event and where it starts; a cut between events is a shorter log.
func TestTruncationIsNamed(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 3))
	for name, raw := range realLogs(t) {
		ends := boundaries(t, raw)
		for range 200 {
			cut := 1 + r.IntN(len(raw)-1)
			_, f, err := parse(raw[:cut])
			var te *TruncatedError
			last := ends[0]
			for _, e := range ends {
				if e <= cut {
					last = e
				}
			}
			switch {
			case cut > last && uniform(raw[last:cut]) && (raw[last] == 0 || raw[last] == 0xff):
				// Cut inside bytes an event starts with that look like padding:
				// indistinguishable from a padded log (which a quote then refuses).
				if err != nil || f.padding != cut-last {
					t.Fatalf("%s cut at %d in padding-like bytes: %v, padding %d", name, cut, err, f.padding)
				}
			case slices.Contains(ends, cut):
				if err != nil {
					t.Fatalf("%s cut at event boundary %d: %v", name, cut, err)
				}
			case cut < 32:
				if !errors.Is(err, ErrNotEventLog) && !errors.As(err, &te) {
					t.Fatalf("%s cut at %d: %v, want not an event log or truncated", name, cut, err)
				}
			case !errors.As(err, &te) || !errors.Is(err, ErrMalformed):
				t.Fatalf("%s cut at %d: %v, want *TruncatedError", name, cut, err)
			case te.Length != cut || te.Start >= cut || te.Start+te.Need <= cut:
				t.Fatalf("%s cut at %d: %+v does not describe the cut", name, cut, te)
			}
		}
	}
}

// Padding after the last event, as a log read from the firmware's log area
// carries, is tolerated and reported; anything else after it is refused with
// its offset.
func TestTrailingBytes(t *testing.T) {
	raw, err := os.ReadFile("../../testdata/interop/lenovo-t480s-N22ET68W-sb.bin")
	if err != nil {
		t.Fatal(err)
	}
	base := offline(t, raw)
	for _, pad := range [][]byte{bytes.Repeat([]byte{0}, 16), bytes.Repeat([]byte{0xff}, 8), {0}, bytes.Repeat([]byte{0}, 4096)} {
		st := offline(t, append(slices.Clone(raw), pad...))
		if st.PaddingBytes != len(pad) || st.Events != base.Events || st.PCRs[7] != base.PCRs[7] {
			t.Errorf("padding of %d × 0x%02x: padding %d, events %d (want %d)", len(pad), pad[0], st.PaddingBytes, st.Events, base.Events)
		}
	}
	for _, tail := range [][]byte{[]byte("garbage!"), append(bytes.Repeat([]byte{0}, 8), 1), {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		_, _, err := parse(append(slices.Clone(raw), tail...))
		var te *TrailingError
		var tr *TruncatedError
		if !errors.As(err, &te) && !errors.As(err, &tr) {
			t.Errorf("tail %x: %v, want trailing bytes or truncation refused", tail, err)
			continue
		}
		if te != nil && te.Offset != len(raw) {
			t.Errorf("tail %x: offset %d, want %d", tail, te.Offset, len(raw))
		}
	}
}

// Files that are no event log are refused as such.
func TestNotAnEventLog(t *testing.T) {
	zeros, err := os.ReadFile("../../testdata/interop/zeros-32B.bin")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"zeros-32B.bin": zeros,
		"0xFF":          bytes.Repeat([]byte{0xff}, 64),
		"text":          []byte("this is a text file, not a TCG event log at all\n"),
		"short":         {3, 0, 0, 0},
	} {
		if _, _, err := parse(b); !errors.Is(err, ErrNotEventLog) {
			t.Errorf("%s: %v, want ErrNotEventLog", name, err)
		}
	}
}
