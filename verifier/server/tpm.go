package server

import (
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// evaluate is the policy's verdict on verified evidence: Evaluate's
// failures on the boot state, then checkTPM's.
func evaluate(pol *policy.Policy, enr *attest.Enrollment, v *attest.Verified) []wire.Reason {
	var out []wire.Reason
	for _, f := range pol.Evaluate(v.State) {
		out = append(out, wire.Reason{Rule: f.Rule, Event: f.Event, Detail: f.Detail})
	}
	return append(out, checkTPM(pol, enr, v)...)
}

// checkTPM applies the policy's TPM rules (policy.CheckTPM: refused firmware
// versions) to a verified attestation: the manufacturer from the EK
// certificate, the firmware version from the verified quote. Its failures
// join Evaluate's.
func checkTPM(pol *policy.Policy, enr *attest.Enrollment, v *attest.Verified) []wire.Reason {
	var out []wire.Reason
	for _, f := range pol.CheckTPM(enr.TPM.VendorID(), v.FirmwareVersion, enr.FirmwareProven()) {
		out = append(out, wire.Reason{Rule: f.Rule, Event: f.Event, Detail: f.Detail})
	}
	return out
}

// tpmRecord is what the attestation records of its TPM; the firmware
// version only when the quote verified (v is nil otherwise) and shows it in
// clear.
func tpmRecord(enr *attest.Enrollment, v *attest.Verified) store.TPM {
	t := store.TPM{Manufacturer: enr.TPM.VendorID(), Model: enr.TPM.Model, Version: enr.TPM.Version}
	if v != nil && enr.FirmwareProven() {
		t.Firmware = policy.FormatFirmware(v.FirmwareVersion)
	}
	return t
}
