package eventlog

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"unicode/utf16"

	"github.com/google/go-eventlog/tcg"
)

// BootState is what a replayed event log proves about one boot. Event numbers
// refer to the log's own sequence numbers, so that every finding can name the
// event it came from. A BootState may be shared between attestations of hosts
// with identical logs: treat it as read-only.
type BootState struct {
	LogSHA256 [32]byte       `json:"-"`
	Hash      crypto.Hash    `json:"-"`      // the PCR bank the log was replayed in
	Events    int            `json:"events"` // replayed events
	PCRs      map[int]string `json:"pcrs"`   // hex SHA-256 values the quote vouched for

	SecureBoot SecureBoot `json:"secure_boot"`
	PK         Variable   `json:"pk"`
	KEK        Variable   `json:"kek"`
	DB         Variable   `json:"db"`
	DBX        Variable   `json:"dbx"`

	// Authorities are the EV_EFI_VARIABLE_AUTHORITY events: the certificates
	// (from db, or shim's MokList) that verified an image.
	Authorities []Authority `json:"authorities,omitempty"`
	// BootApps are the EV_EFI_BOOT_SERVICES_APPLICATION events of PCR 4; the
	// digest is the image's Authenticode SHA-256.
	BootApps []Image `json:"boot_apps,omitempty"`
	// Actions are the EV_EFI_ACTION strings, such as "UEFI Debug Mode".
	Actions []Action `json:"actions,omitempty"`
	// Cmdlines are kernel command lines measured as text (GRUB's PCR 8).
	Cmdlines []Cmdline `json:"cmdlines,omitempty"`

	SCRTMVersion string `json:"scrtm_version,omitempty"`

	eventPCRs map[int]bool // PCRs with replayed events

	// Anomalies are structural problems with the log: events that are not
	// where the TCG specifications put them, data that does not match its
	// digest, error separators. Any anomaly fails the log.
	Anomalies []Anomaly `json:"anomalies,omitempty"`
	// Unverifiable are events that replayed but whose data is not what their
	// digest covers (a firmware or shim bug): their data is ignored.
	Unverifiable []Anomaly `json:"unverifiable,omitempty"`
	// ShimVariables are shim's state variables (SbatLevel, MokListTrusted),
	// which shim measures as authority events.
	ShimVariables []ShimVariable `json:"shim_variables,omitempty"`
}

// SecureBoot is the measured value of the SecureBoot variable.
type SecureBoot struct {
	Measured bool `json:"measured"`
	Enabled  bool `json:"enabled"`
	Event    int  `json:"event,omitempty"`
}

// Variable is one measured Secure Boot variable (PK, KEK, db or dbx).
type Variable struct {
	Present bool     `json:"present"`
	Event   int      `json:"event,omitempty"`
	SHA256  string   `json:"sha256,omitempty"` // of the variable's data
	Certs   []Cert   `json:"certs,omitempty"`
	Hashes  []string `json:"hashes,omitempty"` // EFI_CERT_SHA256 entries, hex
	// OtherEntries counts entries of other signature types (RSA2048, SHA-1, ...).
	OtherEntries int `json:"other_entries,omitempty"`
}

// Cert names an X.509 certificate by its subject and SHA-256 fingerprint.
type Cert struct {
	Subject string `json:"subject"`
	SHA256  string `json:"sha256"`
}

// Authority is one image-verification authority event.
type Authority struct {
	Event    int    `json:"event"`
	Variable string `json:"variable"` // "db", "MokList", "Shim", ...
	Cert     Cert   `json:"cert"`
}

