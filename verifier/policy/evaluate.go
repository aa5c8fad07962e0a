package policy

import (
	"crypto"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/bootgate/bootgate/verifier/eventlog"
)

// Rule names, stable identifiers carried in verdicts and incidents.
const (
	RuleLogStructure       = "log.structure"
	RulePCRBank            = "log.pcr_bank"
	RuleQuirk              = "log.quirk"
	RuleLogUnverifiable    = "log.unverifiable_events"
	RuleSecureBootEnabled  = "secure_boot.enabled"
	RulePK                 = "secure_boot.pk"
	RuleKEK                = "secure_boot.kek"
	RuleDB                 = "secure_boot.db"
	RuleDBX                = "secure_boot.dbx"
	RuleDebugMode          = "debug.uefi_debug_mode"
	RuleDMAProtection      = "debug.dma_protection"
	RuleUnverifiedBootApps = "debug.unverified_boot_apps"
	RuleCmdline            = "debug.cmdline"
	RuleBootApp            = "code_integrity.boot_app"
	RuleRevokedBootApp     = "code_integrity.revoked_boot_app"
	RuleSigner             = "code_integrity.signer"
	RuleRevokedSigner      = "code_integrity.revoked_signer"
	RuleFirmware           = "firmware.pcr0"
)

// Failure is one failed rule, naming the offending event where there is one.
// Its Detail is at most eventlog.MaxDetailBytes (and a clipping marker):
// text from the log in it is escaped and clipped (eventlog.Detailf), and
// no event data is dumped into it.
type Failure struct {
	Rule   string `json:"rule"`
	Event  int    `json:"event,omitempty"`
	Detail string `json:"detail"`
}

func (f Failure) String() string {
	if f.Event > 0 {
		return fmt.Sprintf("%s: event %d: %s", f.Rule, f.Event, f.Detail)
	}
	return fmt.Sprintf("%s: %s", f.Rule, f.Detail)
}

// MaxFailuresPerRule bounds the failures Evaluate names for one rule; more
// are summed up in one last failure of that rule.
const MaxFailuresPerRule = 16

