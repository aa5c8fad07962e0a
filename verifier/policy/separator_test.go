package policy

import (
	"testing"

	"github.com/bootgate/bootgate/internal/eventlogtest"
)

// A firmware that measured an error separator (0xFFFFFFFF, PFP 1.05
// §3.3.2.2) into a PCR among 1–3, 5, 6 fails log.structure; the host sends
// that event retyped as another event type allowed in the PCR, and the log
// then shows no separator for that PCR: it must still fail.
func TestErrorSeparatorRetyped(t *testing.T) {
	l, pol := rhel8(t)
	for _, pcr := range []uint32{1, 2, 3, 5, 6} {
		at := l.Index(func(e eventlogtest.Event) bool { return e.PCR == pcr && e.Type == eventlogtest.EvSeparator })
		if at < 0 {
			t.Fatalf("no separator in PCR %d", pcr)
		}
		errSep := []byte{0xff, 0xff, 0xff, 0xff}
		booted := l.Clone()
		booted.Events[at] = l.Event(pcr, eventlogtest.EvSeparator, errSep, errSep)
		b := booted.Bytes()
		st, err := judge(b, b)
		if err != nil {
			t.Fatal(err)
		}
		if f := pol.Evaluate(st); !hasFailure(f, RuleLogStructure) {
			t.Fatalf("PCR %d: an error separator passes: %v", pcr, f)
		}
		sent := booted.Clone()
		sent.Events[at].Type = eventlogtest.EvEFIAction // data stays 0xFFFFFFFF: bound
		st, err = judge(b, sent.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if f := pol.Evaluate(st); len(f) == 0 {
			t.Errorf("PCR %d: the error separator sent as EV_EFI_ACTION passes", pcr)
		}
	}
}
