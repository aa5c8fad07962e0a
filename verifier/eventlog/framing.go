package eventlog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/google/go-eventlog/tcg"
)

// The framing of a TCG event log (TCG PC Client Platform Firmware Profile
// 1.05 §10.2): a TCG_PCR_EVENT (PCR index, type, SHA-1 digest, data size,
// data: 32 bytes and its data), which in a crypto-agile log holds the
// "Spec ID Event03" naming the digest algorithms and their sizes, then
// TCG_PCR_EVENT2 records (PCR index, type, digest count, that many
// algorithm-tagged digests, data size, data), or more TCG_PCR_EVENTs in a
// SHA-1-only log. frame walks it before the parser does, so that a log that
// ends early or carries bytes after its last event is named for what it is.

// ErrNotEventLog reports input that is not a TCG event log at all. It is an
// ErrMalformed.
var ErrNotEventLog = fmt.Errorf("%w: not a TCG event log", ErrMalformed)

// TruncatedError reports a log that ends inside an event.
type TruncatedError struct {
	Event  int // the event's number (0 is the first, header event)
	Start  int // byte offset where the event starts
	Length int // bytes the log holds
	Need   int // bytes the event needs from Start, as far as its header tells
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("event log truncated: event %d starts at byte %d and needs at least %d bytes, but the log ends at byte %d", e.Event, e.Start, e.Need, e.Length)
}

// Is makes a TruncatedError an ErrMalformed.
func (e *TruncatedError) Is(target error) bool { return target == ErrMalformed }

// TrailingError reports bytes after the last event that are neither an
// event nor padding.
type TrailingError struct {
	Offset int // where they start
	Bytes  int // how many
	Detail string
}

func (e *TrailingError) Error() string {
	return fmt.Sprintf("event log has %d bytes at byte %d that are neither an event nor 0x00/0xFF padding: %s", e.Bytes, e.Offset, e.Detail)
}

// Is makes a TrailingError an ErrMalformed.
func (e *TrailingError) Is(target error) bool { return target == ErrMalformed }

// framing is what frame learned of a log.
type framing struct {
	events  int // records, the header event included
	padding int // bytes of 0x00 or 0xFF after the last event
}

// frame checks raw's record framing. It returns the log without trailing
// padding (a log read from the firmware's log area is often padded with
// 0x00 or 0xFF to the area's size), or an error naming where the log ends
// early (*TruncatedError), what follows its last event (*TrailingError), or
// that it is no event log (ErrNotEventLog).
func frame(raw []byte) ([]byte, framing, error) {
	le := binary.LittleEndian
	if uniform(raw) {
		return nil, framing{}, fmt.Errorf("%w: %d bytes, all 0x%02x", ErrNotEventLog, len(raw), raw[0])
	}
	if len(raw) < 32 {
		return nil, framing{}, fmt.Errorf("%w: %d bytes, shorter than one TCG_PCR_EVENT (32)", ErrNotEventLog, len(raw))
	}
	pcr, typ := le.Uint32(raw), le.Uint32(raw[4:])
	if _, known := eventTypeNames[tcg.EventType(typ)]; pcr > 23 || !known {
		return nil, framing{}, fmt.Errorf("%w: its first event names PCR %d and type 0x%08x", ErrNotEventLog, pcr, typ)
	}
	if n := uint64(le.Uint32(raw[28:])); n > uint64(len(raw)-32) {
		return nil, framing{}, &TruncatedError{Event: 0, Start: 0, Length: len(raw), Need: clampInt(32 + n)}
	}
	first := 32 + int(le.Uint32(raw[28:]))
	var sizes map[uint16]int // digest sizes of a crypto-agile log; nil for SHA-1
	if data := raw[32:first]; typ == uint32(tcg.NoAction) && bytes.HasPrefix(data, []byte("Spec ID Event03\x00")) {
		if len(data) < 28 {
			return nil, framing{}, fmt.Errorf("%w: Spec ID event of %d bytes", ErrMalformed, len(data))
		}
		n := int(le.Uint32(data[24:]))
		if n == 0 || n > 8 || len(data) < 28+4*n {
			return nil, framing{}, fmt.Errorf("%w: Spec ID event names %d digest algorithms", ErrMalformed, n)
		}
		sizes = map[uint16]int{}
		for i := range n {
			sizes[le.Uint16(data[28+4*i:])] = int(le.Uint16(data[30+4*i:]))
		}
	}
	f := framing{events: 1}
	pad := paddingStart(raw)
	off := first
	for off < len(raw) {
		if off >= pad {
			f.padding = len(raw) - off
			return raw[:off], f, nil
		}
		start := off
		// A record whose PCR, as far as the log holds it, is no event's was
		// never one: trailing bytes, not a cut event.
		if pcr, ok := recordHead(raw[off:]); !ok {
			return nil, f, &TrailingError{Offset: start, Bytes: len(raw) - start,
				Detail: fmt.Sprintf("no event names PCR %d", pcr)}
		}
		trunc := func(need int) error {
			return &TruncatedError{Event: f.events, Start: start, Length: len(raw), Need: need}
		}
		if sizes == nil {
			if off+32 > len(raw) {
				return nil, f, trunc(32)
			}
			off += 28
		} else {
			if off+12 > len(raw) {
				return nil, f, trunc(12)
			}
			count := int(le.Uint32(raw[off+8:]))
			if count == 0 || count > len(sizes) {
				return nil, f, &TrailingError{Offset: start, Bytes: len(raw) - start,
					Detail: fmt.Sprintf("event %d would carry %d digests; the log has %d algorithms", f.events, count, len(sizes))}
			}
			off += 12
			for range count {
				if off+2 > len(raw) {
					return nil, f, trunc(off + 2 - start)
				}
				size, ok := sizes[le.Uint16(raw[off:])]
				if !ok {
					return nil, f, &TrailingError{Offset: start, Bytes: len(raw) - start,
						Detail: fmt.Sprintf("event %d names digest algorithm 0x%04x, which the log does not declare", f.events, le.Uint16(raw[off:]))}
				}
				off += 2 + size
				if off > len(raw) {
					return nil, f, trunc(off - start)
				}
			}
		}
		if off+4 > len(raw) {
			return nil, f, trunc(off + 4 - start)
		}
		size := uint64(le.Uint32(raw[off:]))
		off += 4
		if size > uint64(len(raw)-off) {
			return nil, f, trunc(clampInt(uint64(off-start) + size))
		}
		off += int(size)
		f.events++
	}
	return raw, f, nil
}

// recordHead reads the PCR index that starts b, as far as b holds it, and
// reports whether it could be an event's (0–23; missing bytes read as
// zero). Event types are not judged: firmware and vendors add their own.
func recordHead(b []byte) (pcr uint32, ok bool) {
	var head [4]byte
	copy(head[:], b)
	pcr = binary.LittleEndian.Uint32(head[:])
	return pcr, pcr <= 23
}

// paddingStart returns where the run of 0x00 or 0xFF that ends raw starts,
// or len(raw) if raw does not end in one.
func paddingStart(raw []byte) int {
	if len(raw) == 0 || raw[len(raw)-1] != 0 && raw[len(raw)-1] != 0xff {
		return len(raw)
	}
	c := raw[len(raw)-1]
	i := len(raw)
	for i > 0 && raw[i-1] == c {
		i--
	}
	return i
}

// clampInt converts n to an int, saturating, for byte counts in errors.
func clampInt(n uint64) int {
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(n)
}

// uniform reports whether b is not empty and every byte of it is b[0].
func uniform(b []byte) bool {
	return len(b) > 0 && bytes.Count(b, b[:1]) == len(b)
}