// Evaluate checks a verified boot state against the policy and returns every
// failed rule; an empty result is a pass. It never stops at the first failure,
// so that an incident names everything that is wrong, with one exception: a
// log replayed in another PCR bank than the policy's fails log.pcr_bank
// alone, since none of its digests can be compared with the policy's.
func (p *Policy) Evaluate(st *eventlog.BootState) (out []Failure) {
	if st.Hash != p.Bank() {
		return []Failure{BankFailure(p, st.Hash)}
	}
	perRule := map[string]int{}
	fail := func(rule string, event int, format string, args ...any) {
		// A log can repeat one fault many times; the first MaxFailuresPerRule
		// are named, and the rest counted.
		if perRule[rule]++; perRule[rule] > MaxFailuresPerRule {
			return
		}
		// Details quote text from the log: Detailf escapes and clips it.
		out = append(out, Failure{Rule: rule, Event: event, Detail: eventlog.Detailf(format, args...)})
	}
	defer func() {
		for _, rule := range slices.Sorted(maps.Keys(perRule)) {
			if n := perRule[rule] - MaxFailuresPerRule; n > 0 {
				out = append(out, Failure{Rule: rule, Detail: fmt.Sprintf("and %d more failures of this rule", n)})
			}
		}
	}()

	for _, a := range st.Anomalies {
		fail(RuleLogStructure, a.Event, "%s", eventlog.Text(a.Detail))
	}
	for _, u := range st.Unverifiable {
		if !p.Log.pins(u) {
			fail(RuleLogUnverifiable, u.Event, "%s (PCR %d, %s, digest %s; not pinned)", eventlog.Text(u.Detail), u.PCR, u.Type, u.Digest)
		}
	}
	for _, q := range st.Quirks {
		if !slices.Contains(p.Log.Quirks, q.Quirk) {
			fail(RuleQuirk, q.Event, "%s, by the known firmware quirk %s, which the policy does not accept (log.quirks)", q.Detail, q.Quirk)
		}
	}

	sb := st.SecureBoot
	if !p.SecureBoot.AllowDisabled {
		switch {
		case !sb.Measured && sb.Unverified:
			fail(RuleSecureBootEnabled, sb.Event, "the SecureBoot variable's event has a digest that covers neither its data nor, by a known firmware quirk, its value: what it measured cannot be told")
		case !sb.Measured:
			fail(RuleSecureBootEnabled, 0, "the log has no event that measured the SecureBoot variable")
		case !sb.Enabled:
			fail(RuleSecureBootEnabled, sb.Event, "Secure Boot is disabled")
		}
	}
	p.checkKeySet(RulePK, "PK", p.SecureBoot.PK, st.PK, fail)
	p.checkKeySet(RuleKEK, "KEK", p.SecureBoot.KEK, st.KEK, fail)
	p.checkKeySet(RuleDB, "db", p.SecureBoot.DB, st.DB, fail)
	if len(p.SecureBoot.DBXMustContain) > 0 {
		have := map[string]bool{}
		for _, h := range st.DBX.Hashes {
			have[h] = true
		}
		for _, c := range st.DBX.Certs {
			have[c.SHA256] = true
		}
		var missing int
		first := ""
		for _, want := range p.SecureBoot.DBXMustContain {
			if !have[want] {
				if missing == 0 {
					first = want
				}
				missing++
			}
		}
		switch {
		case !st.DBX.Present:
			fail(RuleDBX, st.DBX.Event, "dbx is empty or was not measured; %d required revocations missing", missing)
		case missing > 0:
			fail(RuleDBX, st.DBX.Event, "dbx lacks %d required revocations (first: %s)", missing, first)
		}
	}

	for _, a := range st.Actions {
		switch a.Text {
		case eventlog.ActionDebugMode:
			if !p.Debug.AllowUEFIDebugMode {
				fail(RuleDebugMode, a.Event, "firmware reports %q", a.Text)
			}
		case eventlog.ActionDMADisabled:
			if !p.Debug.AllowDMAProtectionDisabled {
				fail(RuleDMAProtection, a.Event, "firmware reports %q", a.Text)
			}
		}
	}
	if sb.Enabled && !p.Debug.AllowUnverifiedBootApps && !slices.ContainsFunc(st.Authorities, func(a eventlog.Authority) bool { return a.Variable == "db" }) {
		ev := 0
		if len(st.BootApps) > 0 {
			ev = st.BootApps[0].Event
		}
		fail(RuleUnverifiedBootApps, ev, "Secure Boot is on but no db authority verified a boot application")
	}
	forbidden := p.forbidden
	if forbidden.names == nil { // a Policy not made by Parse
		forbidden = newForbiddenSet(append(slices.Clone(BuiltinForbiddenCmdline), p.Debug.ForbiddenCmdline...))
	}
	for _, c := range st.Cmdlines {
		var seen map[string]bool
		eachCmdlineWord(c.Text, func(tok string) {
			if w, ok := forbidden.match(tok); ok && !seen[w] {
				if seen == nil {
					seen = map[string]bool{}
				}
				seen[w] = true
				fail(RuleCmdline, c.Event, "kernel command line in PCR %d enables a debugger: %q (%s)", c.PCR, tok, w)
			}
		})
	}

	ci := p.CodeIntegrity
	if !ci.AllowAnyBootApp && len(st.BootApps) == 0 {
		fail(RuleBootApp, 0, "no boot application was measured into PCR 4, so none can be checked against the policy's %d", len(ci.BootApps))
	}
	if len(ci.Signers) > 0 && len(st.Authorities) == 0 {
		fail(RuleSigner, 0, "no authority event shows which key verified the boot applications, so none can be checked against the policy's %d signers", len(ci.Signers))
	}
	for _, app := range st.BootApps {
		if slices.Contains(ci.RevokedBootApps, app.SHA256) {
			fail(RuleRevokedBootApp, app.Event, "boot application %s (%s) is revoked", app.SHA256, appName(app))
			continue
		}
		if !ci.AllowAnyBootApp && !slices.ContainsFunc(ci.BootApps, func(b BootApp) bool { return b.digest(st.Hash) == app.SHA256 }) {
			fail(RuleBootApp, app.Event, "boot application %s (%s) is not allowed", app.SHA256, appName(app))
		}
	}
	for _, a := range st.Authorities {
		if slices.Contains(ci.RevokedSigners, a.Cert.SHA256) {
			fail(RuleRevokedSigner, a.Event, "revoked signer %s (%s) verified an image", a.Cert.SHA256, a.Cert.Subject)
			continue
		}
		if !ci.AllowAnySigner && !slices.Contains(ci.Signers, a.Cert.SHA256) {
			fail(RuleSigner, a.Event, "signer %s (%s) from %s is not trusted", a.Cert.SHA256, a.Cert.Subject, a.Variable)
		}
	}

	if !p.Firmware.AllowAny {
		if v, ok := st.PCRs[0]; !ok {
			fail(RuleFirmware, 0, "PCR 0 has no value to check: the quote does not cover it, or, offline, the log has no event for it")
		} else if !slices.Contains(p.Firmware.PCR0, v) {
			fail(RuleFirmware, 0, "PCR 0 is %s, not an allowed firmware", v)
		}
	}
	return out
}

