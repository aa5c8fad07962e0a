package eventlog

import (
	"crypto"
	"fmt"

	"github.com/google/go-eventlog/tcg"
)

// This file holds, as data, what bootgate knows of the measurements a
// firmware and a boot loader make, so that extraction can judge each digest by
// what it is. An event's type and data are not covered by the quote; only its
// digest is. So:
//
//   - which event types may appear in a PCR is a table (pcrEventTypes), after
//     the TCG PC Client Platform Firmware Profile (PFP) 1.05, §10.4.1 and
//     §3.3.4; an event of another type there is a structural anomaly;
//   - the firmware's well-known actions (§10.4.4) are recognised by the
//     digest of their defined strings, whatever the event's type and text;
//   - a separator is recognised by the digest of its defined values (§3.3.2);
//   - every other digest in PCR 4 is code, and every other digest in PCR 7
//     must be a Secure Boot variable or an authority (extract's doc);
//   - in the command-line PCRs, a digest is explained only by one of the
//     encodings in cmdlineEncodings; an unexplained one is unverifiable.

// Event type names as the PFP spells them, for findings and pins.
var eventTypeNames = map[tcg.EventType]string{
	tcg.PrebootCert:                "EV_PREBOOT_CERT",
	tcg.PostCode:                   "EV_POST_CODE",
	tcg.NoAction:                   "EV_NO_ACTION",
	tcg.Separator:                  "EV_SEPARATOR",
	tcg.Action:                     "EV_ACTION",
	tcg.EventTag:                   "EV_EVENT_TAG",
	tcg.SCRTMContents:              "EV_S_CRTM_CONTENTS",
	tcg.SCRTMVersion:               "EV_S_CRTM_VERSION",
	tcg.CPUMicrocode:               "EV_CPU_MICROCODE",
	tcg.PlatformConfigFlags:        "EV_PLATFORM_CONFIG_FLAGS",
	tcg.TableOfDevices:             "EV_TABLE_OF_DEVICES",
	tcg.CompactHash:                "EV_COMPACT_HASH",
	tcg.Ipl:                        "EV_IPL",
	tcg.IplPartitionData:           "EV_IPL_PARTITION_DATA",
	tcg.NonhostCode:                "EV_NONHOST_CODE",
	tcg.NonhostConfig:              "EV_NONHOST_CONFIG",
	tcg.NonhostInfo:                "EV_NONHOST_INFO",
	tcg.OmitBootDeviceEvents:       "EV_OMIT_BOOT_DEVICE_EVENTS",
	tcg.EFIVariableDriverConfig:    "EV_EFI_VARIABLE_DRIVER_CONFIG",
	tcg.EFIVariableBoot:            "EV_EFI_VARIABLE_BOOT",
	tcg.EFIBootServicesApplication: "EV_EFI_BOOT_SERVICES_APPLICATION",
	tcg.EFIBootServicesDriver:      "EV_EFI_BOOT_SERVICES_DRIVER",
	tcg.EFIRuntimeServicesDriver:   "EV_EFI_RUNTIME_SERVICES_DRIVER",
	tcg.EFIGPTEvent:                "EV_EFI_GPT_EVENT",
	tcg.EFIAction:                  "EV_EFI_ACTION",
	tcg.EFIPlatformFirmwareBlob:    "EV_EFI_PLATFORM_FIRMWARE_BLOB",
	tcg.EFIHandoffTables:           "EV_EFI_HANDOFF_TABLES",
	tcg.EFIPlatformFirmwareBlob2:   "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
	tcg.EFIHandoffTables2:          "EV_EFI_HANDOFF_TABLES2",
	tcg.EFIVariableBoot2:           "EV_EFI_VARIABLE_BOOT2",
	tcg.EFIHCRTMEvent:              "EV_EFI_HCRTM_EVENT",
	tcg.EFIVariableAuthority:       "EV_EFI_VARIABLE_AUTHORITY",
	evEFISPDMFirmwareBlob:          "EV_EFI_SPDM_FIRMWARE_BLOB",
	evEFISPDMFirmwareConfig:        "EV_EFI_SPDM_FIRMWARE_CONFIG",
}

// PFP 1.06 event types that go-eventlog does not name.
const (
	evEFISPDMFirmwareBlob   tcg.EventType = 0x800000E1
	evEFISPDMFirmwareConfig tcg.EventType = 0x800000E2
)

// EventTypeName returns the PFP name of an event type (EV_...), or its
// number in hex for a type the PFP does not define.
func EventTypeName(t tcg.EventType) string {
	if n, ok := eventTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("0x%08x", uint32(t))
}

// EventTypeByName is EventTypeName's inverse; ok is false for a name that is
// neither a PFP name nor a 0x-prefixed 32-bit hex number.
func EventTypeByName(name string) (t tcg.EventType, ok bool) {
	for t, n := range eventTypeNames {
		if n == name {
			return t, true
		}
	}
	var v uint32
	if _, err := fmt.Sscanf(name, "0x%08x", &v); err == nil && name == fmt.Sprintf("0x%08x", v) {
		return tcg.EventType(v), true
	}
	return 0, false
}

