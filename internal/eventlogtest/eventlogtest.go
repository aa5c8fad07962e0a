// Package eventlogtest edits TCG event logs for tests: crypto-agile logs (TCG
// PC Client Platform Firmware Profile 1.05 §10.2: a TCG_PCR_EVENT header
// holding the Spec ID event, then TCG_PCR_EVENT2 records) and SHA-1 logs
// (TCG_PCR_EVENT records only, as TPM 1.2 and some TPM 2.0 firmware write
// them). It adds, drops and
// disguises events while keeping every digest a test does not change, so that
// a simulated TPM replaying one log and a host sending another can be set up.
// It is test support: it checks only what it needs to edit a log.
package eventlogtest

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf16"

	"github.com/google/go-tpm/tpm2"
)

// Event is one TCG_PCR_EVENT2.
type Event struct {
	PCR     uint32
	Type    uint32
	Digests []Digest // in the order of the log's algorithms
	Data    []byte
}

// Digest is one digest of an event.
type Digest struct {
	Alg    tpm2.TPMAlgID
	Digest []byte
}

// Log is a parsed log.
type Log struct {
	Header []byte // the TCG_PCR_EVENT holding the Spec ID event, verbatim; empty in a SHA-1 log
	Algs   []tpm2.TPMAlgID
	Events []Event
	// SHA1 is true for a SHA-1 log: TCG_PCR_EVENT records, no Spec ID event.
	SHA1 bool
}

var le = binary.LittleEndian

// ErrFormat reports a log this package cannot edit.
var ErrFormat = errors.New("not a crypto-agile event log")

// Parse splits raw into its header and events. Trailing zero padding ends
// the log.
func Parse(raw []byte) (*Log, error) {
	fail := func(off int) (*Log, error) { return nil, fmt.Errorf("%w: at offset %d", ErrFormat, off) }
	if len(raw) < 32 {
		return fail(0)
	}
	if !bytes.HasPrefix(raw[32:], []byte("Spec ID Event03\x00")) {
		return parseSHA1(raw)
	}
	specLen := int(le.Uint32(raw[28:]))
	if specLen < 28 || len(raw) < 32+specLen || !bytes.HasPrefix(raw[32:], []byte("Spec ID Event03\x00")) {
		return fail(0)
	}
	spec := raw[32 : 32+specLen]
	l := &Log{Header: slices.Clone(raw[:32+specLen])}
	sizes := map[uint16]int{}
	for i := range int(le.Uint32(spec[24:])) {
		o := 28 + 4*i
		if o+4 > len(spec) {
			return fail(32 + o)
		}
		id, size := le.Uint16(spec[o:]), int(le.Uint16(spec[o+2:]))
		sizes[id] = size
		l.Algs = append(l.Algs, tpm2.TPMAlgID(id))
	}
	off := len(l.Header)
	for off+12 <= len(raw) {
		e := Event{PCR: le.Uint32(raw[off:]), Type: le.Uint32(raw[off+4:])}
		if e.PCR == 0 && e.Type == 0 {
			break
		}
		o := off + 12
		for range int(le.Uint32(raw[off+8:])) {
			if o+2 > len(raw) {
				return fail(o)
			}
			alg := le.Uint16(raw[o:])
			size, ok := sizes[alg]
			if !ok || o+2+size > len(raw) {
				return fail(o)
			}
			e.Digests = append(e.Digests, Digest{tpm2.TPMAlgID(alg), slices.Clone(raw[o+2 : o+2+size])})
			o += 2 + size
		}
		if o+4 > len(raw) {
			return fail(o)
		}
		n := int(le.Uint32(raw[o:]))
		if n > len(raw)-o-4 {
			return fail(o)
		}
		e.Data = slices.Clone(raw[o+4 : o+4+n])
		l.Events = append(l.Events, e)
		off = o + 4 + n
	}
	return l, nil
}

// parseSHA1 parses a log of TCG_PCR_EVENT records (PCR index, type, SHA-1
// digest, data size, data).
func parseSHA1(raw []byte) (*Log, error) {
	l := &Log{Algs: []tpm2.TPMAlgID{tpm2.TPMAlgSHA1}, SHA1: true}
	off := 0
	for off+32 <= len(raw) {
		e := Event{PCR: le.Uint32(raw[off:]), Type: le.Uint32(raw[off+4:])}
		if e.PCR == 0 && e.Type == 0 {
			break
		}
		e.Digests = []Digest{{tpm2.TPMAlgSHA1, slices.Clone(raw[off+8 : off+28])}}
		n := int(le.Uint32(raw[off+28:]))
		if n > len(raw)-off-32 {
			return nil, fmt.Errorf("%w: SHA-1 event at offset %d", ErrFormat, off)
		}
		e.Data = slices.Clone(raw[off+32 : off+32+n])
		l.Events = append(l.Events, e)
		off += 32 + n
	}
	if len(l.Events) == 0 {
		return nil, fmt.Errorf("%w: at offset 0", ErrFormat)
	}
	return l, nil
}