// BankFailure is the one failure of a log replayed in (or only carrying)
// the PCR bank have against a policy of another bank.
func BankFailure(p *Policy, have crypto.Hash) Failure {
	return Failure{Rule: RulePCRBank, Detail: fmt.Sprintf(
		"the log was replayed in the %v PCR bank, the policy describes the %v bank (pcr_bank: %s): no digest of one can be compared with the other's",
		have, p.Bank(), BankName(p.Bank()))}
}

func (p *Policy) checkKeySet(rule, name string, k KeySet, v eventlog.Variable, fail func(string, int, string, ...any)) {
	if k.AllowAny {
		return
	}
	if v.Unverified {
		fail(rule, v.Event, "%s's event has a digest that covers neither its data nor, by a known firmware quirk, its value: its content cannot be told", name)
		return
	}
	if !v.Present {
		fail(rule, v.Event, "%s is empty or was not measured", name)
		return
	}
	if slices.Contains(k.Digests, v.SHA256) {
		return
	}
	if len(k.Certs) > 0 && len(v.Hashes) == 0 && v.OtherEntries == 0 && sameSet(k.Certs, v.Certs) {
		return
	}
	fail(rule, v.Event, "%s content %s (%d certificates: %s) is not the policy's", name, v.SHA256, len(v.Certs), subjects(v.Certs))
}

func sameSet(want []string, have []eventlog.Cert) bool {
	got := map[string]bool{}
	for _, c := range have {
		got[c.SHA256] = true
	}
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if !got[w] {
			return false
		}
	}
	return true
}

func subjects(cs []eventlog.Cert) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.Subject
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, "; ")
}

// appName names a PCR 4 measurement for a finding: the path the host sent
// (not covered by the digest), and its event type where that is not a boot
// application's.
func appName(app eventlog.Image) string {
	name := "no path"
	if app.Path != "" {
		name = "path as sent: " + app.Path
	}
	if app.Type != "" && app.Type != "EV_EFI_BOOT_SERVICES_APPLICATION" {
		name += ", sent as " + app.Type
	}
	return name
}

// eachCmdlineWord calls fn with each word of a command line as the kernel's
// parser (lib/cmdline.c next_arg, with lib/ctype.c's isspace) finds
// parameters in it: split at the bytes it takes for spaces (tab to carriage
// return, space, and 0xA0 — also where 0xA0 is a byte of a UTF-8
// character), and, to be safe, at NULs, other control characters, invalid
// bytes and Unicode spaces too. Leading quotes are dropped (the kernel
// accepts "name=value" in quotes). It does not allocate.
func eachCmdlineWord(s string, fn func(word string)) {
	start := -1
	emit := func(end int) {
		if start >= 0 {
			if w := strings.TrimLeft(s[start:end], "\""); w != "" {
				fn(w)
			}
			start = -1
		}
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		sep := r == 0xa0 || r == utf8.RuneError || unicode.IsSpace(r) || unicode.IsControl(r) ||
			size > 1 && strings.IndexByte(s[i:i+size], 0xa0) >= 0
		if sep {
			emit(i)
		} else if start < 0 {
			start = i
		}
		i += size
	}
	emit(len(s))
}

// forbiddenSet holds forbidden kernel parameters as the kernel compares
// parameter names (kernel/params.c parameq: '-' and '_' alike): a word
// forbids a parameter of that name, word=value forbids that value.
type forbiddenSet struct {
	names  map[string]string // normalised name → as the policy says it
	values map[string]string // normalised name=value → as the policy says it
}

func newForbiddenSet(words []string) forbiddenSet {
	f := forbiddenSet{names: map[string]string{}, values: map[string]string{}}
	for _, w := range words {
		name, value, hasValue := strings.Cut(w, "=")
		name = normName(name)
		if hasValue {
			f.values[name+"="+value] = w
		} else {
			f.names[name] = w
		}
	}
	return f
}

func normName(name string) string {
	if strings.IndexByte(name, '-') >= 0 {
		return strings.ReplaceAll(name, "-", "_")
	}
	return name
}

// match reports whether the parameter tok (name or name=value) is
// forbidden, also as a module parameter of the same name ("kgdboc.kgdboc",
// which kgdboc accepts).
func (f forbiddenSet) match(tok string) (string, bool) {
	name, value, hasValue := strings.Cut(tok, "=")
	name = normName(name)
	try := func(nm string) (string, bool) {
		if w, ok := f.names[nm]; ok {
			return w, true
		}
		if hasValue && len(f.values) > 0 {
			if w, ok := f.values[nm+"="+value]; ok {
				return w, true
			}
		}
		return "", false
	}
	if w, ok := try(name); ok {
		return w, true
	}
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		return try(name[i+1:])
	}
	return "", false
}
