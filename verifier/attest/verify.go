package attest

import (
	"crypto"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"

	goattest "github.com/google/go-attestation/attest"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/wire"
)

// ErrActivation reports a wrong activation secret: the AK and the EK are not
// in one TPM (or the request is not from that TPM).
var ErrActivation = errors.New("credential activation failed")

// ErrLinkMismatch reports a quote that its AK signed but not for the link
// the request names: its qualifying data is not wire.QualifyingData of the
// session's nonce and the request's MAC and IP (a quote over the bare nonce,
// MAC or IP changed after quoting, a quote relayed from another link), or the
// request names no valid link. Such a quote proves nothing about the link it
// arrived on, so it is no verdict on the host: errors.Is(err,
// ErrLinkMismatch) holds for a *LinkError.
var ErrLinkMismatch = errors.New("quote not bound to the request's link")

// LinkError is an ErrLinkMismatch with what the quote and the request say.
type LinkError struct {
	Detail string
}

func (e *LinkError) Error() string { return ErrLinkMismatch.Error() + ": " + e.Detail }

// Unwrap makes errors.Is(err, ErrLinkMismatch) hold.
func (e *LinkError) Unwrap() error { return ErrLinkMismatch }

// EvidenceError reports evidence from a TPM that proved its AK but whose quote
// or event log does not verify. It names the check that failed.
type EvidenceError struct {
	Check  string // CheckEncoding, CheckQuote, CheckPCRSelection, CheckEventLog, CheckBoundary
	Detail string
	// Signed is true when the AK's signature over the quote and its
	// qualifying data (the session's nonce and the link) verified before
	// this check failed: only then is the link the TPM's word.
	Signed bool
}

func (e *EvidenceError) Error() string { return fmt.Sprintf("%s: %s", e.Check, e.Detail) }

// Evidence checks, as named in EvidenceError.Check and in stored reasons.
const (
	CheckEncoding     = "evidence.encoding"
	CheckQuote        = "evidence.quote"
	CheckPCRSelection = "evidence.pcr_selection"
	CheckEventLog     = "evidence.event_log"
	CheckBoundary     = "evidence.boundary"
)

// Expected is what the verifier issued for one session.
type Expected struct {
	Secret []byte // the activation secret
	Nonce  []byte
	PCRs   []int // the PCRs the quote must cover, exactly, in Bank
	// Bank is the PCR bank the quote must cover and the log is replayed
	// in: crypto.SHA256 (also for 0) or crypto.SHA1, as the policy names.
	Bank crypto.Hash
	// Unlogged are quoted PCRs that may hold values the event log does not
	// explain (DefaultUnlogged); every other PCR without events must be zero.
	Unlogged []int
	// Fresh are quoted PCRs that must still be zero: wire.BoundaryPCR.
	Fresh []int
}

// DefaultUnlogged are the PCRs whose events are not in the firmware's log:
// IMA's PCR 10 (in the IMA log).
var DefaultUnlogged = []int{10}

// VolatilePCRs may change between the quote and the unsealing of the
// credentials sealed to it (IMA keeps measuring): seals leave them out.
var VolatilePCRs = []int{10}

// Verified is a boot state proven by a TPM: the only result of Verify.
type Verified struct {
	HostID string
	State  *eventlog.BootState
	// FirmwareVersion is the TPM's firmwareVersion from the quote's
	// TPMS_ATTEST (TPM 2.0 Part 2, section 10.12.12), vendor-defined.
	FirmwareVersion uint64
}

// LogVerifier replays an event log against quoted PCRs; eventlog.Verify does
// it directly, an eventlog.Cache remembers logs that many hosts share.
type LogVerifier interface {
	Verify(raw []byte, bank eventlog.Bank) (*eventlog.BootState, error)
}

type directLogs struct{}

func (directLogs) Verify(raw []byte, bank eventlog.Bank) (*eventlog.BootState, error) {
	return eventlog.Verify(raw, bank)
}

// DirectLogs verifies every log from scratch.
var DirectLogs LogVerifier = directLogs{}

