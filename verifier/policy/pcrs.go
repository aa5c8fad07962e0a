package policy

import "slices"

// PCRs returns the SHA-256 PCR indices (sorted, no duplicates) whose events
// or values Evaluate reads for this policy. A quote that leaves one of them
// out gives the corresponding rule nothing to check, so the appliance refuses
// to start when its quoted PCRs do not cover them (config.CheckQuotedPCRs).
//
// Following the TCG PC Client Platform Firmware Profile (section 3.3.4, PCR
// usage) and the boot loaders' own conventions:
//   - 0, firmware code (firmware.pcr0), unless firmware.allow_any;
//   - 4, boot applications (code_integrity.boot_app, revoked_boot_app);
//   - 7, Secure Boot state, PK/KEK/db/dbx, the authorities that verified
//     images, and the firmware's debug and DMA actions;
//   - 8 and 9, GRUB's command line and the files it loads, and 12,
//     systemd-boot's and systemd-stub's load options (debug.cmdline).
//
// PCRs 1 and 2 (firmware configuration and option ROMs) are not read today.
// This list must be kept in step with Evaluate: a rule that starts reading
// another PCR adds it here.
func (p *Policy) PCRs() []int {
	out := []int{4, 7, 8, 9, 12}
	if !p.Firmware.AllowAny {
		out = append(out, 0)
	}
	slices.Sort(out)
	return out
}
