package eventlog

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

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

	// Authorities are the PCR 7 authority events: the certificates (from
	// db, or shim's MokList) that verified an image.
	Authorities []Authority `json:"authorities,omitempty"`
	// BootApps are the digests of PCR 4 that are neither separators nor
	// well-known actions, whatever their event type: code the boot manager
	// ran. For a boot application the digest is its Authenticode SHA-256.
	BootApps []Image `json:"boot_apps,omitempty"`
	// Actions are the well-known firmware actions, such as "UEFI Debug
	// Mode", recognised by their digest wherever they were measured.
	Actions []Action `json:"actions,omitempty"`
	// Cmdlines are the texts measured into CmdlinePCRs that their digests
	// cover: kernel command lines and GRUB's commands.
	Cmdlines []Cmdline `json:"cmdlines,omitempty"`
	// SeparatorPCRs are the PCRs among 0–7 that hold a separator.
	SeparatorPCRs []int `json:"separator_pcrs,omitempty"`

	SCRTMVersion string `json:"scrtm_version,omitempty"`
	// PaddingBytes counts the 0x00 or 0xFF bytes after the last event: a
	// log read from the firmware's log area is often padded so.
	PaddingBytes int `json:"padding_bytes,omitempty"`

	eventPCRs map[int]bool // PCRs with replayed events

	// Anomalies are structural problems with the log: events that are not
	// where the TCG specifications put them, data that does not match its
	// digest, error separators. Any anomaly fails the log.
	Anomalies []Anomaly `json:"anomalies,omitempty"`
	// Unverifiable are events in PCRs the policy judges (7 and CmdlinePCRs)
	// that replayed but whose digest bootgate cannot explain: their data is
	// not what the digest covers (a firmware or shim bug, or a forgery), or
	// it is of no kind bootgate knows. A policy passes one only if it pins
	// it exactly.
	Unverifiable []Unverified `json:"unverifiable,omitempty"`
	// ShimVariables are shim's state variables (SbatLevel, MokListTrusted),
	// which shim measures as authority events.
	ShimVariables []ShimVariable `json:"shim_variables,omitempty"`
	// Quirks are the firmware quirks (quirks.go) that explain events of
	// this log; a policy passes a log only if it accepts each.
	Quirks []QuirkUse `json:"quirks,omitempty"`

	pcr7Vars int // EV_EFI_VARIABLE_DRIVER_CONFIG events of PCR 7 so far
}

