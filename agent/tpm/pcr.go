package tpm

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm/tpm2"
)

// ErrLocality is returned by ReplayEventLog for a log whose PCR 0 did not start
// from zero: a StartupLocality event with a non-zero locality, or an H-CRTM
// event. A PCR extend cannot reproduce such a starting value.
var ErrLocality = errors.New("event log needs a non-zero PCR 0 starting locality")

// PCR limits.
const (
	numPCRs       = 24 // PCRs of a PC Client TPM
	maxReplayPCR  = 15 // highest PCR ReplayEventLog extends; 16 and up are debug and DRTM PCRs
	pcrsPerRead   = 8  // TPM2_PCR_Read returns at most 8 digests per call
	startupLocLen = 17 // "StartupLocality\x00" and the locality byte
)

// pcrSelection returns the SHA-256 bank selection of pcrs, which must be
// non-empty and within 0-23.
func pcrSelection(pcrs []int) (tpm2.TPMLPCRSelection, error) {
	return bankSelection(crypto.SHA256, pcrs)
}

// bankAlg is the TPM algorithm of the PCR bank h: crypto.SHA256 (also for
// 0) or crypto.SHA1.
func bankAlg(h crypto.Hash) (crypto.Hash, tpm2.TPMAlgID, error) {
	switch h {
	case 0, crypto.SHA256:
		return crypto.SHA256, tpm2.TPMAlgSHA256, nil
	case crypto.SHA1:
		return crypto.SHA1, tpm2.TPMAlgSHA1, nil
	}
	return 0, 0, fmt.Errorf("PCR bank %v is not supported", h)
}

// bankSelection is pcrSelection in the bank h (bankAlg).
func bankSelection(h crypto.Hash, pcrs []int) (tpm2.TPMLPCRSelection, error) {
	_, alg, err := bankAlg(h)
	if err != nil {
		return tpm2.TPMLPCRSelection{}, err
	}
	if len(pcrs) == 0 {
		return tpm2.TPMLPCRSelection{}, errors.New("no PCRs selected")
	}
	sel := make([]uint, 0, len(pcrs))
	for _, p := range pcrs {
		if p < 0 || p >= numPCRs {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("PCR %d out of range 0-%d", p, numPCRs-1)
		}
		sel = append(sel, uint(p))
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      alg,
		PCRSelect: tpm2.PCClientCompatible.PCRs(sel...),
	}}}, nil
}

// PCRs reads the given SHA-256 PCRs. It sends as many TPM2_PCR_Read commands
// as needed (a TPM returns at most 8 digests per call).
func (t *TPM) PCRs(pcrs []int) (map[int][]byte, error) {
	return t.BankPCRs(crypto.SHA256, pcrs)
}

// BankPCRs is PCRs in the bank h: crypto.SHA256 or crypto.SHA1 (20-byte
// values).
func (t *TPM) BankPCRs(h crypto.Hash, pcrs []int) (map[int][]byte, error) {
	h, alg, err := bankAlg(h)
	if err != nil {
		return nil, fmt.Errorf("read PCRs: %w", err)
	}
	if _, err := bankSelection(h, pcrs); err != nil {
		return nil, fmt.Errorf("read PCRs: %w", err)
	}
	want := slices.Compact(slices.Sorted(slices.Values(pcrs)))
	out := make(map[int][]byte, len(want))
	for len(want) > 0 {
		sel, err := bankSelection(h, want)
		if err != nil {
			return nil, fmt.Errorf("read PCRs: %w", err)
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(t.tr)
		if err != nil {
			return nil, fmt.Errorf("read PCRs: %w", err)
		}
		got, err := pcrValues(rsp, alg, h.Size())
		if err != nil {
			return nil, fmt.Errorf("read PCRs: %w", err)
		}
		if len(got) == 0 {
			return nil, fmt.Errorf("read PCRs: TPM returned none of %v: is the %v bank allocated?", want, h)
		}
		for i, d := range got {
			out[i] = d
		}
		want = slices.DeleteFunc(want, func(i int) bool { _, ok := got[i]; return ok })
	}
	return out, nil
}

// pcrValues pairs the digests of bank alg (size bytes each) of a
// TPM2_PCR_Read response with the PCRs they belong to: the selected PCRs in
// ascending order.
func pcrValues(rsp *tpm2.PCRReadResponse, alg tpm2.TPMAlgID, size int) (map[int][]byte, error) {
	var idx []int
	for _, s := range rsp.PCRSelectionOut.PCRSelections {
		if s.Hash != alg {
			continue
		}
		for byteIdx, b := range s.PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) != 0 {
					idx = append(idx, byteIdx*8+bit)
				}
			}
		}
	}
	if len(idx) != len(rsp.PCRValues.Digests) {
		return nil, fmt.Errorf("TPM selected %d PCRs but returned %d digests", len(idx), len(rsp.PCRValues.Digests))
	}
	out := make(map[int][]byte, len(idx))
	for i, p := range idx {
		if len(rsp.PCRValues.Digests[i].Buffer) != size {
			return nil, fmt.Errorf("PCR %d: digest of %d bytes", p, len(rsp.PCRValues.Digests[i].Buffer))
		}
		out[p] = rsp.PCRValues.Digests[i].Buffer
	}
	return out, nil
}

