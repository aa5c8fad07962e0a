package softtpm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
)

// Replay computes the SHA-256 PCR values a raw TCG crypto-agile event log
// describes, as firmware extending its events into a TPM from reset leaves
// them: every event but EV_NO_ACTION extends its SHA-256 digest into its
// PCR, in log order, from zero. It refuses what a PCR extend cannot
// reproduce from zero (a StartupLocality other than 0, an H-CRTM event), an
// event for a PCR above 15 and an event without a SHA-256 digest, as
// agent/tpm's ReplayEventLog does. The result maps each PCR 0–15 to its
// value (zero for PCRs without events).
func Replay(raw []byte) (map[int][]byte, error) {
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		return nil, fmt.Errorf("replay event log: %w", err)
	}
	var pcrs [16][sha256.Size]byte
	for i, ev := range el.Events(register.HashSHA256) {
		switch {
		case ev.Type == tcg.NoAction:
			if ev.Index == 0 && len(ev.Data) == 17 && bytes.HasPrefix(ev.Data, []byte("StartupLocality")) && ev.Data[16] != 0 {
				return nil, fmt.Errorf("replay event log: event %d: StartupLocality %d", i+1, ev.Data[16])
			}
			continue
		case ev.Type == tcg.EFIHCRTMEvent:
			return nil, fmt.Errorf("replay event log: event %d: H-CRTM event", i+1)
		case ev.Index < 0 || ev.Index >= len(pcrs):
			return nil, fmt.Errorf("replay event log: event %d: PCR %d", i+1, ev.Index)
		case len(ev.Digest) != sha256.Size:
			return nil, errors.New("replay event log: an event has no SHA-256 digest")
		}
		h := sha256.New()
		h.Write(pcrs[ev.Index][:])
		h.Write(ev.Digest)
		h.Sum(pcrs[ev.Index][:0])
	}
	out := make(map[int][]byte, len(pcrs))
	for i := range pcrs {
		out[i] = bytes.Clone(pcrs[i][:])
	}
	return out, nil
}