// SecureBoot is the measured value of the SecureBoot variable.
type SecureBoot struct {
	Measured bool `json:"measured"`
	Enabled  bool `json:"enabled"`
	Event    int  `json:"event,omitempty"`
	// Unverified: Event names the variable, but its digest covers neither
	// its data nor, by a known quirk, its value (a structural anomaly):
	// something was measured, and what cannot be told. Measured is false.
	Unverified bool `json:"unverified,omitempty"`
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
	// Unverified is as in SecureBoot: Event names the variable, but its
	// digest does not cover its content, which cannot be told.
	Unverified bool `json:"unverified,omitempty"`
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

// Image is a loaded boot application (a PCR 4 digest).
type Image struct {
	Event  int    `json:"event"`
	SHA256 string `json:"sha256"` // the digest, hex, in the log's bank
	Path   string `json:"path,omitempty"`
	Type   string `json:"type,omitempty"` // the event type as sent (EV_...)
}

// Action is an EV_EFI_ACTION event.
type Action struct {
	Event int    `json:"event"`
	PCR   int    `json:"pcr"`
	Text  string `json:"text"`
}

// Cmdline is a text measured into a command-line PCR.
type Cmdline struct {
	Event int    `json:"event"`
	PCR   int    `json:"pcr"`
	Text  string `json:"text"`
	// Encoding names the encoding that explains its digest
	// (cmdlineEncodings: "grub", "systemd-utf16").
	Encoding string `json:"encoding,omitempty"`
}

// Unverified is an event whose digest bootgate cannot explain. PCR, Type and
// Digest (hex, in the log's bank) are what a policy pins.
type Unverified struct {
	Event  int    `json:"event"`
	PCR    int    `json:"pcr"`
	Type   string `json:"type"`
	Digest string `json:"digest"`
	Detail string `json:"detail"`
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

// secureBootVariables are the PCR 7 configuration variables (PFP 1.05
// §3.3.4.8), by namespace and name. Each may be measured once, before the
// PCR 7 separator.
var secureBootVariables = map[string]bool{
	efiGlobalVariable + "/SecureBoot":   true,
	efiGlobalVariable + "/PK":           true,
	efiGlobalVariable + "/KEK":          true,
	efiGlobalVariable + "/DeployedMode": true,
	efiGlobalVariable + "/AuditMode":    true,
	efiImageSecurityDB + "/db":          true,
	efiImageSecurityDB + "/dbx":         true,
	efiImageSecurityDB + "/dbt":         true,
	efiImageSecurityDB + "/dbr":         true,
}

// shim's variables, which it measures into PCR 7 as authority events although
// they hold state, not certificates.
const shimLockGUID = "605dab50-e046-4300-abb6-3dd810dd8b23"

var shimStateVariables = map[string]bool{"SbatLevel": true, "MokListTrusted": true}

// extract derives the boot state from replayed events, judging each digest
// by what it is (measure.go), never by the type or data around it alone:
//
//   - an event whose type the PFP does not allow in its PCR (0–7) is an
//     anomaly;
//   - a digest of a separator value is a separator, and of a well-known
//     action string that action, in every PCR and whatever the event's type;
//     where the PFP says the digest is over the data (separators, actions,
//     Secure Boot variables), data and digest must agree;
//   - every other digest in PCR 4 is code: a boot application;
//   - every other event in PCR 7 is either a Secure Boot variable
//     (EV_EFI_VARIABLE_DRIVER_CONFIG of a variable in secureBootVariables,
//     before the separator, data bound to the digest) or an authority whose
//     data, bound to its digest, holds a certificate (or shim's state);
//     an event that is neither, but is bound, is unverifiable;
//   - every event in CmdlinePCRs must be a command-line text that its
//     digest covers (cmdlineEncodings), or it is unverifiable;
//   - every PCR among 0–7 of the bank must hold a separator that ends its
//     phase normally: a boot measures one into each (PFP §3.3.2.2), and an
//     error separator sent as another type leaves its PCR without one.
//
// Unverifiable events fail every policy that does not pin them exactly.
func extract(events []tcg.Event, bank Bank) *BootState {
	alg := bank.Hash
	st := &BootState{Events: len(events), Hash: alg}
	known := knownDigests[alg]
	dataBound := func(e tcg.Event) bool { return digestOf(alg, e, e.Data) }
	seenSep := map[int]bool{}
	seenVar := map[string]bool{}
	st.eventPCRs = map[int]bool{}
	for _, e := range events {
		st.eventPCRs[e.Index] = true
		n := int(e.Num())
		typ := EventTypeName(e.Type)
		if allowed, ok := pcrEventTypes[e.Index]; ok && !slices.Contains(allowed, e.Type) {
			st.anomaly(n, "event type %s is not allowed in PCR %d", typ, e.Index)
			continue
		}
		if e.Type == tcg.SCRTMVersion {
			st.SCRTMVersion = scrtmVersion(e.Data)
		}
		// The PFP defines the digest of these types as the digest of their data.
		if (e.Type == tcg.Separator && e.Index <= 7) || e.Type == tcg.EFIAction || e.Type == tcg.Action {
			if !dataBound(e) {
				st.anomaly(n, "%s in PCR %d: digest does not match its data", typ, e.Index)
			}
		}
		d := string(e.Digest)
		switch {
		case e.Type == tcg.Separator && e.Index <= 7:
			// By type and digest: other events of PCRs 0–6 may measure
			// four-byte values too. An event of another type in PCR 4 or 7
			// with a separator's digest is judged as code or authority below,
			// and fails there.
			switch {
			case d != known.sepOK && !known.sepError[d]:
				st.anomaly(n, "separator in PCR %d has a digest of no separator value", e.Index)
			case seenSep[e.Index]:
				st.anomaly(n, "second separator in PCR %d", e.Index)
			case known.sepError[d]:
				st.anomaly(n, "separator in PCR %d signals a firmware error", e.Index)
			}
			seenSep[e.Index] = true
			continue
		case known.action[d] != "":
			st.Actions = append(st.Actions, Action{Event: n, PCR: e.Index, Text: known.action[d]})
			continue
		}
		switch {
		case e.Index == 4:
			img := Image{Event: n, SHA256: hex.EncodeToString(e.Digest), Type: typ}
			if e.Type == tcg.EFIBootServicesApplication {
				if il, err := tcg.ParseEFIImageLoad(bytes.NewReader(e.Data)); err == nil {
					img.Path = imagePath(&il)
				}
			}
			st.BootApps = append(st.BootApps, img)
		case e.Index == 7:
			st.addPCR7(n, e, alg, seenSep[7], seenVar)
		case slices.Contains(CmdlinePCRs, e.Index):
			if t, enc, ok := cmdlineText(alg, e); ok {
				st.Cmdlines = append(st.Cmdlines, Cmdline{Event: n, PCR: e.Index, Text: t, Encoding: enc})
			} else {
				st.unverifiable(n, e, "%s in PCR %d: its digest covers no command-line encoding of its data", typ, e.Index)
			}
		}
	}
	// QuirkSeparatorPCR7Only: a separator in PCR 7, and nothing in PCRs
	// 0–6 that is or could be one.
	pcr7Only := seenSep[7] && !sepDigestIn(events, known, 0, 6)
	for i := range 7 {
		pcr7Only = pcr7Only && !seenSep[i]
	}
	for i := range 8 {
		switch _, quoted := bank.PCRs[i]; {
		case seenSep[i]:
			st.SeparatorPCRs = append(st.SeparatorPCRs, i)
		case quoted && i < 7 && pcr7Only:
		case quoted:
			st.Anomalies = append(st.Anomalies, Anomaly{Detail: fmt.Sprintf("PCR %d has no separator: the log does not record a whole boot", i)})
		}
	}
	if pcr7Only {
		var missing []int
		for i := range 7 {
			if _, quoted := bank.PCRs[i]; quoted {
				missing = append(missing, i)
			}
		}
		if len(missing) > 0 {
			// Name the PCRs the log has events for: the others hold no
			// separator either, and nothing else.
			var logged []int
			for _, e := range events {
				if e.Index >= 0 && e.Index < 7 && !slices.Contains(logged, e.Index) {
					logged = append(logged, e.Index)
				}
			}
			slices.Sort(logged)
			st.Quirks = append(st.Quirks, QuirkUse{Quirk: QuirkSeparatorPCR7Only,
				Detail: Detailf("no separator in PCRs 0–6 (the log has events for PCRs %v of them), and no event of PCRs 0–6 has a separator's digest", logged)})
		}
	}
	return st
}

// sepDigestIn reports whether an event of PCRs lo to hi has the digest of
// a separator value, whatever its type.
func sepDigestIn(events []tcg.Event, known *digests, lo, hi int) bool {
	return slices.ContainsFunc(events, func(e tcg.Event) bool {
		d := string(e.Digest)
		return e.Index >= lo && e.Index <= hi && (d == known.sepOK || known.sepError[d])
	})
}

// anomaly records a structural problem with event n; the detail is made by
// Detailf, which quotes the string arguments.
func (st *BootState) anomaly(n int, format string, args ...any) {
	st.Anomalies = append(st.Anomalies, Anomaly{Event: n, Detail: Detailf(format, args...)})
}

// unverifiable records event n, e, as one whose digest cannot be explained,
// by its PCR, type and digest; the detail is made by Detailf.
func (st *BootState) unverifiable(n int, e tcg.Event, format string, args ...any) {
	st.Unverifiable = append(st.Unverifiable, Unverified{
		Event: n, PCR: e.Index, Type: EventTypeName(e.Type), Digest: hex.EncodeToString(e.Digest),
		Detail: Detailf(format, args...),
	})
}

// addPCR7 judges a PCR 7 event that is neither a separator nor a well-known
// action (extract's doc).
func (st *BootState) addPCR7(n int, e tcg.Event, alg crypto.Hash, afterSeparator bool, seenVar map[string]bool) {
	bound := digestOf(alg, e, e.Data)
	v, perr := tcg.ParseUEFIVariableData(bytes.NewReader(e.Data))
	if e.Type == tcg.EFIVariableDriverConfig {
		place := st.pcr7Vars
		st.pcr7Vars++
		if !bound && perr == nil && valueOnlyVariable(alg, e, v, place) {
			bound = true
			st.Quirks = append(st.Quirks, QuirkUse{Quirk: QuirkVariableValueOnly, Event: n,
				Detail: Detailf("variable %s: the digest is of its value only", v.VarName())})
		}
		if !bound {
			st.anomaly(n, "variable event digest matches neither its data nor, by a known firmware quirk, its value")
			if perr == nil && secureBootVariables[v.Header.VariableName.String()+"/"+v.VarName()] {
				st.unverifiedVariable(n, v)
			}
			return
		}
		if perr != nil {
			st.anomaly(n, "unparsable UEFI variable: %v", perr)
			return
		}
		key := v.Header.VariableName.String() + "/" + v.VarName()
		if secureBootVariables[key] {
			if afterSeparator {
				st.anomaly(n, "Secure Boot variable %s measured after the PCR 7 separator", v.VarName())
			}
			if seenVar[key] {
				st.anomaly(n, "variable %s measured twice", v.VarName())
			}
			seenVar[key] = true
			st.addVariable(n, v)
			return
		}
		// Any other variable must be what an authority is.
	}
	if !bound && shimAuthorityShort(alg, e, v, perr == nil) {
		bound = true
		st.Quirks = append(st.Quirks, QuirkUse{Quirk: QuirkShimAuthorityLastByte, Event: n,
			Detail: Detailf("authority %s: the digest is of the event data without its last byte", v.VarName())})
	}
	if !bound {
		// The event replayed, so PCR 7 is right, but its data is not what
		// was measured: what it stands for cannot be told.
		st.unverifiable(n, e, "%s data does not match its digest", EventTypeName(e.Type))
		return
	}
	if perr != nil {
		st.unverifiable(n, e, "%s in PCR 7 is neither a Secure Boot variable, a known action nor an authority", EventTypeName(e.Type))
		return
	}
	if v.Header.VariableName.String() == shimLockGUID && shimStateVariables[v.VarName()] {
		sum := sha256.Sum256(v.VariableData)
		st.ShimVariables = append(st.ShimVariables, ShimVariable{Event: n, Name: v.VarName(), SHA256: hex.EncodeToString(sum[:])})
		return
	}
	c, err := authorityCert(v.VariableData)
	if err != nil {
		st.anomaly(n, "authority event for %s: %v", v.VarName(), err)
		return
	}
	st.Authorities = append(st.Authorities, Authority{Event: n, Variable: v.VarName(), Cert: c})
}

// variable returns the field of BootState that holds the Secure Boot
// variable v (nil for SecureBoot and for variables it does not hold).
func (st *BootState) variable(v tcg.UEFIVariableData) *Variable {
	switch guid, name := v.Header.VariableName.String(), v.VarName(); {
	case guid == efiGlobalVariable && name == "PK":
		return &st.PK
	case guid == efiGlobalVariable && name == "KEK":
		return &st.KEK
	case guid == efiImageSecurityDB && name == "db":
		return &st.DB
	case guid == efiImageSecurityDB && name == "dbx":
		return &st.DBX
	}
	return nil
}

// unverifiedVariable notes that event n names the Secure Boot variable v
// although its digest does not cover it, unless the variable was measured
// verifiably already.
func (st *BootState) unverifiedVariable(n int, v tcg.UEFIVariableData) {
	if v.Header.VariableName.String() == efiGlobalVariable && v.VarName() == "SecureBoot" {
		if !st.SecureBoot.Measured && st.SecureBoot.Event == 0 {
			st.SecureBoot = SecureBoot{Event: n, Unverified: true}
		}
		return
	}
	if t := st.variable(v); t != nil && t.Event == 0 {
		*t = Variable{Event: n, Unverified: true}
	}
}

func (st *BootState) addVariable(n int, v tcg.UEFIVariableData) {
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
			sum := sha256.Sum256(v.VariableData)
			st.anomaly(n, "SecureBoot variable has an invalid value: %d bytes, SHA-256 %s (want one byte, 0 or 1)", len(v.VariableData), hex.EncodeToString(sum[:]))
		}
		return
	default:
		if target = st.variable(v); target == nil {
			return
		}
	}
	sum := sha256.Sum256(v.VariableData)
	*target = Variable{Present: len(v.VariableData) > 0, Event: n, SHA256: hex.EncodeToString(sum[:])}
	if len(v.VariableData) == 0 {
		return
	}
	certs, hashes, other, err := parseSignatureLists(v.VariableData)
	if err != nil {
		st.anomaly(n, "variable %s: %v", name, err)
		return
	}
	target.Certs, target.Hashes, target.OtherEntries = certs, hashes, other
}

