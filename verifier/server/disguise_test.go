package server_test

import (
	"context"
	"testing"

	"github.com/bootgate/bootgate/internal/eventlogtest"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestDisguisedMeasurementsFailOnline is the mutation suite of
// verifier/policy through the attestation API: a simulated TPM measures the
// good log with a forbidden measurement added, so quote and PCRs are
// genuine; the host sends the log with that event disguised (another type,
// its data rewritten, its digests kept). No disguise may pass, and nothing a
// pass grants (credentials, identity, a recorded pass) may be handed out.
func TestDisguisedMeasurementsFailOnline(t *testing.T) {
	ca := tpmtest.NewCA(t)
	good, err := eventlogtest.Parse(tpmtest.EventLog(t, goodLog))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, ca.Roots())
	types := []uint32{
		0x80000003, // as measured (a boot application, an authority, ...)
		0x80000004, // EV_EFI_BOOT_SERVICES_DRIVER
		0x80000005, // EV_EFI_RUNTIME_SERVICES_DRIVER
		0x80000007, // EV_EFI_ACTION
		0x0000000d, // EV_IPL
		0x80000001, // EV_EFI_VARIABLE_DRIVER_CONFIG
		0x00000003, // EV_NO_ACTION: not extended, so the log no longer replays
	}
	var n int
	for _, m := range eventlogtest.ForbiddenMeasurements(eventlogtest.SelfSigned(t, "Untrusted Signer")) {
		t.Run(m.Name, func(t *testing.T) { // one simulator at a time
			booted, at := good.Insert(m.Event(good))
			tp := tpmtest.Simulator(t, ca)
			if _, err := tp.ReplayEventLog(booted.Bytes()); err != nil {
				t.Fatal(err)
			}
			covers := m.Covers(good)
			for i, typ := range types {
				sent := booted.Clone()
				if i > 0 {
					sent.Events[at].Type, sent.Events[at].Data = typ, covers[i%len(covers)]
				}
				rep, err := f.agent().Attest(context.Background(), tp, sent.Bytes())
				if err != nil {
					t.Fatalf("%s as 0x%08x: Attest: %v", m.Name, typ, err)
				}
				n++
				res := rep.Result
				if res.Verdict == wire.VerdictPass || res.Credentials != nil || res.Identity != nil {
					t.Errorf("%s sent as 0x%08x with data %q: verdict %s, credentials %v, identity %v",
						m.Name, typ, sent.Events[at].Data, res.Verdict, res.Credentials != nil, res.Identity != nil)
				}
				if i == 0 && !hasRule(res.Reasons, m.Rule) {
					t.Errorf("%s: reasons %+v do not name %s", m.Name, res.Reasons, m.Rule)
				}
			}
		})
	}
	if passes := countVerdict(attestations(t, f.st), wire.VerdictPass); passes != 0 {
		t.Errorf("store holds %d passes, want none", passes)
	}
	t.Logf("%d disguised attestations refused", n)
}