// ExtendSHA1 extends a SHA-1 digest into a PCR's SHA-1 bank
// (TPM2_PCR_Extend, empty password authorisation). Other banks are left
// alone: it replays logs into a test TPM; a boundary or a measurement is
// Extend, which covers every bank.
func (t *TPM) ExtendSHA1(pcr int, sha1Digest []byte) error {
	return t.ExtendBank(crypto.SHA1, pcr, sha1Digest)
}

// ExtendBank extends digest into PCR pcr of the bank h (crypto.SHA256 or
// crypto.SHA1) only, as ExtendSHA1 does for SHA-1.
func (t *TPM) ExtendBank(h crypto.Hash, pcr int, digest []byte) error {
	h, alg, err := bankAlg(h)
	if err != nil {
		return fmt.Errorf("extend PCR %d: %w", pcr, err)
	}
	if pcr < 0 || pcr >= numPCRs {
		return fmt.Errorf("extend PCR %d: out of range 0-%d", pcr, numPCRs-1)
	}
	if len(digest) != h.Size() {
		return fmt.Errorf("extend PCR %d: digest of %d bytes, want %d", pcr, len(digest), h.Size())
	}
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: alg, Digest: digest}}},
	}.Execute(t.tr)
	if err != nil {
		return fmt.Errorf("extend PCR %d (%v): %w", pcr, h, err)
	}
	return nil
}

// Extend extends a SHA-256 digest into PCR pcr of every allocated PCR bank
// (one TPM2_PCR_Extend with one digest per bank, empty password
// authorisation): the SHA-256 bank receives sha256Digest, any other bank
// the digest of sha256Digest in its own algorithm (SHA-1(sha256Digest) in
// the SHA-1 bank). No bank is left alone, so that a boundary or a
// measurement moves the PCR in whichever bank a later quote covers. An
// allocated bank whose algorithm bootgate cannot compute fails the extend
// before anything is extended.
func (t *TPM) Extend(pcr int, sha256Digest []byte) error {
	if pcr < 0 || pcr >= numPCRs {
		return fmt.Errorf("extend PCR %d: out of range 0-%d", pcr, numPCRs-1)
	}
	if len(sha256Digest) != sha256.Size {
		return fmt.Errorf("extend PCR %d: digest of %d bytes, want %d", pcr, len(sha256Digest), sha256.Size)
	}
	banks, err := t.allocatedBanks(pcr)
	if err != nil {
		return fmt.Errorf("extend PCR %d: %w", pcr, err)
	}
	var digests []tpm2.TPMTHA
	for _, alg := range banks {
		if alg == tpm2.TPMAlgSHA256 {
			digests = append(digests, tpm2.TPMTHA{HashAlg: alg, Digest: sha256Digest})
			continue
		}
		h, err := alg.Hash()
		if err != nil || !h.Available() {
			return fmt.Errorf("extend PCR %d: the allocated PCR bank %v is not one bootgate can extend", pcr, alg)
		}
		hh := h.New()
		hh.Write(sha256Digest)
		digests = append(digests, tpm2.TPMTHA{HashAlg: alg, Digest: hh.Sum(nil)})
	}
	if !slices.ContainsFunc(digests, func(d tpm2.TPMTHA) bool { return d.HashAlg == tpm2.TPMAlgSHA256 }) {
		return fmt.Errorf("extend PCR %d: no SHA-256 bank allocated", pcr)
	}
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: digests},
	}.Execute(t.tr)
	if err != nil {
		return fmt.Errorf("extend PCR %d: %w", pcr, err)
	}
	return nil
}