// Verify checks, in order, and stops at the first failure:
//   - the activation secret equals the one issued (constant time): the AK
//     lives in the TPM of the enrolled EK (ErrActivation);
//   - the request names a link (wire.ParseLink of q.MAC, q.IP) (*LinkError);
//   - the quote's TPMS_ATTEST and its TPMT_SIGNATURE are each exactly one
//     canonical encoding, with no bytes after it (EvidenceError
//     "evidence.encoding"): what is stored is what was verified, and its
//     size is the structure's;
//   - the quote's signature verifies with the AK, it is a TPM-generated quote
//     (magic and type), and its PCR digest is that of the PCR values sent
//     (EvidenceError "evidence.quote");
//   - its qualifying data is wire.QualifyingData(exp.Nonce, MAC, IP): the TPM
//     quoted for this session and this link (*LinkError, which wraps
//     ErrLinkMismatch; it is checked only once the signature verified, so it
//     is what the TPM signed);
//   - the quote covers exactly the expected PCRs of the expected bank
//     (exp.Bank), and a value of that bank was sent for each (EvidenceError
//     "evidence.pcr_selection");
//   - the event log replays to the quoted PCR values, for every PCR that has
//     events, and every other quoted PCR (but exp.Unlogged) is zero; the boot
//     state is extracted from the replayed events only (EvidenceError
//     "evidence.event_log").
func (e *Enrollment) Verify(exp Expected, q *wire.QuoteRequest, logs LogVerifier) (_ *Verified, err error) {
	signed := false
	defer func() {
		var ee *EvidenceError
		if errors.As(err, &ee) {
			ee.Signed = signed
		}
	}()
	if len(exp.Secret) == 0 || subtle.ConstantTimeCompare(exp.Secret, q.ActivationSecret) != 1 {
		return nil, ErrActivation
	}
	h, alg := crypto.SHA256, legacy.AlgSHA256
	switch exp.Bank {
	case 0, crypto.SHA256:
	case crypto.SHA1:
		h, alg = crypto.SHA1, legacy.AlgSHA1
	default:
		return nil, &EvidenceError{Check: CheckPCRSelection, Detail: fmt.Sprintf("the %v bank is not one bootgate quotes", exp.Bank)}
	}
	pcrs := make([]goattest.PCR, 0, len(q.PCRs))
	bank := eventlog.Bank{Hash: h, PCRs: make(map[int][]byte, len(q.PCRs)), Unlogged: exp.Unlogged}
	for _, p := range q.PCRs {
		if _, dup := bank.PCRs[p.Index]; dup {
			return nil, &EvidenceError{Check: CheckPCRSelection, Detail: fmt.Sprintf("PCR %d sent twice", p.Index)}
		}
		bank.PCRs[p.Index] = p.Digest
		pcrs = append(pcrs, goattest.PCR{Index: p.Index, Digest: p.Digest, DigestAlg: h})
	}
	mac, ip, err := wire.ParseLink(q.MAC, q.IP)
	if err != nil {
		return nil, &LinkError{Detail: err.Error()}
	}
	qd, err := wire.QualifyingData(exp.Nonce, mac, ip)
	if err != nil {
		return nil, &LinkError{Detail: err.Error()}
	}
	// go-attestation ignores bytes after the signature, and the server
	// stores both as sent.
	if err := checkCanonical[tpm2.TPMSAttest]("quote TPMS_ATTEST", q.Quote, quickAttest); err != nil {
		return nil, &EvidenceError{Check: CheckEncoding, Detail: err.Error()}
	}
	if err := checkCanonical[tpm2.TPMTSignature]("quote TPMT_SIGNATURE", q.Signature, quickSignature); err != nil {
		return nil, &EvidenceError{Check: CheckEncoding, Detail: err.Error()}
	}
	quote := goattest.Quote{Quote: q.Quote, Signature: q.Signature}
	if err := e.akPublic.Verify(quote, pcrs, qd); err == nil {
		signed = true
	} else {
		// Tell a sound quote for another link (or over the bare nonce) from
		// a broken one: verify it again with the qualifying data it carries.
		// Only if that verifies is the quote the TPM's, for other data.
		att, derr := legacy.DecodeAttestationData(q.Quote)
		if derr != nil || e.akPublic.Verify(quote, pcrs, att.ExtraData) != nil {
			return nil, &EvidenceError{Check: CheckQuote, Detail: err.Error()}
		}
		what := "other data"
		if subtle.ConstantTimeCompare(att.ExtraData, exp.Nonce) == 1 {
			what = "the bare session nonce (an agent that does not bind its link)"
		}
		return nil, &LinkError{Detail: fmt.Sprintf("the quote's qualifying data %x is over %s, not SHA-256(nonce ‖ %s ‖ %s)", []byte(att.ExtraData), what, mac, ip)}
	}
	// The signature verified, so the quote is the TPM's; now read what it covers.
	att, err := legacy.DecodeAttestationData(q.Quote)
	if err != nil || att.AttestedQuoteInfo == nil {
		return nil, &EvidenceError{Check: CheckQuote, Detail: fmt.Sprintf("not a quote: %v", err)}
	}
	sel := att.AttestedQuoteInfo.PCRSelection
	got := slices.Sorted(slices.Values(sel.PCRs))
	want := slices.Sorted(slices.Values(exp.PCRs))
	if sel.Hash != alg || !slices.Equal(got, want) {
		return nil, &EvidenceError{Check: CheckPCRSelection, Detail: fmt.Sprintf("quote covers %v PCRs %v, want %v PCRs %v", sel.Hash, got, h, want)}
	}
	if len(bank.PCRs) != len(want) {
		return nil, &EvidenceError{Check: CheckPCRSelection, Detail: fmt.Sprintf("%d PCR values sent for %d quoted PCRs", len(bank.PCRs), len(want))}
	}
	for _, i := range exp.Fresh {
		if d, ok := bank.PCRs[i]; ok && !allZero(d) {
			return nil, &EvidenceError{Check: CheckBoundary, Detail: fmt.Sprintf("PCR %d is %x, not zero: the quote was taken after bootgate handed this boot over (credentials unsealed or an OS loaded); a host attests again only after a reboot", i, d)}
		}
	}
	if h != crypto.SHA256 && len(exp.Fresh) > 0 {
		if err := e.verifyBoundary(exp.Fresh, q.Boundary, qd, att.ClockInfo); err != nil {
			return nil, err
		}
	}
	st, err := logs.Verify(q.EventLog, bank)
	if err != nil {
		// The log's errors can quote what the host sent: escaped and clipped.
		return nil, &EvidenceError{Check: CheckEventLog, Detail: textsafe.Clip(err.Error(), eventlog.MaxDetailBytes)}
	}
	return &Verified{HostID: e.HostID, State: st, FirmwareVersion: att.FirmwareVersion}, nil
}