// pcrEventTypes are, for the PCRs that the PFP defines (0–7), the event types
// that may be extended into each (PFP 1.05 §10.4.1 Table 9, §3.3.4.1–8).
// EV_NO_ACTION is not extended and appears nowhere here.
var pcrEventTypes = map[int][]tcg.EventType{
	// Platform firmware: S-CRTM, POST code, embedded option ROMs, SPDM.
	0: {tcg.PostCode, tcg.Separator, tcg.Action, tcg.EventTag, tcg.SCRTMContents, tcg.SCRTMVersion,
		tcg.CPUMicrocode, tcg.TableOfDevices, tcg.NonhostCode, tcg.NonhostConfig, tcg.NonhostInfo,
		tcg.EFIPlatformFirmwareBlob, tcg.EFIPlatformFirmwareBlob2, tcg.EFIHandoffTables,
		tcg.EFIHandoffTables2, tcg.EFIHCRTMEvent, tcg.EFIAction, tcg.PrebootCert,
		evEFISPDMFirmwareBlob, evEFISPDMFirmwareConfig},
	// Platform configuration.
	1: {tcg.Separator, tcg.Action, tcg.EventTag, tcg.CPUMicrocode, tcg.PlatformConfigFlags,
		tcg.TableOfDevices, tcg.NonhostConfig, tcg.EFIVariableDriverConfig, tcg.EFIVariableBoot,
		tcg.EFIVariableBoot2, tcg.EFIHandoffTables, tcg.EFIHandoffTables2, tcg.EFIAction,
		evEFISPDMFirmwareConfig},
	// Option ROM and driver code.
	2: {tcg.Separator, tcg.Action, tcg.EventTag, tcg.CompactHash, tcg.NonhostCode, tcg.NonhostInfo,
		tcg.EFIBootServicesDriver, tcg.EFIRuntimeServicesDriver, tcg.EFIBootServicesApplication,
		tcg.EFIPlatformFirmwareBlob, tcg.EFIPlatformFirmwareBlob2, tcg.EFIGPTEvent, tcg.EFIAction,
		evEFISPDMFirmwareBlob},
	// Option ROM configuration.
	3: {tcg.Separator, tcg.Action, tcg.EventTag, tcg.NonhostConfig, tcg.EFIVariableDriverConfig,
		tcg.EFIAction, evEFISPDMFirmwareConfig},
	// Boot manager code and boot attempts.
	4: {tcg.Separator, tcg.Action, tcg.EventTag, tcg.CompactHash, tcg.Ipl, tcg.OmitBootDeviceEvents,
		tcg.EFIBootServicesApplication, tcg.EFIAction},
	// Boot manager configuration, GPT, ExitBootServices.
	5: {tcg.Separator, tcg.Action, tcg.EventTag, tcg.IplPartitionData, tcg.EFIVariableBoot,
		tcg.EFIVariableBoot2, tcg.EFIGPTEvent, tcg.EFIAction, tcg.EFIHandoffTables,
		tcg.EFIHandoffTables2},
	// Platform-manufacturer specific.
	6: {tcg.Separator, tcg.Action, tcg.EventTag, tcg.CompactHash, tcg.EFIAction},
	// Secure Boot policy.
	7: {tcg.Separator, tcg.EFIAction, tcg.EFIVariableDriverConfig, tcg.EFIVariableAuthority},
}

// CmdlinePCRs are the PCRs into which supported boot loaders measure the
// kernel command line as text: GRUB and systemd-boot use PCR 8, systemd-stub
// PCR 12. Every event there must be explained by cmdlineEncodings, or be
// pinned by the policy.
var CmdlinePCRs = []int{8, 12}

// Well-known firmware action strings (PFP 1.05 §10.4.4), measured as the
// digest of the string without a terminator.
const (
	ActionDebugMode     = "UEFI Debug Mode"
	ActionDMADisabled   = "DMA Protection Disabled"
	ActionCallingEFIApp = "Calling EFI Application from Boot Option"
)

// knownActions lists the well-known action strings, each with whether it
// reports a debug control.
var knownActions = []string{
	ActionCallingEFIApp,
	"Returning from EFI Application from Boot Option",
	"Exit Boot Services Invocation",
	"Exit Boot Services Returned with Failure",
	"Exit Boot Services Returned with Success",
	ActionDebugMode,
	ActionDMADisabled,
}

// Separator values (PFP 1.05 §3.3.2.2): 0 ends a phase normally; 1 and
// 0xFFFFFFFF report an error.
var (
	separatorOK     = []byte{0, 0, 0, 0}
	separatorErrors = [][]byte{{1, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff}}
)

// digests maps a bank's digest of each well-known value to what it is.
type digests struct {
	action   map[string]string // digest → action string
	sepOK    string
	sepError map[string]bool
}

var knownDigests = map[crypto.Hash]*digests{}

func init() {
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384} {
		d := &digests{action: map[string]string{}, sepError: map[string]bool{}}
		sum := func(b []byte) string {
			x := h.New()
			x.Write(b)
			return string(x.Sum(nil))
		}
		for _, a := range knownActions {
			d.action[sum([]byte(a))] = a
		}
		d.sepOK = sum(separatorOK)
		for _, s := range separatorErrors {
			d.sepError[sum(s)] = true
		}
		knownDigests[h] = d
	}
}
