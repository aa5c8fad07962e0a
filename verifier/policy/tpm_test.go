package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const tpmBase = `name: x
secure_boot:
  pk: {allow_any: true}
  kek: {allow_any: true}
  db: {allow_any: true}
code_integrity:
  allow_any_boot_app: true
  allow_any_signer: true
firmware:
  allow_any: true
`

func TestCheckTPM(t *testing.T) {
	p, err := Parse([]byte(tpmBase + `tpm:
  refused_firmware:
    - {manufacturer: IFX, versions: ["4.34", "7.40", "6.40.190"], reason: "CVE-2017-15361 (ROCA)"}
`))
	if err != nil {
		t.Fatal(err)
	}
	fw := func(a, b, c, d uint64) uint64 { return a<<48 | b<<32 | c<<16 | d }
	for _, c := range []struct {
		name, manufacturer string
		firmware           uint64
		fail               bool
		unproven           bool
	}{
		{"refused major.minor", "IFX", fw(7, 40, 2098, 0), true, false},
		{"refused, longer prefix", "IFX", fw(6, 40, 190, 7), true, false},
		{"same prefix, other build", "IFX", fw(6, 40, 191, 0), false, false},
		{"fixed firmware", "IFX", fw(7, 85, 4555, 0), false, false},
		{"whole components only", "IFX", fw(7, 400, 0, 0), false, false},
		{"other manufacturer", "NTC", fw(7, 40, 0, 0), false, false},
		{"unknown manufacturer fails closed", "", fw(7, 85, 0, 0), true, false},
		{"unproven firmware fails closed", "IFX", fw(7, 85, 0, 0), true, true},
		{"unproven firmware, manufacturer without refusals", "STM", fw(7, 40, 0, 0), false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := p.CheckTPM(c.manufacturer, c.firmware, !c.unproven)
			if c.fail != (len(f) > 0) || slices.ContainsFunc(f, func(f Failure) bool { return f.Rule != RuleTPMFirmware }) {
				t.Fatalf("CheckTPM(%q, %s) = %v, want fail %v", c.manufacturer, FormatFirmware(c.firmware), f, c.fail)
			}
			if c.fail && c.manufacturer != "" && !c.unproven && !strings.Contains(f[0].Detail, "ROCA") {
				t.Errorf("detail %q does not give the reason", f[0].Detail)
			}
		})
	}
	// Without refused versions nothing is checked, also without a manufacturer.
	q, err := Parse([]byte(tpmBase))
	if err != nil {
		t.Fatal(err)
	}
	if f := q.CheckTPM("", 0, false); len(f) != 0 {
		t.Errorf("no tpm section: %v", f)
	}
}

func TestTPMSectionRefused(t *testing.T) {
	for _, c := range []struct{ name, yaml string }{
		{"unknown field", "tpm: {refused_firmwares: []}\n"},
		{"unknown nested field", "tpm: {refused_firmware: [{manufacturer: IFX, versions: [\"7.40\"], cve: x}]}\n"},
		{"no manufacturer", "tpm: {refused_firmware: [{versions: [\"7.40\"]}]}\n"},
		{"no versions", "tpm: {refused_firmware: [{manufacturer: IFX}]}\n"},
		{"bad version", "tpm: {refused_firmware: [{manufacturer: IFX, versions: [\"7.x\"]}]}\n"},
		{"too many components", "tpm: {refused_firmware: [{manufacturer: IFX, versions: [\"1.2.3.4.5\"]}]}\n"},
		{"component too large", "tpm: {refused_firmware: [{manufacturer: IFX, versions: [\"70000\"]}]}\n"},
	} {
		if _, err := Parse([]byte(tpmBase + c.yaml)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", c.name, err)
		}
	}
}
