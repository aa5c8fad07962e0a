package store

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bootgate/bootgate/verifier/wire"
)

// hostileText is what a host or a certificate may put in a string the
// store writes to a text column: a NUL byte, which PostgreSQL's text type
// cannot hold, and bytes that are not UTF-8, which a UTF-8 database
// refuses.
const hostileText = "evil\x00issuer \xff\xfe end"

// storedSafely reports whether s is text both databases hold: valid UTF-8
// without NUL.
func storedSafely(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// testHostileText: an admitted host's failing attestation whose EK
// issuer, TPM attributes, reasons and policy name carry NUL bytes and
// invalid UTF-8 is recorded (the host quarantined, an incident opened),
// as are audit entries and incident notes carrying them: no write fails
// on its content, and what is read back is text either database holds.
func testHostileText(t *testing.T, open opener) {
	s := open(t)
	ctx := context.Background()
	record(t, s, attestation("host-a", wire.VerdictPass, 0))

	a := attestation("host-a", wire.VerdictFail, 1)
	a.PolicyName = "policy " + hostileText
	a.PolicyDigest = "sha256:" + hostileText
	a.Reasons = []wire.Reason{{Rule: "rule " + hostileText, Detail: "detail " + hostileText}}
	a.TPM = TPM{Manufacturer: hostileText, Model: hostileText, Version: hostileText, Firmware: hostileText}
	inc, err := s.Record(ctx, a, Host{ID: "host-a", EKType: "rsa", EKIssuer: "CN=" + hostileText})
	if err != nil {
		t.Fatalf("Record of a failing attestation with NUL and invalid UTF-8: %v", err)
	}
	if inc == 0 {
		t.Errorf("Record opened no incident")
	}
	h, err := s.Host(ctx, "host-a")
	if err != nil {
		t.Fatal(err)
	}
	if h.State != HostQuarantined || h.LastAttestationID != a.ID {
		t.Errorf("host after the failing attestation: %+v; want quarantined by attestation %d", h, a.ID)
	}
	if !storedSafely(h.EKIssuer) || !strings.Contains(h.EKIssuer, "evil") {
		t.Errorf("EKIssuer read back as %q", h.EKIssuer)
	}
	got, err := s.Attestation(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"policy name": got.PolicyName, "policy digest": got.PolicyDigest} {
		if !storedSafely(v) || !strings.Contains(v, "evil") {
			t.Errorf("%s read back as %q", name, v)
		}
	}
	if len(got.Reasons) != 1 || !strings.Contains(got.Reasons[0].Detail, "evil") {
		t.Errorf("reasons read back as %+v", got.Reasons)
	}
	if !strings.Contains(got.TPM.Manufacturer, "evil") {
		t.Errorf("TPM read back as %+v", got.TPM)
	}

	if err := s.RecordAction(ctx, "local:"+hostileText, "operator-issue", "target "+hostileText, "detail "+hostileText); err != nil {
		t.Fatalf("RecordAction with NUL and invalid UTF-8: %v", err)
	}
	if err := s.Act(ctx, inc, "local:root", IncidentAction{Kind: "note", Text: "note " + hostileText}); err != nil {
		t.Fatalf("a note with NUL and invalid UTF-8: %v", err)
	}
	audit, err := s.ListAudit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range audit {
		for _, v := range []string{e.Actor, e.Action, e.Target, e.Detail} {
			if !storedSafely(v) {
				t.Errorf("audit entry %d read back with %q", e.ID, v)
			}
		}
		found = found || strings.HasPrefix(e.Detail, "detail evil")
	}
	if !found {
		t.Errorf("the audit entry with hostile text is missing: %+v", audit)
	}
	_, notes, err := s.Incident(ctx, inc)
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) == 0 || !storedSafely(notes[len(notes)-1].Text) || !strings.Contains(notes[len(notes)-1].Text, "evil") {
		t.Errorf("notes read back as %+v", notes)
	}

	// The admission path: an admitted host's failure applied (Apply),
	// with the hostile EK issuer and a failing rule carrying it.
	record(t, s, attestation("host-b", wire.VerdictPass, 2))
	failures := []wire.Reason{{Rule: "rule " + hostileText, Detail: hostileText}}
	d, rev := decide(t, s, "host-b", failures)
	b := attestation("host-b", "", 3)
	b.PolicyName = hostileText
	if _, err := s.Apply(ctx, d, rev, b, Host{EKType: "rsa", EKIssuer: hostileText}); err != nil {
		t.Fatalf("Apply of a failure with NUL and invalid UTF-8: %v", err)
	}
	if h, err := s.Host(ctx, "host-b"); err != nil || h.State != HostQuarantined || !storedSafely(h.EKIssuer) {
		t.Errorf("host-b after the failure applied: %+v, %v; want quarantined, its EK issuer stored safely", h, err)
	}
}
