package eventlog

import (
	"crypto"
	"slices"

	"github.com/google/go-eventlog/tcg"
)

// Firmware quirks: known ways in which real firmware or boot loaders depart
// from the TCG PC Client Platform Firmware Profile (PFP) in what an event's
// digest covers, kept as a list of data (after go-attestation's named event
// log workarounds) instead of conditions spread through extraction. Each has
// a real log in testdata that needs it, as its test.
//
// A quirk never accepts an event for its type or its text. A quirk of a
// digest explains it by another, still exact, computation over the event's
// data, and what it lets extraction read is only what that computation
// covers; a quirk of structure explains the absence of events and is
// checked against every digest that could hide one. Extraction records each
// use (BootState.Quirks); a policy accepts only the quirks it names.

// Quirk is one known deviation.
type Quirk struct {
	Name string // stable identifier, in findings and policies
	// Description says what the firmware does and what bootgate then
	// checks instead.
	Description string
	// Seen names a real log that needs the quirk (testdata).
	Seen string
}

// Quirk names.
const (
	// QuirkVariableValueOnly: Secure Boot variable events (PCR 7) whose
	// digest is over the variable's value only, not its UEFI_VARIABLE_DATA.
	QuirkVariableValueOnly = "variable-value-only"
	// QuirkShimAuthorityLastByte: shim authority events (PCR 7) whose
	// digest leaves out the data's last byte.
	QuirkShimAuthorityLastByte = "shim-authority-short-digest"
	// QuirkSeparatorPCR7Only: firmware that measures a separator into PCR 7
	// only, none into PCRs 0–6.
	QuirkSeparatorPCR7Only = "separator-pcr7-only"
)

// Quirks lists every quirk bootgate knows.
var Quirks = []Quirk{
	{
		Name: QuirkVariableValueOnly,
		Description: "the firmware measured Secure Boot variables by the digest of their value only (the PFP has it cover the whole UEFI_VARIABLE_DATA, §10.2.6); " +
			"the value is bound to the digest, and the variable's name to its place in the PFP's order (SecureBoot, PK, KEK, db, dbx)",
		Seen: "sha1-goatt-linux_tpm12-lenovo-N1FET43W.bin (ThinkPad with a TPM 1.2)",
	},
	{
		Name: QuirkShimAuthorityLastByte,
		Description: "shim measured its authority event over the event data without its last byte, and logged bytes after the certificate that its length field does not count; " +
			"the header, the name and the certificate are bound to the digest",
		Seen: "fwupd-v2-uefi-debug-mode.bin (a Dell booting shim; also debian-10.bin)",
	},
	{
		Name: QuirkSeparatorPCR7Only,
		Description: "the firmware measured a separator into PCR 7 only, none into PCRs 0–6 (PFP §3.3.2.2 asks for one in each); " +
			"no event of PCRs 0–6 may then have a separator's digest, so a separator sent as another event still fails",
		Seen: "sha1-goatt-windows-gce-shielded-vm.bin (Windows on a 2018 cloud vTPM)",
	},
}

// KnownQuirk reports whether name is in Quirks.
func KnownQuirk(name string) bool {
	return slices.ContainsFunc(Quirks, func(q Quirk) bool { return q.Name == name })
}

// QuirkUse is one use of a quirk by a log.
type QuirkUse struct {
	Quirk  string `json:"quirk"`
	Event  int    `json:"event,omitempty"` // 0 for a quirk of the whole log
	Detail string `json:"detail"`
}

// pfpVariableOrder is the order in which the PFP (§3.3.4.8) has firmware
// measure the Secure Boot variables into PCR 7.
var pfpVariableOrder = []string{
	efiGlobalVariable + "/SecureBoot",
	efiGlobalVariable + "/PK",
	efiGlobalVariable + "/KEK",
	efiImageSecurityDB + "/db",
	efiImageSecurityDB + "/dbx",
}

// valueOnlyVariable reports whether e, the PCR 7 variable event at place
// (0 for the first EV_EFI_VARIABLE_DRIVER_CONFIG of PCR 7), is explained by
// QuirkVariableValueOnly: its data is exactly the UEFI_VARIABLE_DATA v, its
// digest is of v's value, and v names the variable the PFP puts at place.
// The digest does not cover the name; the order of extends, which the quote
// covers, does.
func valueOnlyVariable(alg crypto.Hash, e tcg.Event, v tcg.UEFIVariableData, place int) bool {
	if place >= len(pfpVariableOrder) || v.Header.VariableName.String()+"/"+v.VarName() != pfpVariableOrder[place] {
		return false
	}
	if uint64(len(e.Data)) != 32+2*v.Header.UnicodeNameLength+v.Header.VariableDataLength {
		return false
	}
	return digestOf(alg, e, v.VariableData)
}

// shimAuthorityShort reports whether e is explained by
// QuirkShimAuthorityLastByte: an authority event of shim's namespace whose
// digest is of its data without the last byte, where that byte lies after
// the variable data its header counts: the variable as the header counts
// it (what extraction reads) is all covered by the digest.
func shimAuthorityShort(alg crypto.Hash, e tcg.Event, v tcg.UEFIVariableData, parsed bool) bool {
	if !parsed || e.Type != tcg.EFIVariableAuthority || v.Header.VariableName.String() != shimLockGUID || len(e.Data) == 0 {
		return false
	}
	if uint64(len(e.Data)-1) < 32+2*v.Header.UnicodeNameLength+v.Header.VariableDataLength {
		return false
	}
	return digestOf(alg, e, e.Data[:len(e.Data)-1])
}
