// Package policy defines the secure state a host must prove: Secure Boot and its
// keys, debug controls, code integrity and firmware. A policy is decoded and
// validated in one step (Parse), so an invalid policy never exists as a value;
// unknown fields are errors, and the zero value of every switch is the secure
// one. Nothing in this package falls back to accepting a host.
package policy

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/bootgate/bootgate/verifier/eventlog"
)

// MaxFileBytes bounds a policy file.
const MaxFileBytes = 4 << 20

// ErrInvalid wraps every reason a policy is refused.
var ErrInvalid = errors.New("invalid policy")

// Policy is a validated attestation policy for one hardware class.
type Policy struct {
	// Name identifies the policy in verdicts and logs.
	Name string `yaml:"name"`
	// PCRBank is the PCR bank the policy describes, whose quote the
	// verifier asks for and whose digests it replays: "sha256" (the
	// default, also when absent) or "sha1". Its digests (boot_apps,
	// revoked_boot_apps, firmware.pcr0, log.pinned_events) are of that
	// bank. A log replayed in another bank fails log.pcr_bank.
	//
	// Risk of "sha1": SHA-1 is broken for collisions (SHAttered, 2017;
	// chosen-prefix collisions, 2020). Whoever can make two images with
	// one SHA-1 Authenticode digest, one benign and signed or allowed,
	// can boot the other under the same measurement. Use it only for TPMs
	// and firmware that have no SHA-256 bank (TPM 1.2, some early TPM 2.0
	// firmware), and move such hosts to SHA-256 where firmware allows.
	PCRBank       string        `yaml:"pcr_bank,omitempty"`
	SecureBoot    SecureBoot    `yaml:"secure_boot"`
	Debug         Debug         `yaml:"debug"`
	CodeIntegrity CodeIntegrity `yaml:"code_integrity"`
	Firmware      Firmware      `yaml:"firmware"`
	Log           Log           `yaml:"log"`
	TPM           TPM           `yaml:"tpm,omitempty"`

	digest string
	source []byte
	// forbidden is the built-in and the policy's forbidden kernel
	// parameters, normalised once when the policy is parsed.
	forbidden forbiddenSet
}

// SecureBoot constrains the Secure Boot state and its key databases.
type SecureBoot struct {
	// AllowDisabled admits hosts that booted with Secure Boot off. Risk: any
	// boot application runs unverified; only the allowlist of digests stands.
	AllowDisabled bool   `yaml:"allow_disabled"`
	PK            KeySet `yaml:"pk"`
	KEK           KeySet `yaml:"kek"`
	DB            KeySet `yaml:"db"`
	// DBXMustContain lists revocations (SHA-256 image hashes or certificate
	// fingerprints, hex) that the measured dbx must contain.
	DBXMustContain []string `yaml:"dbx_must_contain"`
}

// KeySet constrains one Secure Boot variable (PK, KEK or db). The variable
// passes if the SHA-256 of its content is in Digests, or if its certificates
// are exactly the set Certs (and it holds no hashes). A KeySet must say one of
// the two, or explicitly AllowAny.
type KeySet struct {
	Digests []string `yaml:"digests,omitempty"`
	Certs   []string `yaml:"certs,omitempty"`
	// AllowAny accepts any content. Risk: whoever controls this variable
	// decides what the firmware trusts.
	AllowAny bool `yaml:"allow_any,omitempty"`
}

// Debug lists debug controls; each Allow switch is a risk, off by default.
type Debug struct {
	// AllowUEFIDebugMode admits firmware that logged "UEFI Debug Mode". Risk:
	// a firmware debugger had full control of the machine.
	AllowUEFIDebugMode bool `yaml:"allow_uefi_debug_mode"`
	// AllowDMAProtectionDisabled admits firmware that logged "DMA Protection
	// Disabled". Risk: devices could read and write memory during boot.
	AllowDMAProtectionDisabled bool `yaml:"allow_dma_protection_disabled"`
	// AllowUnverifiedBootApps admits a Secure Boot log in which no db
	// authority verified a boot application. Risk: the firmware loaded an
	// image without checking its signature.
	AllowUnverifiedBootApps bool `yaml:"allow_unverified_boot_apps"`
	// ForbiddenCmdline adds kernel command-line switches to the built-in
	// debugger switches that fail a host (a word, or a word followed by "=").
	ForbiddenCmdline []string `yaml:"forbidden_cmdline,omitempty"`
}

