// Package eventlog turns a raw TCG PC Client event log into the boot state it
// proves. It is pure code: bytes and PCR values in, a BootState out.
//
// Verify is the only way to obtain a BootState from evidence: it parses the log,
// replays the digests of one PCR bank (SHA-256, or SHA-1 where a policy opts
// in) against PCR values that a verified quote vouched for, and extracts the
// state only from events that replayed. An event log that does not replay
// never yields a BootState.
package eventlog

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
)

// MaxLogBytes bounds the size of a log this package parses.
const MaxLogBytes = 1 << 20

// ErrMalformed reports a log that cannot be parsed at all.
var ErrMalformed = errors.New("malformed event log")

// ReplayError reports PCRs whose quoted value the log does not reproduce.
type ReplayError struct {
	PCRs []int
}

func (e *ReplayError) Error() string {
	return fmt.Sprintf("event log does not replay to the quoted value of PCRs %v", e.PCRs)
}

// BankError reports a readable log that carries no digests of the bank asked
// for: a SHA-1-only log replayed for a SHA-256 policy, or the reverse. It is
// not an ErrMalformed: the log can be read, it is of another kind.
type BankError struct {
	Want crypto.Hash   // the bank asked for
	Have []crypto.Hash // the banks the log carries
}

func (e *BankError) Error() string {
	return fmt.Sprintf("the event log carries no %v digests (it has %v)", e.Want, e.Have)
}

// UnexplainedError reports PCRs that hold values although the log has no
// events for them.
type UnexplainedError struct {
	PCRs []int
}

func (e *UnexplainedError) Error() string {
	return fmt.Sprintf("PCRs %v hold values but the event log has no events for them", e.PCRs)
}

// checkUnexplained enforces Bank.Unlogged's rule.
func checkUnexplained(bank Bank, eventPCRs map[int]bool) error {
	var bad []int
	for _, i := range sortedKeys(bank.PCRs) {
		if eventPCRs[i] || slices.Contains(bank.Unlogged, i) {
			continue
		}
		for _, c := range bank.PCRs[i] {
			if c != 0 {
				bad = append(bad, i)
				break
			}
		}
	}
	if len(bad) > 0 {
		return &UnexplainedError{PCRs: bad}
	}
	return nil
}

// Bank is a set of PCR values of one hash algorithm, by PCR index.
type Bank struct {
	Hash crypto.Hash // crypto.SHA256, or crypto.SHA1 where the policy names that bank
	PCRs map[int][]byte
	// Unlogged are PCRs that may hold values this log does not explain,
	// such as IMA's PCR 10, whose events are in the IMA log. Every other PCR
	// of the bank that has no events must be in its reset state (zero):
	// otherwise a host could drop a PCR's events and hide what it measured.
	Unlogged []int
}

// Verify parses raw and replays it against bank, whose values the caller has
// verified against a quote. PCRs that have no events in the log (for example
// PCR 10 before IMA runs) are not required to replay. On success it returns the
// boot state the replayed events describe.
func Verify(raw []byte, bank Bank) (*BootState, error) {
	return verify(raw, sha256.Sum256(raw), bank)
}

// verify is Verify for a log whose SHA-256 the caller has computed already.
func verify(raw []byte, sum [32]byte, bank Bank) (*BootState, error) {
	events, f, err := replay(raw, bank)
	if err != nil {
		return nil, err
	}
	st := extract(events, bank)
	st.PaddingBytes = f.padding
	if err := checkUnexplained(bank, st.eventPCRs); err != nil {
		return nil, err
	}
	st.LogSHA256 = sum
	st.PCRs = hexPCRs(bank.PCRs)
	return st, nil
}

// Replay computes the PCR values that raw describes, for every PCR with at
// least one event, in the SHA-256 bank or, for a log that has none, SHA-1.
// It trusts the log: use it only where no quote exists (offline policy work),
// then pass its result to Verify.
func Replay(raw []byte) (Bank, error) {
	el, _, err := parse(raw)
	if err != nil {
		return Bank{}, err
	}
	h := crypto.SHA256
	if !slices.Contains(el.Algs, register.HashSHA256) {
		h = crypto.SHA1
	}
	return replayBank(el, h)
}

// ReplayBank is Replay in the bank h (crypto.SHA1, crypto.SHA256 or
// crypto.SHA384). A readable log without digests of h is a *BankError.
func ReplayBank(raw []byte, h crypto.Hash) (Bank, error) {
	el, _, err := parse(raw)
	if err != nil {
		return Bank{}, err
	}
	return replayBank(el, h)
}

