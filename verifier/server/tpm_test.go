package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestTPMFirmwareRefused: each attestation records its TPM's manufacturer
// and model (EK certificate); a policy that refuses firmware versions of
// that manufacturer fails the host with tpm.firmware unless the quote
// proves the firmware is not among them. The agent's AK is a primary key
// of the owner hierarchy, whose quotes obfuscate firmwareVersion: the
// version is not proven, not recorded, and the host fails closed.
func TestTPMFirmwareRefused(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)

	f := newFixture(t, ca.Roots())
	rep, err := f.agent().Attest(context.Background(), tp, raw)
	if err != nil || rep.Result.Verdict != wire.VerdictPass {
		t.Fatalf("Attest = %+v, %v; want a pass", rep, err)
	}
	a, err := f.st.Attestation(context.Background(), rep.Result.AttestationID)
	if err != nil {
		t.Fatal(err)
	}
	// tpmtest's EK certificates name manufacturer "BOOT" (id:424F4F54).
	if a.TPM != (store.TPM{Manufacturer: "BOOT", Model: "bootgate simulator", Version: "id:00010002"}) {
		t.Fatalf("recorded TPM %+v, want the EK certificate's attributes and no (obfuscated) firmware", a.TPM)
	}

	for _, c := range []struct {
		manufacturer string
		fail         bool
	}{{"BOOT", true}, {"IFX", false}} {
		src := fmt.Sprintf("%s\ntpm:\n  refused_firmware:\n    - {manufacturer: %s, versions: [\"7.40\"], reason: test advisory}\n", f.pol.Source(), c.manufacturer)
		pol, err := policy.Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		g := newFixture(t, ca.Roots(), func(o *server.Options) { o.Policy = pol })
		rep, err = g.agent().Attest(context.Background(), tp, raw)
		if err != nil {
			t.Fatal(err)
		}
		if !c.fail {
			if rep.Result.Verdict != wire.VerdictPass {
				t.Errorf("refused firmware of another manufacturer: %+v, want a pass", rep.Result)
			}
			continue
		}
		i := slices.IndexFunc(rep.Result.Reasons, func(r wire.Reason) bool { return r.Rule == policy.RuleTPMFirmware })
		if rep.Result.Verdict != wire.VerdictFail || i < 0 {
			t.Fatalf("Attest with BOOT firmware refused = %+v, want a fail for %s", rep.Result, policy.RuleTPMFirmware)
		}
		wantFailRecorded(t, g, rep.Result, policy.RuleTPMFirmware, 0)
	}
}