// BuiltinForbiddenCmdline are kernel switches that enable a kernel debugger.
var BuiltinForbiddenCmdline = []string{"kgdboc", "kgdbwait", "kgdbcon", "kgdbdbgp", "ekgdboc", "kgdboe", "kgdboc_earlycon", "kgdbts"}

// CodeIntegrity constrains what code ran.
type CodeIntegrity struct {
	// BootApps are the boot applications (by Authenticode SHA-256) allowed.
	BootApps []BootApp `yaml:"boot_apps,omitempty"`
	// AllowAnyBootApp accepts any boot application that Secure Boot
	// verified. Risk: every binary signed by a db key is accepted.
	AllowAnyBootApp bool `yaml:"allow_any_boot_app,omitempty"`
	// Signers are the certificate fingerprints allowed to have verified boot
	// applications (the authority events).
	Signers []string `yaml:"signers,omitempty"`
	// AllowAnySigner accepts any authority that the firmware used. Risk: any
	// key in db or shim's MokList is trusted.
	AllowAnySigner  bool     `yaml:"allow_any_signer,omitempty"`
	RevokedBootApps []string `yaml:"revoked_boot_apps,omitempty"`
	RevokedSigners  []string `yaml:"revoked_signers,omitempty"`
}

// BootApp is an allowed boot application, by its PCR 4 digest (its
// Authenticode digest) in the policy's bank: SHA256 in a SHA-256 policy,
// SHA1 in a SHA-1 policy, never both.
type BootApp struct {
	SHA256 string `yaml:"sha256,omitempty"`
	SHA1   string `yaml:"sha1,omitempty"`
	Name   string `yaml:"name,omitempty"`
}

// digest is the boot application's digest in the bank h, hex.
func (b BootApp) digest(h crypto.Hash) string {
	if h == crypto.SHA1 {
		return b.SHA1
	}
	return b.SHA256
}

// Firmware constrains the platform firmware.
type Firmware struct {
	// PCR0 lists the allowed values of PCR 0 (firmware code), hex, in the
	// policy's bank.
	PCR0 []string `yaml:"pcr0,omitempty"`
	// AllowAny accepts any firmware. Risk: firmware is not checked at all.
	AllowAny bool `yaml:"allow_any,omitempty"`
}

// Log constrains the event log itself.
type Log struct {
	// PinnedEvents admits, each exactly, events whose digest bootgate cannot
	// explain (eventlog.Unverified): a shim authority event whose data is not
	// what it measured, a systemd-stub credential, a firmware's own action.
	// Any other unexplained event fails the log. Risk: what a pinned event
	// measured is known only by its digest.
	PinnedEvents []PinnedEvent `yaml:"pinned_events,omitempty"`

	// Quirks are the firmware quirks (eventlog.Quirks, by name) a log may
	// use. Each explains a digest by another exact computation over the
	// event's data, or the absence of separators in PCRs 0–6; a log using a
	// quirk the policy does not name fails log.quirk. Risk: small, and each
	// is documented in docs/policy.md; separator-pcr7-only leaves an error
	// separator of PCRs 0–6 to the rules that judge those PCRs' digests.
	Quirks []string `yaml:"quirks,omitempty"`

	// AllowUnverifiableEvents is no longer accepted: it admitted every
	// unexplained event. A policy that sets it is refused with a hint.
	AllowUnverifiableEvents *bool `yaml:"allow_unverifiable_events,omitempty"`
}

