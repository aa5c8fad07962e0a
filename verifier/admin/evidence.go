package admin

import (
	"bufio"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// Comparison explains how the incident's latest failing log departs from a
// known-good reference: the host's last passing log or, for a host that never
// passed, the log the policy was learned from (or, without one, the policy in
// force).
type Comparison struct {
	Against       string   `json:"against"` // "last_pass", "reference", "policy", or "" when there is nothing to compare
	AttestationID int64    `json:"attestation_id,omitempty"`
	Reference     string   `json:"reference,omitempty"` // the policy's reference log
	PolicyName    string   `json:"policy_name,omitempty"`
	PolicyDigest  string   `json:"policy_digest,omitempty"`
	Lines         []string `json:"lines"`
	Note          string   `json:"note,omitempty"`
}

// EvidenceSummary is what an investigator looks at first.
type EvidenceSummary struct {
	AttestationID  int64          `json:"attestation_id"`
	Time           string         `json:"time"`
	Reasons        []wire.Reason  `json:"reasons"`
	PolicyName     string         `json:"policy_name"`
	PolicyDigest   string         `json:"policy_digest"`
	EKType         string         `json:"ek_type"`
	EKSubject      string         `json:"ek_subject,omitempty"`
	EKIssuer       string         `json:"ek_issuer,omitempty"`
	TPM            store.TPM      `json:"tpm"` // manufacturer, model, firmware
	PCRs           map[int]string `json:"pcrs"`
	EventLogBytes  int            `json:"event_log_bytes"`
	EventLogEvents int            `json:"event_log_events,omitempty"`
}

// IncidentDetail is one incident as the dashboard and `incident show` show it.
type IncidentDetail struct {
	Incident     store.Incident   `json:"incident"`
	History      []store.Note     `json:"history"`
	Attestations []int64          `json:"attestations"`
	Latest       *EvidenceSummary `json:"latest,omitempty"`
	Diff         Comparison       `json:"diff"`
}

// Bundle is an incident's complete evidence, for export: every failed
// attestation with its raw event log, quote, PCRs and EK certificate, the
// policy in force, and the comparison.
type Bundle struct {
	Incident     store.Incident       `json:"incident"`
	History      []store.Note         `json:"history"`
	Attestations []*store.Attestation `json:"attestations"`
	// Omitted lists the incident's older failed attestations left out of
	// the bundle (at most MaxBundleAttestations are in it, the newest).
	Omitted  []int64            `json:"omitted,omitempty"`
	LastPass *store.Attestation `json:"last_pass,omitempty"`
	Policy   *BundlePolicy      `json:"policy,omitempty"`
	Diff     Comparison         `json:"diff"`
}

// BundlePolicy is the policy in force when the bundle was written.
type BundlePolicy struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Source string `json:"source"`
}

// bootState replays a stored log against its stored PCR values, to show
// what the log says. PCRs without events are not held against it here: the
// verdict already judged them (a host re-attesting in the same boot quotes
// bootgate's PCR 15 non-zero, for one). The bank is the one the values are
// of: SHA-1 for 20-byte values (a pcr_bank: sha1 policy's quote), else
// SHA-256.
func bootState(a *store.Attestation) (*eventlog.BootState, error) {
	bank := eventlog.Bank{Hash: crypto.SHA256, PCRs: map[int][]byte{}}
	if len(a.Evidence.PCRs) > 0 && len(a.Evidence.PCRs[0].Digest) == crypto.SHA1.Size() {
		bank.Hash = crypto.SHA1
	}
	for _, p := range a.Evidence.PCRs {
		bank.PCRs[p.Index] = p.Digest
		bank.Unlogged = append(bank.Unlogged, p.Index)
	}
	return eventlog.Verify(a.Evidence.EventLog, bank)
}