// grubPrefixes are the prefixes GRUB writes before the text it measures
// into PCR 8 (upstream "kernel_cmdline: ", "module_cmdline: ", "grub_cmd: ";
// RHEL and Fedora "grub_kernel_cmdline ", "grub_cmd "). The digest covers
// the text after the prefix, with or without its NUL.
var grubPrefixes = []string{"kernel_cmdline: ", "module_cmdline: ", "grub_cmd: ", "grub_kernel_cmdline ", "grub_cmd "}

// cmdlineEncoding is one way a supported boot loader measures a kernel
// command line (or a command) as text into a command-line PCR.
type cmdlineEncoding struct {
	name string // in Cmdline.Encoding
	pcrs []int  // the PCRs it measures into
	// text returns the text e's digest covers, and false when this
	// encoding does not explain e's digest.
	text func(alg crypto.Hash, e tcg.Event) (string, bool)
}

// cmdlineEncodings are the encodings extraction explains command-line PCR
// events by, as data; an event none of them explains is unverifiable.
//
//   - "grub" (PCR 8): data is a prefix of grubPrefixes, the text and a NUL;
//     the digest is over the text, with or without its NUL.
//   - "systemd-utf16" (systemd-boot in PCR 8, systemd-stub in PCR 12): data
//     is the load options as UTF-16LE, with or without a terminator (and,
//     from some boot loaders, a stray odd byte after it); the digest is over
//     the data as sent, over the text and its UTF-16 terminator, or over the
//     text alone (older versions).
var cmdlineEncodings = []cmdlineEncoding{
	{name: "grub", pcrs: []int{8}, text: grubText},
	{name: "systemd-utf16", pcrs: []int{8, 12}, text: systemdText},
}