// Bytes renders the log.
func (l *Log) Bytes() []byte {
	if l.SHA1 {
		var out []byte
		for _, e := range l.Events {
			out = le.AppendUint32(out, e.PCR)
			out = le.AppendUint32(out, e.Type)
			out = append(out, e.Digests[0].Digest...)
			out = le.AppendUint32(out, uint32(len(e.Data)))
			out = append(out, e.Data...)
		}
		return out
	}
	out := slices.Clone(l.Header)
	for _, e := range l.Events {
		out = le.AppendUint32(out, e.PCR)
		out = le.AppendUint32(out, e.Type)
		out = le.AppendUint32(out, uint32(len(e.Digests)))
		for _, d := range e.Digests {
			out = le.AppendUint16(out, uint16(d.Alg))
			out = append(out, d.Digest...)
		}
		out = le.AppendUint32(out, uint32(len(e.Data)))
		out = append(out, e.Data...)
	}
	return out
}

// Clone returns a deep copy of l.
func (l *Log) Clone() *Log {
	c := &Log{Header: slices.Clone(l.Header), Algs: slices.Clone(l.Algs), SHA1: l.SHA1}
	for _, e := range l.Events {
		c.Events = append(c.Events, e.Clone())
	}
	return c
}

// Clone returns a deep copy of e.
func (e Event) Clone() Event {
	c := Event{PCR: e.PCR, Type: e.Type, Data: slices.Clone(e.Data)}
	for _, d := range e.Digests {
		c.Digests = append(c.Digests, Digest{d.Alg, slices.Clone(d.Digest)})
	}
	return c
}

// Event makes an event whose digests, in each of the log's algorithms, are
// of measured, and whose data is data.
func (l *Log) Event(pcr, typ uint32, data, measured []byte) Event {
	e := Event{PCR: pcr, Type: typ, Data: slices.Clone(data)}
	for _, a := range l.Algs {
		h, err := a.Hash()
		if err != nil {
			panic(fmt.Sprintf("eventlogtest: digest algorithm %v", a))
		}
		e.Digests = append(e.Digests, Digest{a, digest(h, measured)})
	}
	return e
}

func digest(h crypto.Hash, b []byte) []byte {
	x := h.New()
	x.Write(b)
	return x.Sum(nil)
}

// Insert returns a copy of l with e inserted after the last event of e's
// PCR (or at the end).
func (l *Log) Insert(e Event) (*Log, int) {
	c := l.Clone()
	at := len(c.Events)
	for i := len(c.Events) - 1; i >= 0; i-- {
		if c.Events[i].PCR == e.PCR {
			at = i + 1
			break
		}
	}
	c.Events = slices.Insert(c.Events, at, e.Clone())
	return c, at
}

// Replace returns a copy of l with its first event that match selects
// replaced by what with makes of it; ok is false when no event matches.
func (l *Log) Replace(match func(Event) bool, with func(Event) Event) (_ *Log, ok bool) {
	i := l.Index(match)
	if i < 0 {
		return nil, false
	}
	c := l.Clone()
	c.Events[i] = with(c.Events[i]).Clone()
	return c, true
}

// Index returns the index of the first event match selects, or -1.
func (l *Log) Index(match func(Event) bool) int { return slices.IndexFunc(l.Events, match) }