// allocatedBanks lists the algorithms of the PCR banks in which PCR pcr is
// allocated (TPM2_GetCapability of TPM_CAP_PCRS).
func (t *TPM) allocatedBanks(pcr int) ([]tpm2.TPMAlgID, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, PropertyCount: 1}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("read the allocated PCR banks: %w", err)
	}
	sel, err := rsp.CapabilityData.Data.AssignedPCR()
	if err != nil {
		return nil, fmt.Errorf("read the allocated PCR banks: %w", err)
	}
	var out []tpm2.TPMAlgID
	for _, s := range sel.PCRSelections {
		if pcr/8 < len(s.PCRSelect) && s.PCRSelect[pcr/8]&(1<<(pcr%8)) != 0 && !slices.Contains(out, s.Hash) {
			out = append(out, s.Hash)
		}
	}
	return out, nil
}

// ReplayEventLog extends every SHA-256 digest of a raw TCG crypto-agile event
// log into this TPM's PCRs, in log order, skipping EV_NO_ACTION events, so that
// a swtpm or simulator holds the PCR values the log describes. It returns the
// number of events extended.
//
// It checks the whole log before extending anything, and refuses a log with a
// StartupLocality event of non-zero locality or an H-CRTM event (ErrLocality),
// an event for a PCR above 15, or an event without a SHA-256 digest. Events
// are numbered as go-eventlog numbers them: the first after the Spec ID event
// is 1.
func (t *TPM) ReplayEventLog(raw []byte) (int, error) {
	return t.replayEventLog(raw, crypto.SHA256)
}

// ReplayEventLogSHA1 is ReplayEventLog of the log's SHA-1 digests into the
// SHA-1 bank, for a TPM that has one (the simulator's; swtpm's only if it
// was set up with it). Replaying both banks gives a TPM that can be quoted
// in either.
func (t *TPM) ReplayEventLogSHA1(raw []byte) (int, error) {
	return t.replayEventLog(raw, crypto.SHA1)
}

func (t *TPM) replayEventLog(raw []byte, h crypto.Hash) (int, error) {
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		return 0, fmt.Errorf("replay event log: parse: %w", err)
	}
	alg := register.HashSHA256
	if h == crypto.SHA1 {
		alg = register.HashSHA1
	}
	type extend struct {
		pcr    int
		digest []byte
	}
	var plan []extend
	for i, ev := range el.Events(alg) {
		num := i + 1
		switch {
		case ev.Type == tcg.NoAction:
			if ev.Index == 0 && len(ev.Data) == startupLocLen && bytes.HasPrefix(ev.Data, []byte("StartupLocality")) && ev.Data[startupLocLen-1] != 0 {
				return 0, fmt.Errorf("replay event log: event %d: StartupLocality %d: %w", num, ev.Data[startupLocLen-1], ErrLocality)
			}
			continue
		case ev.Type == tcg.EFIHCRTMEvent:
			return 0, fmt.Errorf("replay event log: event %d: H-CRTM event: %w", num, ErrLocality)
		case ev.Index < 0 || ev.Index > maxReplayPCR:
			return 0, fmt.Errorf("replay event log: event %d: PCR %d above %d cannot be replayed", num, ev.Index, maxReplayPCR)
		case len(ev.Digest) != h.Size():
			return 0, fmt.Errorf("replay event log: event %d: no %v digest", num, h)
		}
		plan = append(plan, extend{pcr: ev.Index, digest: ev.Digest})
	}
	for i, e := range plan {
		if err := t.ExtendBank(h, e.pcr, e.digest); err != nil {
			return i, fmt.Errorf("replay event log: %w", err)
		}
	}
	return len(plan), nil
}