// PinnedEvent names one event by PCR, event type (its PFP name, such as
// EV_EFI_VARIABLE_AUTHORITY, or 0x-prefixed hex) and digest (lower-case
// hex, in the policy's bank).
type PinnedEvent struct {
	PCR    int    `yaml:"pcr"`
	Type   string `yaml:"type"`
	Digest string `yaml:"digest"`
	Note   string `yaml:"note,omitempty"`
}

// pins reports whether the policy pins u.
func (l Log) pins(u eventlog.Unverified) bool {
	return slices.ContainsFunc(l.PinnedEvents, func(p PinnedEvent) bool {
		return p.PCR == u.PCR && p.Type == u.Type && p.Digest == u.Digest
	})
}

// Load reads and validates a policy file.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Parse decodes and validates a policy strictly: unknown fields, duplicate
// documents, malformed digests and unconstrained key sets are refused.
func Parse(b []byte) (*Policy, error) {
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxFileBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var p Policy
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty document", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document", ErrInvalid)
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	sum := sha256.Sum256(b)
	p.digest = hex.EncodeToString(sum[:])
	p.source = bytes.Clone(b)
	return &p, nil
}

// Digest is the SHA-256 of the policy file as parsed, stored with every verdict.
func (p *Policy) Digest() string { return p.digest }

// Source is the policy file as parsed: the bytes Digest hashes.
func (p *Policy) Source() []byte { return p.source }

// PCR bank names, as pcr_bank spells them.
const (
	BankSHA256 = "sha256"
	BankSHA1   = "sha1"
)

// Bank is the PCR bank the policy describes: crypto.SHA256, or crypto.SHA1
// for pcr_bank: sha1.
func (p *Policy) Bank() crypto.Hash {
	if p.PCRBank == BankSHA1 {
		return crypto.SHA1
	}
	return crypto.SHA256
}

// BankName names a PCR bank as pcr_bank spells it.
func BankName(h crypto.Hash) string {
	if h == crypto.SHA1 {
		return BankSHA1
	}
	return BankSHA256
}

