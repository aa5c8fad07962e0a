package policy

import (
	"bytes"
	"crypto"
	"fmt"
	"slices"

	"gopkg.in/yaml.v3"

	"github.com/bootgate/bootgate/verifier/eventlog"
)

// Learn derives the narrowest policy that st passes: this firmware, these
// Secure Boot keys, this dbx, these boot applications and signers. Whatever
// the known-good host did not show (Secure Boot on, authorities) is allowed
// explicitly, with the risk visible in the policy. Structural anomalies cannot
// be learned: a log with anomalies fails every policy. Policies describe the
// SHA-256 PCR bank, so a log replayed in another bank is refused.
func Learn(name string, st *eventlog.BootState) (*Policy, error) {
	if st.Hash != crypto.SHA256 {
		return nil, fmt.Errorf("learn policy: the log has %v digests only; bootgate policies describe the SHA-256 PCR bank", st.Hash)
	}
	p := &Policy{Name: name}
	p.SecureBoot.AllowDisabled = !st.SecureBoot.Enabled
	p.SecureBoot.PK = learnKeySet(st.PK)
	p.SecureBoot.KEK = learnKeySet(st.KEK)
	p.SecureBoot.DB = learnKeySet(st.DB)
	p.SecureBoot.DBXMustContain = append(slices.Clone(st.DBX.Hashes), certFingerprints(st.DBX.Certs)...)

	for _, a := range st.Actions {
		switch a.Text {
		case eventlog.ActionDebugMode:
			p.Debug.AllowUEFIDebugMode = true
		case eventlog.ActionDMADisabled:
			p.Debug.AllowDMAProtectionDisabled = true
		}
	}
	dbAuthority := slices.ContainsFunc(st.Authorities, func(a eventlog.Authority) bool { return a.Variable == "db" })
	p.Debug.AllowUnverifiedBootApps = st.SecureBoot.Enabled && !dbAuthority

	for _, app := range st.BootApps {
		if !slices.ContainsFunc(p.CodeIntegrity.BootApps, func(b BootApp) bool { return b.SHA256 == app.SHA256 }) {
			p.CodeIntegrity.BootApps = append(p.CodeIntegrity.BootApps, BootApp{SHA256: app.SHA256, Name: app.Path})
		}
	}
	p.CodeIntegrity.AllowAnyBootApp = len(p.CodeIntegrity.BootApps) == 0
	for _, a := range st.Authorities {
		if !slices.Contains(p.CodeIntegrity.Signers, a.Cert.SHA256) {
			p.CodeIntegrity.Signers = append(p.CodeIntegrity.Signers, a.Cert.SHA256)
		}
	}
	p.CodeIntegrity.AllowAnySigner = len(p.CodeIntegrity.Signers) == 0 && !p.SecureBoot.AllowDisabled

	if v, ok := st.PCRs[0]; ok {
		p.Firmware.PCR0 = []string{v}
	} else {
		p.Firmware.AllowAny = true
	}
	p.Log.AllowUnverifiableEvents = len(st.Unverifiable) > 0
	return p, nil
}

func learnKeySet(v eventlog.Variable) KeySet {
	if !v.Present {
		return KeySet{AllowAny: true}
	}
	return KeySet{Digests: []string{v.SHA256}}
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