// Only returns a copy of a crypto-agile l that carries only alg's digests:
// its Spec ID event names alg alone, and every event keeps that digest.
// It panics if l does not carry alg.
func (l *Log) Only(alg tpm2.TPMAlgID) *Log {
	if !slices.Contains(l.Algs, alg) || l.SHA1 {
		panic(fmt.Sprintf("eventlogtest: the log carries no %v digests to keep alone", alg))
	}
	c := l.Clone()
	spec := c.Header[32:]
	n := int(le.Uint32(spec[24:]))
	var size uint16
	for i := range n {
		if tpm2.TPMAlgID(le.Uint16(spec[28+4*i:])) == alg {
			size = le.Uint16(spec[30+4*i:])
		}
	}
	newSpec := slices.Clone(spec[:24])
	newSpec = le.AppendUint32(newSpec, 1)
	newSpec = le.AppendUint16(newSpec, uint16(alg))
	newSpec = le.AppendUint16(newSpec, size)
	newSpec = append(newSpec, spec[28+4*n:]...) // vendor info size and data
	c.Header = append(slices.Clone(c.Header[:28]), le.AppendUint32(nil, uint32(len(newSpec)))...)
	c.Header = append(c.Header, newSpec...)
	c.Algs = []tpm2.TPMAlgID{alg}
	for i, e := range c.Events {
		c.Events[i].Digests = slices.DeleteFunc(e.Digests, func(d Digest) bool { return d.Alg != alg })
	}
	return c
}

// Without returns a copy of l without the events of pcr.
func (l *Log) Without(pcr uint32) *Log {
	c := l.Clone()
	c.Events = slices.DeleteFunc(c.Events, func(e Event) bool { return e.PCR == pcr })
	return c
}

// UTF16 encodes s as UTF-16LE, without a terminator.
func UTF16(s string) []byte {
	var out []byte
	for _, c := range utf16.Encode([]rune(s)) {
		out = le.AppendUint16(out, c)
	}
	return out
}

// VariableData encodes a UEFI_VARIABLE_DATA (PFP 1.05 §10.2.6) for the
// variable name in namespace guid (the 16 bytes as they are laid out in
// memory, little-endian fields first).
func VariableData(guid [16]byte, name string, value []byte) []byte {
	out := slices.Clone(guid[:])
	out = le.AppendUint64(out, uint64(len(utf16.Encode([]rune(name)))))
	out = le.AppendUint64(out, uint64(len(value)))
	out = append(out, UTF16(name)...)
	return append(out, value...)
}

// ImageSecurityDatabase is EFI_IMAGE_SECURITY_DATABASE_GUID
// (d719b2cb-3d3a-4596-a3bc-dad00e67656f) as laid out in memory.
var ImageSecurityDatabase = [16]byte{0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f}

// EFIGlobalVariable is EFI_GLOBAL_VARIABLE
// (8be4df61-93ca-11d2-aa0d-00e098032b8c) as laid out in memory.
var EFIGlobalVariable = [16]byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}

// ShimLock is SHIM_LOCK_GUID (605dab50-e046-4300-abb6-3dd810dd8b23), shim's
// variable namespace, as laid out in memory.
var ShimLock = [16]byte{0x50, 0xab, 0x5d, 0x60, 0x46, 0xe0, 0x00, 0x43, 0xab, 0xb6, 0x3d, 0xd8, 0x10, 0xdd, 0x8b, 0x23}

// ShimAuthority is an EV_EFI_VARIABLE_AUTHORITY event of PCR 7 as shim
// measures one (the shim-authority-short-digest quirk): UEFI_VARIABLE_DATA
// in shim's namespace named name, whose value is an EFI_SIGNATURE_DATA of
// der, sent with one byte more than its digest covers.
func (l *Log) ShimAuthority(name string, der []byte) Event {
	measured := VariableData(ShimLock, name, append(make([]byte, 16), der...))
	return l.Event(7, EvAuthority, append(slices.Clone(measured), 0), measured)
}

// QuirkEncodings are the data a host could send for an event whose digest
// is of measured, hoping that a known firmware quirk explains it: measured
// as the value of each Secure Boot variable (digest of the value only), and
// measured with one byte more (shim's authority digest, which leaves out
// the last byte).
func QuirkEncodings(measured []byte) [][]byte {
	out := [][]byte{
		VariableData(EFIGlobalVariable, "SecureBoot", measured),
		VariableData(EFIGlobalVariable, "PK", measured),
		VariableData(EFIGlobalVariable, "KEK", measured),
		VariableData(ImageSecurityDatabase, "db", measured),
		VariableData(ImageSecurityDatabase, "dbx", measured),
	}
	return append(out, append(slices.Clone(measured), 0))
}

// Authority encodes the data of an EV_EFI_VARIABLE_AUTHORITY event for a
// certificate in db: UEFI_VARIABLE_DATA whose value is an EFI_SIGNATURE_DATA
// (an owner GUID, then the DER certificate).
func Authority(der []byte) []byte {
	owner := make([]byte, 16)
	return VariableData(ImageSecurityDatabase, "db", append(owner, der...))
}
