package policy

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/bootgate/bootgate/verifier/eventlog"
)

// LearnOptions are the allowances Learn may write where the known-good log
// measured nothing for a rule. Each is off by default: without it, Learn
// refuses such a log and says which option would allow it.
type LearnOptions struct {
	// AllowSecureBootOff writes secure_boot.allow_disabled for a log that
	// booted with Secure Boot off (or never measured it).
	AllowSecureBootOff bool
	// AllowAnyBootApp writes allow_any_boot_app for a log with no boot
	// application in PCR 4.
	AllowAnyBootApp bool
	// AllowEmptyKeys writes allow_any for PK, KEK or db, and an empty
	// dbx_must_contain, when the log shows them empty or unmeasured.
	AllowEmptyKeys bool
	// AllowUnverifiedBootApps writes allow_unverified_boot_apps (and
	// allow_any_signer) for a Secure Boot log in which no db authority
	// verified a boot application.
	AllowUnverifiedBootApps bool
	// AllowDebug writes the debug allowances for "UEFI Debug Mode" and
	// "DMA Protection Disabled" when the log reports them.
	AllowDebug bool
	// AllowSHA1 writes pcr_bank: sha1 for a log replayed in the SHA-1
	// bank (Policy.PCRBank documents the risk).
	AllowSHA1 bool
}

// ErrNotReference reports a log that cannot serve as a reference for Learn.
var ErrNotReference = errors.New("not a reference log")