func summarize(a *store.Attestation, st *eventlog.BootState) *EvidenceSummary {
	s := &EvidenceSummary{
		AttestationID: a.ID, Time: a.Time.UTC().Format("2006-01-02T15:04:05Z"), Reasons: a.Reasons,
		PolicyName: a.PolicyName, PolicyDigest: a.PolicyDigest, EKType: a.Evidence.EKType, TPM: a.TPM,
		PCRs: map[int]string{}, EventLogBytes: len(a.Evidence.EventLog),
	}
	if s.Reasons == nil {
		s.Reasons = []wire.Reason{}
	}
	for _, p := range a.Evidence.PCRs {
		s.PCRs[p.Index] = hex.EncodeToString(p.Digest)
	}
	if c, err := x509.ParseCertificate(a.Evidence.EKCert); err == nil {
		s.EKSubject, s.EKIssuer = c.Subject.String(), c.Issuer.String()
	}
	if st != nil {
		s.EventLogEvents = st.Events
	}
	return s
}

// compare explains latest against the host's last passing attestation
// before it, or against the policy in force when there is none.
func (a *API) compare(ctx context.Context, in inForce, latest *store.Attestation, st *eventlog.BootState) (Comparison, *store.Attestation, error) {
	c := Comparison{Lines: []string{}}
	if st == nil {
		c.Note = "the failing log does not replay to its quoted PCRs, so it cannot be compared; see the failed rules"
		return c, nil, nil
	}
	pass, err := a.opt.Store.LastPass(ctx, latest.HostID, latest.ID)
	if err != nil {
		return c, nil, err
	}
	if pass != nil {
		good, err := bootState(pass)
		if err != nil {
			c.Note = fmt.Sprintf("the last passing log (attestation %d) no longer replays: %v", pass.ID, err)
			return c, pass, nil
		}
		c.Against, c.AttestationID = "last_pass", pass.ID
		c.Lines = append(c.Lines, eventlog.Diff(good, st)...)
		if len(c.Lines) == 0 {
			c.Note = "no difference in what bootgate looks at; the failure lies elsewhere (see the failed rules)"
		}
		return c, pass, nil
	}
	if in.reference != nil {
		c.Against, c.Reference = "reference", in.referenceName
		if in.policy != nil {
			c.PolicyName, c.PolicyDigest = in.policy.Name, in.policy.Digest()
		}
		c.Lines = append(c.Lines, eventlog.Diff(in.reference, st)...)
		if len(c.Lines) == 0 {
			c.Note = "no difference from the policy's reference in what bootgate looks at; the failure lies elsewhere (see the failed rules)"
		}
		return c, nil, nil
	}
	if in.policy == nil {
		c.Note = "the host never passed and no policy is loaded to compare with"
		return c, nil, nil
	}
	c.Against, c.PolicyName, c.PolicyDigest = "policy", in.policy.Name, in.policy.Digest()
	for _, f := range in.policy.Evaluate(st) {
		c.Lines = append(c.Lines, f.String())
	}
	if c.PolicyDigest != latest.PolicyDigest {
		c.Note = "the policy in force differs from the one this attestation was judged by"
	}
	return c, nil, nil
}

// latestFailure loads the incident, its history and its latest attestation.
func (a *API) latestFailure(ctx context.Context, id int64) (*store.Incident, []store.Note, []int64, *store.Attestation, error) {
	in, notes, err := a.opt.Store.Incident(ctx, id)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ids, err := a.opt.Store.IncidentAttestations(ctx, id)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	latest, err := a.opt.Store.Attestation(ctx, in.LastAttestationID)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return in, notes, ids, latest, nil
}

func (a *API) incidentDetail(ctx context.Context, id int64) (*IncidentDetail, error) {
	in, notes, ids, latest, err := a.latestFailure(ctx, id)
	if err != nil {
		return nil, err
	}
	st, _ := bootState(latest)
	diff, _, err := a.compare(ctx, a.inForce(), latest, st)
	if err != nil {
		return nil, err
	}
	return &IncidentDetail{Incident: *in, History: notes, Attestations: ids, Latest: summarize(latest, st), Diff: diff}, nil
}