// cmdlineText returns the text that e's digest covers, and the name of the
// encoding (cmdlineEncodings) that explains it. The text must be text:
// GRUB's bytes without control characters other than tab and line ends;
// systemd's UTF-16 within Latin-1 (decodeLatin1UTF16). Otherwise, and when
// no encoding explains the digest, ok is false: the event is unverifiable.
// A text is returned as the kernel would receive it: GRUB's bytes as they
// are, UTF-16 as UTF-8 (as the EFI stub converts it).
func cmdlineText(alg crypto.Hash, e tcg.Event) (text, encoding string, ok bool) {
	for _, c := range cmdlineEncodings {
		if !slices.Contains(c.pcrs, e.Index) {
			continue
		}
		if t, ok := c.text(alg, e); ok {
			return t, c.name, true
		}
	}
	return "", "", false
}

// grubText is the "grub" encoding of cmdlineEncodings.
func grubText(alg crypto.Hash, e tcg.Event) (string, bool) {
	for _, p := range grubPrefixes {
		t, found := bytes.CutPrefix(e.Data, []byte(p))
		if !found {
			continue
		}
		t = bytes.TrimSuffix(t, []byte{0})
		if (digestOf(alg, e, t) || digestOf(alg, e, t, 0)) && isText(t) {
			return string(t), true
		}
	}
	return "", false
}