// Offline is the boot state of a log read with no quote to compare with (a
// policy reference, a file an operator checks): raw replayed against itself
// in the bank h (0: as Replay chooses), then verified against that replay.
// Errors: Replay's or ReplayBank's (a *BankError for a readable log without
// digests of h), then Verify's.
func Offline(raw []byte, h crypto.Hash) (*BootState, error) {
	var bank Bank
	var err error
	if h == 0 {
		bank, err = Replay(raw)
	} else {
		bank, err = ReplayBank(raw, h)
	}
	if err != nil {
		return nil, err
	}
	return Verify(raw, bank)
}

func logBanks(el *tcg.EventLog) []crypto.Hash {
	var out []crypto.Hash
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA1} {
		if slices.Contains(el.Algs, bankAlgs[h]) {
			out = append(out, h)
		}
	}
	return out
}

func replayBank(el *tcg.EventLog, h crypto.Hash) (Bank, error) {
	alg, ok := bankAlgs[h]
	if !ok || !slices.Contains(el.Algs, alg) {
		return Bank{}, &BankError{Want: h, Have: logBanks(el)}
	}
	bank := Bank{Hash: h, PCRs: map[int][]byte{}}
	size := bank.Hash.Size()
	locality := byte(0)
	for _, e := range el.Events(alg) {
		if e.Type == tcg.NoAction {
			if e.Index == 0 && len(e.Data) == 17 && bytes.HasPrefix(e.Data, []byte("StartupLocality")) {
				locality = e.Data[16]
			}
			continue
		}
		if len(e.Digest) != size {
			return Bank{}, fmt.Errorf("%w: event for PCR %d has no %v digest", ErrMalformed, e.Index, bank.Hash)
		}
		cur, ok := bank.PCRs[e.Index]
		if !ok {
			cur = make([]byte, size)
			if e.Index == 0 {
				cur[size-1] = locality
			}
		}
		if e.Type == tcg.EFIHCRTMEvent {
			// An H-CRTM event resets PCR 0 to 4 before it extends.
			cur = make([]byte, size)
			cur[size-1] = 4
		}
		h := bank.Hash.New()
		h.Write(cur)
		h.Write(e.Digest)
		bank.PCRs[e.Index] = h.Sum(nil)
	}
	return bank, nil
}

// parse frames raw (frame) and parses it. Errors wrap ErrMalformed, or
// ErrNotEventLog for input that is no event log.
func parse(raw []byte) (*tcg.EventLog, framing, error) {
	if len(raw) == 0 {
		return nil, framing{}, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(raw) > MaxLogBytes {
		return nil, framing{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(raw), MaxLogBytes)
	}
	body, f, err := frame(raw)
	if err != nil {
		return nil, f, err
	}
	el, err := tcg.ParseEventLog(body, tcg.ParseOpts{})
	if err != nil {
		return nil, f, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return el, f, nil
}

func replay(raw []byte, bank Bank) ([]tcg.Event, framing, error) {
	el, f, err := parse(raw)
	if err != nil {
		return nil, f, err
	}
	alg, ok := bankAlgs[bank.Hash]
	if !ok || !slices.Contains(el.Algs, alg) {
		return nil, f, &BankError{Want: bank.Hash, Have: logBanks(el)}
	}
	mrs := make([]register.MR, 0, len(bank.PCRs))
	for _, i := range sortedKeys(bank.PCRs) {
		if len(bank.PCRs[i]) != bank.Hash.Size() {
			return nil, f, fmt.Errorf("PCR %d: digest of %d bytes, want %d", i, len(bank.PCRs[i]), bank.Hash.Size())
		}
		mrs = append(mrs, register.PCR{Index: i, Digest: bank.PCRs[i], DigestAlg: bank.Hash})
	}
	// Events for PCRs outside the bank are not replayed, and Verify does not
	// return them: they cannot influence the state.
	events, err := el.Verify(mrs)
	if err != nil {
		var re tcg.ReplayError
		if errors.As(err, &re) {
			return nil, f, &ReplayError{PCRs: slices.Clone(re.InvalidMRs)}
		}
		return nil, f, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return events, f, nil
}

var bankAlgs = map[crypto.Hash]register.HashAlg{
	crypto.SHA1:   register.HashSHA1,
	crypto.SHA256: register.HashSHA256,
	crypto.SHA384: register.HashSHA384,
}

func sortedKeys(m map[int][]byte) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func hexPCRs(pcrs map[int][]byte) map[int]string {
	out := make(map[int]string, len(pcrs))
	for i, d := range pcrs {
		out[i] = hex.EncodeToString(d)
	}
	return out
}
