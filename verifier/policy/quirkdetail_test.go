package policy

import (
	"os"
	"strings"
	"testing"

	"github.com/bootgate/bootgate/internal/eventlogtest"
	"github.com/bootgate/bootgate/verifier/eventlog"
)

// A host names the variable of a shim authority event that uses the
// short-digest quirk. The quirk's detail, and learn's note that copies it,
// must carry that name escaped and clipped: no terminal escape, no
// bidirectional override, nothing longer than a detail may be.
func TestQuirkDetailEscapesVariableName(t *testing.T) {
	raw, err := os.ReadFile("../../testdata/eventlogs/rhel8-uefi.bin")
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlogtest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	name := "\x1b]0;owned\x07\x1b[2J\u202e" + strings.Repeat("A", 1500)
	booted, _ := l.Insert(l.ShimAuthority(name, eventlogtest.SelfSigned(t, "x")))
	st, err := judge(booted.Bytes(), booted.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	var details []string
	for _, q := range st.Quirks {
		if q.Quirk == eventlog.QuirkShimAuthorityLastByte {
			details = append(details, q.Detail)
		}
	}
	if len(details) != 1 {
		t.Fatalf("quirk uses %+v, want one %s", st.Quirks, eventlog.QuirkShimAuthorityLastByte)
	}
	_, notes, err := Learn("x", st, LearnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var quirkNotes int
	for _, n := range notes {
		if strings.Contains(n, eventlog.QuirkShimAuthorityLastByte) {
			quirkNotes++
			details = append(details, n)
		}
	}
	if quirkNotes != 1 {
		t.Fatalf("notes %q: want one for the quirk", notes)
	}
	for _, d := range details {
		if strings.ContainsAny(d, "\x1b\x07\u202e") || len(d) > eventlog.MaxDetailBytes {
			t.Errorf("%d bytes, raw control or override characters: %q", len(d), d)
		}
	}
}