// systemdText is the "systemd-utf16" encoding of cmdlineEncodings.
func systemdText(alg crypto.Hash, e tcg.Event) (string, bool) {
	data := e.Data
	u := data
	if len(u)%2 == 1 && u[len(u)-1] == 0 {
		u = u[:len(u)-1] // some boot loaders add a stray terminating byte
	}
	if len(u) < 2 || len(u)%2 != 0 {
		return "", false
	}
	body := u
	for len(body) >= 2 && body[len(body)-2] == 0 && body[len(body)-1] == 0 {
		body = body[:len(body)-2]
	}
	if !digestOf(alg, e, data) && !digestOf(alg, e, body) && !digestOf(alg, e, body, 0, 0) {
		return "", false
	}
	return decodeLatin1UTF16(body)
}

// decodeLatin1UTF16 decodes UTF-16LE load options whose every code unit is
// Latin-1 text (U+0020–U+007E, U+00A0–U+00FF, or tab), as kernel command
// lines are; valid is false otherwise. Binary data of even length decodes
// as UTF-16 of something, so wider text is not taken for a command line:
// it is unverifiable, and a policy must pin it.
func decodeLatin1UTF16(b []byte) (s string, valid bool) {
	rs := make([]rune, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := rune(b[i]) | rune(b[i+1])<<8
		if c != '\t' && (c < 0x20 || c >= 0x7f && c < 0xa0 || c > 0xff) {
			return "", false
		}
		rs = append(rs, c)
	}
	return string(rs), true
}