// MaxBundleAttestations bounds the failed attestations in one evidence
// bundle (each carries its event log, up to 1 MiB).
const MaxBundleAttestations = 50

// bundlePlan is an evidence bundle before it is written: everything but the
// failed attestations, which writeBundle reads and writes one at a time.
type bundlePlan struct {
	head   *Bundle // Attestations unset
	ids    []int64 // the attestations to write, oldest first
	latest *store.Attestation
}

// evidenceBundle reads what a bundle needs before it is written: the
// incident, its history, the newest MaxBundleAttestations failures' IDs
// (the others in Omitted), the latest failure, the last pass, the policy
// in force and the comparison.
func (a *API) evidenceBundle(ctx context.Context, id int64) (*bundlePlan, error) {
	in, notes, ids, latest, err := a.latestFailure(ctx, id)
	if err != nil {
		return nil, err
	}
	b := &Bundle{Incident: *in, History: notes}
	if len(ids) > MaxBundleAttestations {
		// A host failing for days would make a bundle of gigabytes: the
		// newest failures are in it, the others named.
		b.Omitted, ids = ids[:len(ids)-MaxBundleAttestations], ids[len(ids)-MaxBundleAttestations:]
	}
	st, _ := bootState(latest)
	// One snapshot of the policy in force for the diff and the bundle's
	// policy section, even if a reload happens meanwhile.
	pin := a.inForce()
	if b.Diff, b.LastPass, err = a.compare(ctx, pin, latest, st); err != nil {
		return nil, err
	}
	if p := pin.policy; p != nil {
		b.Policy = &BundlePolicy{Name: p.Name, Digest: p.Digest(), Source: string(p.Source())}
	}
	return &bundlePlan{head: b, ids: ids, latest: latest}, nil
}

// writeBundle writes p as the JSON of a Bundle, reading each failed
// attestation from the store only as it is written: the memory it holds is
// one attestation's (at most an event log of eventlog.MaxLogBytes and its
// encoding), however many the bundle carries. An error after the first
// byte leaves the document unfinished (invalid JSON), never a bundle that
// looks whole.
func (a *API) writeBundle(ctx context.Context, w io.Writer, p *bundlePlan) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	put := func(s string) { _, _ = bw.WriteString(s) }
	field := func(name string, v any, last bool) error {
		b, err := json.MarshalIndent(v, "  ", "  ")
		if err != nil {
			return fmt.Errorf("write bundle: %s: %w", name, err)
		}
		put("  \"" + name + "\": ")
		_, _ = bw.Write(b)
		if !last {
			put(",")
		}
		put("\n")
		return nil
	}
	h := p.head
	put("{\n")
	if err := field("incident", h.Incident, false); err != nil {
		return err
	}
	if err := field("history", h.History, false); err != nil {
		return err
	}
	put("  \"attestations\": [")
	for i, aid := range p.ids {
		att := p.latest
		if aid != p.latest.ID {
			var err error
			if att, err = a.opt.Store.Attestation(ctx, aid); err != nil {
				return fmt.Errorf("write bundle: attestation %d: %w", aid, err)
			}
		}
		b, err := json.MarshalIndent(att, "    ", "  ")
		if err != nil {
			return fmt.Errorf("write bundle: attestation %d: %w", aid, err)
		}
		if i > 0 {
			put(",")
		}
		put("\n    ")
		_, _ = bw.Write(b)
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("write bundle: %w", err)
		}
	}
	put("\n  ],\n")
	if len(h.Omitted) > 0 {
		if err := field("omitted", h.Omitted, false); err != nil {
			return err
		}
	}
	if h.LastPass != nil {
		if err := field("last_pass", h.LastPass, false); err != nil {
			return err
		}
	}
	if h.Policy != nil {
		if err := field("policy", h.Policy, false); err != nil {
			return err
		}
	}
	if err := field("diff", h.Diff, true); err != nil {
		return err
	}
	put("}\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}
