package policy

import (
	"slices"

	"github.com/bootgate/bootgate/verifier/eventlog"
)

// PCRs returns the PCR indices (sorted, no duplicates; of the policy's bank)
// whose events
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
//   - eventlog.CmdlinePCRs (8, GRUB's and systemd-boot's command lines;
//     12, systemd-stub's), every event of which must be explained or pinned
//     (debug.cmdline, log.unverifiable_events).
//
// PCRs 1 and 2 (firmware configuration and option ROMs) are not read today.
// This list must be kept in step with Evaluate: a rule that starts reading
// another PCR adds it here.
func (p *Policy) PCRs() []int {
	out := append([]int{4, 7}, eventlog.CmdlinePCRs...)
	if !p.Firmware.AllowAny {
		out = append(out, 0)
	}
	slices.Sort(out)
	return out
}