// isText reports whether b holds no control characters other than tab and
// line ends (GRUB measures a menuentry command with its body): text a boot
// loader would measure as a command. Bytes above 0x7F are kept as they are;
// the kernel reads bytes.
func isText(b []byte) bool {
	for _, c := range b {
		if c != '\t' && c != '\n' && c != '\r' && (c < 0x20 || c == 0x7f) {
			return false
		}
	}
	return true
}

// digestOf reports whether e's digest is alg's digest of data followed by
// tail.
func digestOf(alg crypto.Hash, e tcg.Event, data []byte, tail ...byte) bool {
	if len(e.Digest) != alg.Size() {
		return false
	}
	if alg == crypto.SHA256 && len(tail) == 0 {
		sum := sha256.Sum256(data)
		return bytes.Equal(sum[:], e.Digest)
	}
	h := alg.New()
	h.Write(data)
	h.Write(tail)
	var buf [64]byte
	return bytes.Equal(h.Sum(buf[:0]), e.Digest)
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
// scrtmVersion shows an EV_S_CRTM_VERSION event's data, which the PFP
// (§10.4.4, Table 9) gives as a UCS-2 string or, for some firmware, a GUID:
// the text when it reads as printable text, "GUID " and the registry form
// (EFI_GUID byte order) for 16 bytes that do not, else "0x" and hex of at
// most the first 32 bytes with the length.
func scrtmVersion(b []byte) string {
	if t := decodeText(b); t != "" && printable(t) {
		return t
	}
	if len(b) == 16 {
		return fmt.Sprintf("GUID %08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(b[0:4]),
			binary.LittleEndian.Uint16(b[4:6]), binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
	}
	if len(b) > 32 {
		return fmt.Sprintf("0x%x… (%d bytes)", b[:32], len(b))
	}
	return fmt.Sprintf("0x%x", b)
}

// printable reports whether s is valid UTF-8 of printable characters and
// spaces only.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			return false
		}
	}
	return true
}

func decodeText(b []byte) string {
	if len(b) >= 2 && b[1] == 0 {
		return decodeUTF16(b)
	}
	return strings.TrimRight(string(b), "\x00")
}