// Learn derives the narrowest policy that st passes: this firmware, these
// Secure Boot keys, this dbx, these boot applications and signers, and each
// event bootgate cannot explain pinned exactly (PCR, type, digest), so that
// any other unexplained event fails. It never widens in silence: where the
// log measured nothing for a rule (no boot application, empty key
// databases, no authority) or reports a debug control, it writes the
// allowance only if opts asks for it, and refuses otherwise (ErrNotReference,
// naming the option). Notes lists, for the operator, every allowance, pin
// and firmware quirk written and why. A log that measures no boot (no
// separator in PCRs 0–7, but where eventlog.QuirkSeparatorPCR7Only
// explains it) and a log with structural anomalies are refused. The policy
// describes the bank st was replayed in: SHA-256, or SHA-1 with
// opts.AllowSHA1; any other is refused.
func Learn(name string, st *eventlog.BootState, opts LearnOptions) (p *Policy, notes []string, err error) {
	switch {
	case st.Hash == crypto.SHA1 && !opts.AllowSHA1:
		return nil, nil, fmt.Errorf("learn policy: %w: the log was replayed in the SHA-1 PCR bank, and SHA-1 is broken for collisions; pass --pcr-bank sha1 to learn a SHA-1 policy all the same (docs/policy.md, pcr_bank)", ErrNotReference)
	case st.Hash != crypto.SHA1 && st.Hash != crypto.SHA256:
		return nil, nil, fmt.Errorf("learn policy: %w: the log was replayed in the %v bank; policies describe SHA-256 or SHA-1", ErrNotReference, st.Hash)
	}
	if missing := missingSeparators(st); len(missing) > 0 {
		return nil, nil, fmt.Errorf("learn policy: %w: PCRs %v have no separator, so the log does not record a whole boot", ErrNotReference, missing)
	}
	if len(st.Anomalies) > 0 {
		return nil, nil, fmt.Errorf("learn policy: %w: %d structural anomalies (first: event %d: %s)", ErrNotReference, len(st.Anomalies), st.Anomalies[0].Event, st.Anomalies[0].Detail)
	}
	var refusals []string
	need := func(ok bool, opt, why string) bool {
		if !ok {
			refusals = append(refusals, fmt.Sprintf("%s (%s)", why, opt))
		}
		return ok
	}
	p = &Policy{Name: name}
	if st.Hash == crypto.SHA1 {
		p.PCRBank = BankSHA1
		notes = append(notes, "pcr_bank: sha1: the policy describes the SHA-1 PCR bank, which is broken for collisions (docs/policy.md); "+
			"the agent quotes it only on a TPM 2.0 with a SHA-1 bank: a TPM 1.2 host cannot attest online")
	}
	for _, q := range st.Quirks {
		if !slices.Contains(p.Log.Quirks, q.Quirk) {
			p.Log.Quirks = append(p.Log.Quirks, q.Quirk)
		}
		notes = append(notes, fmt.Sprintf("log.quirks: %s (%s)", q.Quirk, at(q.Event, q.Detail)))
	}
	if !st.SecureBoot.Enabled && need(opts.AllowSecureBootOff, "--allow-secure-boot-off", "the reference booted with Secure Boot off") {
		p.SecureBoot.AllowDisabled = true
		notes = append(notes, "secure_boot.allow_disabled: the reference booted with Secure Boot off")
	}
	keys := func(field string, v eventlog.Variable) KeySet {
		if v.Present {
			return KeySet{Digests: []string{v.SHA256}}
		}
		if need(opts.AllowEmptyKeys, "--allow-empty-keys", field+" is empty or was not measured") {
			notes = append(notes, "secure_boot."+field+".allow_any: "+field+" is empty or was not measured in the reference")
		}
		return KeySet{AllowAny: true}
	}
	p.SecureBoot.PK = keys("pk", st.PK)
	p.SecureBoot.KEK = keys("kek", st.KEK)
	p.SecureBoot.DB = keys("db", st.DB)
	p.SecureBoot.DBXMustContain = append(slices.Clone(st.DBX.Hashes), certFingerprints(st.DBX.Certs)...)
	if len(p.SecureBoot.DBXMustContain) == 0 && need(opts.AllowEmptyKeys, "--allow-empty-keys", "dbx is empty or was not measured") {
		notes = append(notes, "secure_boot.dbx_must_contain is empty: the reference's dbx revokes nothing")
	}

	for _, a := range st.Actions {
		switch a.Text {
		case eventlog.ActionDebugMode:
			if need(opts.AllowDebug, "--allow-debug", fmt.Sprintf("event %d: the firmware reports %q", a.Event, a.Text)) {
				p.Debug.AllowUEFIDebugMode = true
				notes = append(notes, fmt.Sprintf("debug.allow_uefi_debug_mode: event %d reports %q", a.Event, a.Text))
			}
		case eventlog.ActionDMADisabled:
			if need(opts.AllowDebug, "--allow-debug", fmt.Sprintf("event %d: the firmware reports %q", a.Event, a.Text)) {
				p.Debug.AllowDMAProtectionDisabled = true
				notes = append(notes, fmt.Sprintf("debug.allow_dma_protection_disabled: event %d reports %q", a.Event, a.Text))
			}
		}
	}
	dbAuthority := slices.ContainsFunc(st.Authorities, func(a eventlog.Authority) bool { return a.Variable == "db" })
	if st.SecureBoot.Enabled && !dbAuthority &&
		need(opts.AllowUnverifiedBootApps, "--allow-unverified-boot-apps", "Secure Boot is on but no db authority verified a boot application") {
		p.Debug.AllowUnverifiedBootApps = true
		notes = append(notes, "debug.allow_unverified_boot_apps: no db authority verified a boot application in the reference")
	}

	for _, app := range st.BootApps {
		if !slices.ContainsFunc(p.CodeIntegrity.BootApps, func(b BootApp) bool { return b.digest(st.Hash) == app.SHA256 }) {
			b := BootApp{SHA256: app.SHA256, Name: app.Path}
			if st.Hash == crypto.SHA1 {
				b = BootApp{SHA1: app.SHA256, Name: app.Path}
			}
			p.CodeIntegrity.BootApps = append(p.CodeIntegrity.BootApps, b)
		}
	}
	if len(p.CodeIntegrity.BootApps) == 0 &&
		need(opts.AllowAnyBootApp, "--allow-any-boot-app", "no boot application was measured into PCR 4") {
		p.CodeIntegrity.AllowAnyBootApp = true
		notes = append(notes, "code_integrity.allow_any_boot_app: the reference measured no boot application")
	}
	for _, a := range st.Authorities {
		if !slices.Contains(p.CodeIntegrity.Signers, a.Cert.SHA256) {
			p.CodeIntegrity.Signers = append(p.CodeIntegrity.Signers, a.Cert.SHA256)
		}
	}
	if len(p.CodeIntegrity.Signers) == 0 && !p.SecureBoot.AllowDisabled &&
		need(opts.AllowUnverifiedBootApps, "--allow-unverified-boot-apps", "no authority event names a signer") {
		p.CodeIntegrity.AllowAnySigner = true
		notes = append(notes, "code_integrity.allow_any_signer: no authority event in the reference names a signer")
	}

	if v, ok := st.PCRs[0]; ok {
		p.Firmware.PCR0 = []string{v}
	} else {
		return nil, nil, fmt.Errorf("learn policy: %w: PCR 0 has no value", ErrNotReference)
	}
	for _, u := range st.Unverifiable {
		pin := PinnedEvent{PCR: u.PCR, Type: u.Type, Digest: u.Digest, Note: fmt.Sprintf("event %d: %s", u.Event, u.Detail)}
		if !p.Log.pins(u) {
			p.Log.PinnedEvents = append(p.Log.PinnedEvents, pin)
			notes = append(notes, fmt.Sprintf("log.pinned_events: PCR %d %s %s (event %d: %s)", u.PCR, u.Type, u.Digest, u.Event, u.Detail))
		}
	}
	if len(st.Cmdlines) == 0 {
		notes = append(notes, fmt.Sprintf("no kernel command line was measured as text into PCRs %v: debug.cmdline has nothing to check on hosts like this one (a kernel started by its own EFI stub measures its command line only into PCR 9, without the text)", eventlog.CmdlinePCRs))
	}
	if len(refusals) > 0 {
		return nil, nil, fmt.Errorf("learn policy: %w: a policy learned from it would need allowances that leave rules unchecked: %s; pass the options named to write them", ErrNotReference, strings.Join(refusals, "; "))
	}
	// What Learn writes must be a policy Parse accepts.
	b, err := p.Marshal()
	if err != nil {
		return nil, nil, err
	}
	if p, err = Parse(b); err != nil {
		return nil, nil, fmt.Errorf("learn policy: %w", err)
	}
	// The reference must pass what was learned from it: a debugger on its
	// command line, for one, is no known-good state.
	if fs := p.Evaluate(st); len(fs) > 0 {
		return nil, nil, fmt.Errorf("learn policy: %w: it fails the policy learned from it (%d failures; first: %s)", ErrNotReference, len(fs), fs[0])
	}
	return p, notes, nil
}

// at prefixes detail with the event it comes from, if any.
func at(event int, detail string) string {
	if event == 0 {
		return detail
	}
	return fmt.Sprintf("event %d: %s", event, detail)
}

// missingSeparators returns the PCRs among 0–7 that have no separator,
// leaving out PCRs 0–6 where eventlog.QuirkSeparatorPCR7Only explains it.
func missingSeparators(st *eventlog.BootState) []int {
	pcr7Only := slices.ContainsFunc(st.Quirks, func(q eventlog.QuirkUse) bool { return q.Quirk == eventlog.QuirkSeparatorPCR7Only })
	var out []int
	for i := range 8 {
		if pcr7Only && i < 7 {
			continue
		}
		if !slices.Contains(st.SeparatorPCRs, i) {
			out = append(out, i)
		}
	}
	return out
}

func certFingerprints(cs []eventlog.Cert) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.SHA256
	}
	return out
}

// Marshal renders p as a YAML policy file that Parse accepts.
func (p *Policy) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# bootgate attestation policy %q.\n# Every allow_* switch is a documented risk; see docs/policy.md.\n", p.Name)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(p); err != nil {
		return nil, fmt.Errorf("encode policy: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode policy: %w", err)
	}
	return buf.Bytes(), nil
}