// verifyBoundary checks the boundary quote that comes with a quote of
// another bank than SHA-256: signed by the AK over the session's qualifying
// data qd, covering exactly the fresh PCRs in the SHA-256 bank, each zero.
// Every agent extends its boundary into SHA-256 PCR 15, but one may have
// left the other banks alone: without this, a boot already handed over
// could attest again in such a bank. The boundary quote must also be of the
// main quote's boot and no older than it (TPMS_CLOCK_INFO: the same reset
// and restart counts, which the TPM obfuscates the same way for one AK, and
// a clock no earlier than main's), so that one taken before the handover
// cannot vouch for a quote taken after it; the agent quotes the main bank
// first. A quote without it fails evidence.boundary.
func (e *Enrollment) verifyBoundary(fresh []int, b *wire.BoundaryQuote, qd []byte, main legacy.ClockInfo) error {
	if b == nil {
		return &EvidenceError{Check: CheckBoundary, Detail: fmt.Sprintf("a quote of a bank other than SHA-256 must come with a SHA-256 quote of PCR %v (boundary): this agent sent none", fresh)}
	}
	vals := make(map[int][]byte, len(b.PCRs))
	pcrs := make([]goattest.PCR, 0, len(b.PCRs))
	for _, p := range b.PCRs {
		if _, dup := vals[p.Index]; dup {
			return &EvidenceError{Check: CheckBoundary, Detail: fmt.Sprintf("boundary quote: PCR %d sent twice", p.Index)}
		}
		vals[p.Index] = p.Digest
		pcrs = append(pcrs, goattest.PCR{Index: p.Index, Digest: p.Digest, DigestAlg: crypto.SHA256})
	}
	if err := e.akPublic.Verify(goattest.Quote{Quote: b.Quote, Signature: b.Signature}, pcrs, qd); err != nil {
		return &EvidenceError{Check: CheckBoundary, Detail: "boundary quote: " + textsafe.Clip(err.Error(), eventlog.MaxDetailBytes)}
	}
	att, err := legacy.DecodeAttestationData(b.Quote)
	if err != nil || att.AttestedQuoteInfo == nil {
		return &EvidenceError{Check: CheckBoundary, Detail: fmt.Sprintf("boundary quote: not a quote: %v", err)}
	}
	if c := att.ClockInfo; c.ResetCount != main.ResetCount || c.RestartCount != main.RestartCount || c.Clock < main.Clock {
		return &EvidenceError{Check: CheckBoundary, Detail: "boundary quote: not taken after the main quote in the same boot (its TPM clock, reset or restart count differ): it cannot vouch for the main quote"}
	}
	sel := att.AttestedQuoteInfo.PCRSelection
	got := slices.Sorted(slices.Values(sel.PCRs))
	want := slices.Sorted(slices.Values(fresh))
	if sel.Hash != legacy.AlgSHA256 || !slices.Equal(got, want) || len(vals) != len(want) {
		return &EvidenceError{Check: CheckBoundary, Detail: fmt.Sprintf("boundary quote covers %v PCRs %v with %d values, want SHA-256 PCRs %v", sel.Hash, got, len(vals), want)}
	}
	for _, i := range want {
		if d, ok := vals[i]; !ok || len(d) != crypto.SHA256.Size() || !allZero(d) {
			return &EvidenceError{Check: CheckBoundary, Detail: fmt.Sprintf("SHA-256 PCR %d is %x, not zero: the quote was taken after bootgate handed this boot over (credentials unsealed or an OS loaded); a host attests again only after a reboot", i, d)}
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