// ShimVariable is one of shim's state variables.
type ShimVariable struct {
	Event  int    `json:"event"`
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// Image is a loaded boot application.
type Image struct {
	Event  int    `json:"event"`
	SHA256 string `json:"sha256"`
	Path   string `json:"path,omitempty"`
}

// Action is an EV_EFI_ACTION event.
type Action struct {
	Event int    `json:"event"`
	PCR   int    `json:"pcr"`
	Text  string `json:"text"`
}

// Cmdline is a kernel command line found in the log.
type Cmdline struct {
	Event int    `json:"event"`
	Text  string `json:"text"`
}

// Anomaly is a structural problem with the log.
type Anomaly struct {
	Event  int    `json:"event,omitempty"`
	Detail string `json:"detail"`
}

// Well-known EFI variable namespaces.
const (
	efiGlobalVariable  = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
	efiImageSecurityDB = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
)

// shim's variables, which it measures into PCR 7 as authority events although
// they hold state, not certificates.
const shimLockGUID = "605dab50-e046-4300-abb6-3dd810dd8b23"

var shimStateVariables = map[string]bool{"SbatLevel": true, "MokListTrusted": true}

// Action strings with a meaning for the policy.
const (
	ActionDebugMode     = "UEFI Debug Mode"
	ActionDMADisabled   = "DMA Protection Disabled"
	ActionCallingEFIApp = "Calling EFI Application from Boot Option"
)

// pcr7Types are the event types the PC Client specification allows in PCR 7.
var pcr7Types = map[tcg.EventType]bool{
	tcg.EFIVariableDriverConfig: true,
	tcg.EFIVariableAuthority:    true,
	tcg.Separator:               true,
	tcg.EFIAction:               true,
}

func extract(events []tcg.Event, alg crypto.Hash) *BootState {
	st := &BootState{Events: len(events), Hash: alg}
	dataBound := func(e tcg.Event) bool { return digestOf(alg, e, e.Data) }
	seenSep := map[int]bool{}
	seenVar := map[string]bool{}
	st.eventPCRs = map[int]bool{}
	for _, e := range events {
		st.eventPCRs[e.Index] = true
		n := int(e.Num())
		anomaly := func(format string, args ...any) {
			st.Anomalies = append(st.Anomalies, Anomaly{Event: n, Detail: fmt.Sprintf(format, args...)})
		}
		if e.Index == 7 && !pcr7Types[e.Type] {
			anomaly("event type %s is not allowed in PCR 7", e.Type)
			continue
		}
		switch e.Type {
		case tcg.Separator:
			if e.Index <= 7 {
				if seenSep[e.Index] {
					anomaly("second separator in PCR %d", e.Index)
				}
				seenSep[e.Index] = true
				if !bytes.Equal(e.Data, []byte{0, 0, 0, 0}) {
					anomaly("separator in PCR %d signals a firmware error (data %x)", e.Index, e.Data)
				}
				if !dataBound(e) {
					anomaly("separator in PCR %d: digest does not match its data", e.Index)
				}
			}
		case tcg.EFIVariableDriverConfig:
			if e.Index != 7 {
				break // PCR 1 configuration variables are covered by PCR values only
			}
			if seenSep[7] {
				anomaly("Secure Boot variable measured after the PCR 7 separator")
			}
			if !dataBound(e) {
				anomaly("variable event digest does not match its data")
				continue
			}
			v, err := tcg.ParseUEFIVariableData(bytes.NewReader(e.Data))
			if err != nil {
				anomaly("unparsable UEFI variable: %v", err)
				continue
			}
			key := v.Header.VariableName.String() + "/" + v.VarName()
			if seenVar[key] {
				anomaly("variable %s measured twice", v.VarName())
			}
			seenVar[key] = true
			st.addVariable(n, v, anomaly)
		case tcg.EFIVariableAuthority:
			if e.Index != 7 {
				break
			}
			if !dataBound(e) {
				// The event replayed, so PCR 7 is right, but its data is not
				// what was measured: ignore the data, and say so.
				st.Unverifiable = append(st.Unverifiable, Anomaly{Event: n, Detail: "authority event data does not match its digest"})
				continue
			}
			v, err := tcg.ParseUEFIVariableData(bytes.NewReader(e.Data))
			if err != nil {
				anomaly("unparsable authority event: %v", err)
				continue
			}
			if v.Header.VariableName.String() == shimLockGUID && shimStateVariables[v.VarName()] {
				sum := sha256.Sum256(v.VariableData)
				st.ShimVariables = append(st.ShimVariables, ShimVariable{Event: n, Name: v.VarName(), SHA256: hex.EncodeToString(sum[:])})
				continue
			}
			c, err := authorityCert(v.VariableData)
			if err != nil {
				anomaly("authority event for %s: %v", v.VarName(), err)
				continue
			}
			st.Authorities = append(st.Authorities, Authority{Event: n, Variable: v.VarName(), Cert: c})
		case tcg.EFIBootServicesApplication:
			if e.Index != 4 {
				break
			}
			img := Image{Event: n, SHA256: hex.EncodeToString(e.Digest)}
			if il, err := tcg.ParseEFIImageLoad(bytes.NewReader(e.Data)); err == nil {
				img.Path = imagePath(&il)
			}
			st.BootApps = append(st.BootApps, img)
		case tcg.EFIAction:
			st.Actions = append(st.Actions, Action{Event: n, PCR: e.Index, Text: string(e.Data)})
		case tcg.SCRTMVersion:
			st.SCRTMVersion = decodeText(e.Data)
		case tcg.Ipl:
			st.addCmdline(n, e, alg)
		}
	}
	if st.SecureBoot.Enabled && !seenSep[7] {
		st.Anomalies = append(st.Anomalies, Anomaly{Detail: "PCR 7 has no separator"})
	}
	return st
}

func (st *BootState) addVariable(n int, v tcg.UEFIVariableData, anomaly func(string, ...any)) {
	guid, name := v.Header.VariableName.String(), v.VarName()
	var target *Variable
	switch {
	case guid == efiGlobalVariable && name == "SecureBoot":
		st.SecureBoot = SecureBoot{Measured: true, Event: n}
		switch {
		case len(v.VariableData) == 0:
			// An absent variable is measured with no data: Secure Boot is off.
		case len(v.VariableData) == 1 && v.VariableData[0] <= 1:
			st.SecureBoot.Enabled = v.VariableData[0] == 1
		default:
			anomaly("SecureBoot variable has invalid value %x", v.VariableData)
		}
		return
	case guid == efiGlobalVariable && name == "PK":
		target = &st.PK
	case guid == efiGlobalVariable && name == "KEK":
		target = &st.KEK
	case guid == efiImageSecurityDB && name == "db":
		target = &st.DB
	case guid == efiImageSecurityDB && name == "dbx":
		target = &st.DBX
	default:
		return
	}
	sum := sha256.Sum256(v.VariableData)
	*target = Variable{Present: len(v.VariableData) > 0, Event: n, SHA256: hex.EncodeToString(sum[:])}
	if len(v.VariableData) == 0 {
		return
	}
	certs, hashes, other, err := parseSignatureLists(v.VariableData)
	if err != nil {
		anomaly("variable %s: %v", name, err)
		return
	}
	target.Certs, target.Hashes, target.OtherEntries = certs, hashes, other
}

// cmdlineFormats are the ways boot loaders record the kernel command line as
// text in an EV_IPL event, as data: the PCR, a prefix that marks the event, and
// whether the text is UTF-16. The digest must cover the command line (with or
// without the prefix, with or without a terminating NUL); otherwise the text
// could say anything and is ignored as unverifiable.
var cmdlineFormats = []struct {
	id     string
	pcrs   []int
	prefix string
	utf16  bool
}{
	{id: "grub", pcrs: []int{8}, prefix: "kernel_cmdline: "},
	{id: "grub-rhel", pcrs: []int{8}, prefix: "grub_kernel_cmdline "},
	// systemd-boot and systemd-stub measure the load options, UTF-16.
	{id: "systemd", pcrs: []int{8, 12}, utf16: true},
}

// addCmdline records a kernel command line from a text event.
func (st *BootState) addCmdline(n int, e tcg.Event, alg crypto.Hash) {
	for _, f := range cmdlineFormats {
		if !slices.Contains(f.pcrs, e.Index) {
			continue
		}
		var text string
		if f.utf16 {
			if !looksUTF16(e.Data) {
				continue
			}
			text = decodeUTF16(e.Data)
		} else {
			t := strings.TrimRight(string(e.Data), "\x00")
			if !strings.HasPrefix(t, f.prefix) {
				continue
			}
			text = strings.TrimPrefix(t, f.prefix)
		}
		covered := digestOf(alg, e, e.Data) || digestOf(alg, e, []byte(text)) ||
			digestOf(alg, e, append([]byte(text), 0)) || digestOf(alg, e, bytes.TrimRight(e.Data, "\x00"))
		if !covered && f.utf16 {
			covered = digestOf(alg, e, append(bytes.Clone(e.Data), 0, 0))
		}
		if !covered {
			// The event replayed but its text is not what was measured (older
			// systemd-boot measures another buffer): the text cannot be
			// trusted, so it is ignored, and the policy must allow that.
			st.Unverifiable = append(st.Unverifiable, Anomaly{Event: n, Detail: fmt.Sprintf("kernel command line text (%s format) is not what its digest covers", f.id)})
			return
		}
		st.Cmdlines = append(st.Cmdlines, Cmdline{Event: n, Text: text})
		return
	}
}

// looksUTF16 reports whether b is plausibly a little-endian UTF-16 string of
// printable ASCII, as load options are.
func looksUTF16(b []byte) bool {
	if len(b)%2 == 1 && b[len(b)-1] == 0 {
		b = b[:len(b)-1] // some boot loaders add a stray terminating byte
	}
	if len(b) < 4 || len(b)%2 != 0 {
		return false
	}
	for i := 0; i+1 < len(b); i += 2 {
		if b[i+1] != 0 {
			return false
		}
		if c := b[i]; c == 0 {
			return i > 0
		} else if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

func digestOf(alg crypto.Hash, e tcg.Event, data []byte) bool {
	h := alg.New()
	h.Write(data)
	return bytes.Equal(h.Sum(nil), e.Digest)
}

// imagePath renders the file-path nodes of an image's device path.
func imagePath(il *tcg.EFIImageLoad) string {
	elems, err := il.DevicePath()
	if err != nil {
		return ""
	}
	var parts []string
	for _, el := range elems {
		const mediaDevice, filePath = 0x04, 0x04
		if el.Type == mediaDevice && el.Subtype == filePath {
			parts = append(parts, strings.Trim(decodeUTF16(el.Data), "\\"))
		}
	}
	return strings.Join(parts, "\\")
}

func decodeUTF16(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := uint16(b[i]) | uint16(b[i+1])<<8
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// decodeText reads firmware version strings, which are UTF-16 on most UEFI
// platforms and ASCII on some.
func decodeText(b []byte) string {
	if len(b) >= 2 && b[1] == 0 {
		return decodeUTF16(b)
	}
	return strings.TrimRight(string(b), "\x00")
}
