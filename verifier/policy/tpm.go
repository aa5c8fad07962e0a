package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// RuleTPMFirmware fails a TPM whose firmware version the policy refuses.
const RuleTPMFirmware = "tpm.firmware"

// TPM constrains the TPM itself (the `tpm:` section). It is checked by
// CheckTPM, which the attestation server calls beside Evaluate: the facts
// it needs (manufacturer from the EK certificate, firmware from the quote)
// are not in the boot state.
type TPM struct {
	// RefusedFirmware lists TPM firmware with known vulnerabilities, per
	// manufacturer; a TPM running one of them fails tpm.firmware.
	RefusedFirmware []RefusedFirmware `yaml:"refused_firmware,omitempty"`
}

// RefusedFirmware is one manufacturer's refused firmware versions.
type RefusedFirmware struct {
	// Manufacturer is the TCG vendor ID (TCG Vendor ID Registry) as in
	// the EK certificate: "IFX", "NTC", "STM", "INTC", "AMD", ...
	Manufacturer string `yaml:"manufacturer"`
	// Versions are dotted firmware versions in FormatFirmware's form; a
	// version refuses every firmware it is a prefix of, by whole
	// components: "7.40" refuses 7.40.2098.0 but not 7.41 or 7.400.
	Versions []string `yaml:"versions"`
	// Reason says why, e.g. "CVE-2017-15361 (ROCA)"; shown in failures.
	Reason string `yaml:"reason,omitempty"`
}

// validate checks the tpm: section (Policy.validate calls it; the policy's
// decoder already refuses unknown fields, in this section as everywhere).
func (t *TPM) validate() []error {
	var errs []error
	for i, r := range t.RefusedFirmware {
		if strings.TrimSpace(r.Manufacturer) == "" || len(r.Manufacturer) > 4 {
			errs = append(errs, fmt.Errorf("tpm.refused_firmware[%d].manufacturer: %q is not a TCG vendor ID (1 to 4 characters)", i, r.Manufacturer))
		}
		if len(r.Versions) == 0 {
			errs = append(errs, fmt.Errorf("tpm.refused_firmware[%d].versions: none given", i))
		}
		for j, v := range r.Versions {
			if _, ok := parseVersion(v); !ok {
				errs = append(errs, fmt.Errorf("tpm.refused_firmware[%d].versions[%d]: %q is not 1 to 4 dotted numbers below 65536", i, j, v))
			}
		}
	}
	return errs
}

// FormatFirmware writes a TPMS_ATTEST firmwareVersion (TPM 2.0 Part 2,
// section 10.12.12: TPM_PT_FIRMWARE_VERSION_1 in the upper 32 bits,
// TPM_PT_FIRMWARE_VERSION_2 in the lower) as its four 16-bit halves, most
// significant first. An Infineon TPM with firmware 7.85 has
// TPM_PT_FIRMWARE_VERSION_1 0x00070055: its version reads "7.85.x.y".
func FormatFirmware(v uint64) string {
	return fmt.Sprintf("%d.%d.%d.%d", v>>48, v>>32&0xffff, v>>16&0xffff, v&0xffff)
}

func parseVersion(s string) ([]uint16, bool) {
	parts := strings.Split(s, ".")
	if len(parts) == 0 || len(parts) > 4 {
		return nil, false
	}
	out := make([]uint16, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return nil, false
		}
		out[i] = uint16(n)
	}
	return out, true
}

// Why a TPM's firmware could not be checked, in tpm.firmware failures.
var (
	ErrManufacturerUnknown = errors.New("the TPM's manufacturer is unknown (no EK certificate names it)")
	ErrFirmwareNotProven   = errors.New("the TPM's firmware version is not proven: the quote obfuscates it, as a TPM does for an AK outside the endorsement and platform hierarchies")
)

// CheckTPM checks a TPM's firmware against the policy's refused versions:
// manufacturer is its TCG vendor ID from the EK certificate ("" if
// unknown); firmware its TPMS_ATTEST firmwareVersion from a verified quote,
// proven when the quote shows it in clear (attest.Enrollment.FirmwareProven).
// It returns a tpm.firmware failure for a refused version and, failing
// closed, when the refused versions cannot be ruled out: an unknown
// manufacturer while any version is refused, or unproven firmware of a
// manufacturer with refused versions. An empty result is a pass. The
// attestation server appends these to Evaluate's.
func (p *Policy) CheckTPM(manufacturer string, firmware uint64, proven bool) []Failure {
	if len(p.TPM.RefusedFirmware) == 0 {
		return nil
	}
	fw := FormatFirmware(firmware)
	if manufacturer == "" {
		return []Failure{{Rule: RuleTPMFirmware, Detail: fmt.Sprintf("%v; its firmware cannot be checked against the refused versions", ErrManufacturerUnknown)}}
	}
	have := []uint16{uint16(firmware >> 48), uint16(firmware >> 32), uint16(firmware >> 16), uint16(firmware)}
	var out []Failure
	for _, r := range p.TPM.RefusedFirmware {
		if !strings.EqualFold(r.Manufacturer, manufacturer) {
			continue
		}
		if !proven {
			out = append(out, Failure{Rule: RuleTPMFirmware, Detail: fmt.Sprintf("%v; manufacturer %s has refused firmware versions", ErrFirmwareNotProven, r.Manufacturer)})
			continue
		}
		for _, v := range r.Versions {
			want, _ := parseVersion(v)
			if slices.Equal(have[:len(want)], want) {
				detail := fmt.Sprintf("TPM firmware %s of manufacturer %s is refused (version %s)", fw, r.Manufacturer, v)
				if r.Reason != "" {
					detail += ": " + r.Reason
				}
				out = append(out, Failure{Rule: RuleTPMFirmware, Detail: detail})
			}
		}
	}
	return out
}