func (p *Policy) validate() error {
	if strings.TrimSpace(p.Name) == "" {
		return errors.New("name: required")
	}
	errs := p.TPM.validate()
	if p.PCRBank != "" && p.PCRBank != BankSHA256 && p.PCRBank != BankSHA1 {
		errs = append(errs, fmt.Errorf("pcr_bank: %q is neither %q nor %q", p.PCRBank, BankSHA256, BankSHA1))
	}
	bank := p.Bank()
	check := func(field string, list []string) {
		for i, d := range list {
			if !isSHA256Hex(d) {
				errs = append(errs, fmt.Errorf("%s[%d]: %q is not a lower-case hex SHA-256", field, i, d))
			}
		}
	}
	// Digests of the policy's PCR bank, as opposed to SHA-256 fingerprints
	// and content digests, which bootgate computes itself.
	checkBank := func(field string, list []string) {
		for i, d := range list {
			if !isHexOf(d, bank) {
				errs = append(errs, fmt.Errorf("%s[%d]: %q is not a lower-case hex %v digest (pcr_bank: %s)", field, i, d, bank, BankName(bank)))
			}
		}
	}
	keyset := func(field string, k KeySet) {
		check(field+".digests", k.Digests)
		check(field+".certs", k.Certs)
		if k.AllowAny && (len(k.Digests) > 0 || len(k.Certs) > 0) {
			errs = append(errs, fmt.Errorf("%s: allow_any together with digests or certs", field))
		}
		if !k.AllowAny && len(k.Digests) == 0 && len(k.Certs) == 0 {
			errs = append(errs, fmt.Errorf("%s: names no digests or certs; set allow_any: true to accept any", field))
		}
	}
	keyset("secure_boot.pk", p.SecureBoot.PK)
	keyset("secure_boot.kek", p.SecureBoot.KEK)
	keyset("secure_boot.db", p.SecureBoot.DB)
	check("secure_boot.dbx_must_contain", p.SecureBoot.DBXMustContain)
	ci := p.CodeIntegrity
	for i, a := range ci.BootApps {
		field, other := "sha256", a.SHA1
		if bank == crypto.SHA1 {
			field, other = "sha1", a.SHA256
		}
		switch {
		case other != "":
			errs = append(errs, fmt.Errorf("code_integrity.boot_apps[%d]: give %s only: the policy describes the %s bank", i, field, BankName(bank)))
		case !isHexOf(a.digest(bank), bank):
			errs = append(errs, fmt.Errorf("code_integrity.boot_apps[%d].%s: %q is not a lower-case hex %v digest", i, field, a.digest(bank), bank))
		}
	}
	if ci.AllowAnyBootApp == (len(ci.BootApps) > 0) {
		errs = append(errs, errors.New("code_integrity: give either boot_apps or allow_any_boot_app: true"))
	}
	check("code_integrity.signers", ci.Signers)
	if ci.AllowAnySigner && len(ci.Signers) > 0 {
		errs = append(errs, errors.New("code_integrity: allow_any_signer together with signers"))
	}
	if !ci.AllowAnySigner && len(ci.Signers) == 0 && !p.SecureBoot.AllowDisabled {
		errs = append(errs, errors.New("code_integrity: give signers or allow_any_signer: true"))
	}
	checkBank("code_integrity.revoked_boot_apps", ci.RevokedBootApps)
	check("code_integrity.revoked_signers", ci.RevokedSigners)
	checkBank("firmware.pcr0", p.Firmware.PCR0)
	if p.Firmware.AllowAny == (len(p.Firmware.PCR0) > 0) {
		errs = append(errs, errors.New("firmware: give either pcr0 values or allow_any: true"))
	}
	if p.Log.AllowUnverifiableEvents != nil {
		errs = append(errs, errors.New("log.allow_unverifiable_events is no longer supported: it admitted every event bootgate cannot explain; pin each one in log.pinned_events (policy learn writes them)"))
	}
	for i, pe := range p.Log.PinnedEvents {
		if pe.PCR < 0 || pe.PCR > 23 {
			errs = append(errs, fmt.Errorf("log.pinned_events[%d].pcr: %d is not a PCR (0–23)", i, pe.PCR))
		}
		if typ, ok := eventlog.EventTypeByName(pe.Type); !ok {
			errs = append(errs, fmt.Errorf("log.pinned_events[%d].type: %q is not an event type (EV_... or 0x%%08x)", i, pe.Type))
		} else {
			// One spelling per type, the one findings use: a type the PFP
			// names, pinned as hex, must still match.
			p.Log.PinnedEvents[i].Type = eventlog.EventTypeName(typ)
		}
		if !isHexOf(pe.Digest, bank) {
			errs = append(errs, fmt.Errorf("log.pinned_events[%d].digest: %q is not a lower-case hex %v digest (pcr_bank: %s)", i, pe.Digest, bank, BankName(bank)))
		}
	}
	for i, q := range p.Log.Quirks {
		if !eventlog.KnownQuirk(q) {
			errs = append(errs, fmt.Errorf("log.quirks[%d]: %q is no firmware quirk bootgate knows", i, q))
		}
	}
	for i, w := range p.Debug.ForbiddenCmdline {
		if w == "" || strings.ContainsAny(w, " \t\n") {
			errs = append(errs, fmt.Errorf("debug.forbidden_cmdline[%d]: %q is not a single word", i, w))
		}
	}
	p.forbidden = newForbiddenSet(append(slices.Clone(BuiltinForbiddenCmdline), p.Debug.ForbiddenCmdline...))
	return errors.Join(errs...)
}

func isSHA256Hex(s string) bool { return isHexOf(s, crypto.SHA256) }

// isHexOf reports whether s is a lower-case hex digest of h.
func isHexOf(s string, h crypto.Hash) bool {
	if len(s) != 2*h.Size() {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
