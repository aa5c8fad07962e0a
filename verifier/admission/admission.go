// Package admission decides whether a host is admitted: one pure function,
// Decide, from the verified evidence's outcome, the policy's failures, the
// identity certification's result and the host's enrollment and incident
// state to one Decision (verdict, reasons, incident transition and the
// effects the callers carry out). It holds the incident workflow (Next,
// Act) that the store applies.
//
// Nothing here does I/O: the store reads the State a Decision is based on
// and applies the Decision atomically, re-checking State.Revision
// (ErrConflict when it changed); its callers only carry out Decisions.
package admission

import (
	"errors"
	"fmt"

	"github.com/bootgate/bootgate/verifier/wire"
)

// Host states.
const (
	HostUnknown     = "" // never attested
	HostAdmitted    = "admitted"
	HostQuarantined = "quarantined"
)

// RuleIncidentUnresolved is the reason of a clean attestation of a host
// whose incident is open or being investigated.
const RuleIncidentUnresolved = "incident.unresolved"

// RuleIdentity is the reason of an identity key the AK did not certify.
const RuleIdentity = "evidence.identity"

// ErrConflict reports that the state a Decision was based on changed before
// it was applied: nothing was applied. The caller reads the state and
// decides again.
var ErrConflict = errors.New("admission state changed since it was read")

// Revision identifies one version of a host's admission state; the store
// makes it and compares it, nothing else looks inside.
type Revision string

// Incident is a host's unresolved (not closed) incident.
type Incident struct {
	ID    int64
	State string // IncidentOpen, IncidentInvestigating or IncidentRemediated
}

// State is a host's enrollment and incident state as the store read it.
type State struct {
	HostID string
	// Host is the host's state: HostUnknown, HostAdmitted or
	// HostQuarantined.
	Host string
	// Incident is the host's unresolved incident, nil for none.
	Incident *Incident
	// Revision is what Apply re-checks.
	Revision Revision
}

// Evidence is the outcome of verifying the evidence (attest.Verify).
type Evidence struct {
	// Failure is the evidence check that failed (an attest.EvidenceError as
	// a reason), nil when the evidence verified.
	Failure *wire.Reason
	// QuoteVerified says the quote's signature verified, so the link it
	// names is the TPM's word (true also when a later check failed).
	QuoteVerified bool
}

// Identity is the result of checking the identity key the host asked a
// certificate for.
type Identity struct {
	// Requested says the host sent an identity key and the appliance
	// issues identities.
	Requested bool
	// Failure says why the AK's certification of the key did not verify;
	// "" when it did.
	Failure string
}

// Input is everything a Decision is made from.
type Input struct {
	Evidence Evidence
	// Policy holds the policy's and the TPM rules' failures; they count
	// only when the evidence verified.
	Policy   []wire.Reason
	Identity Identity
	State    State
}

// Lease is the class of network access a Decision grants.
type Lease string

// Lease classes.
const (
	LeaseQuarantine Lease = "quarantine"
	LeaseProduction Lease = "production"
)

// Effects are what the callers carry out for a Decision, once applied.
type Effects struct {
	IssueIdentity   bool  // issue the host an identity for its certified key
	SealCredentials bool  // seal credentials to the quoted state
	BootSpec        bool  // name the production OS
	Lease           Lease // the host's network access
	// BindLink says the quoted link is the TPM's word, so the DHCP gate
	// binds its MAC to the host (for passes and failures alike).
	BindLink bool
}

// Decision is the verdict on one attestation and all that follows from it.
type Decision struct {
	HostID    string
	Verdict   string        // wire.VerdictPass or wire.VerdictFail
	Reasons   []wire.Reason // empty exactly when Verdict is wire.VerdictPass
	HostState string        // HostAdmitted exactly when Verdict is wire.VerdictPass
	// Incident is the incident's step: Event is EventPass or EventFail.
	Incident Transition
	Effects  Effects
}

// Admitted reports whether the Decision admits the host.
func (d Decision) Admitted() bool { return d.Verdict == wire.VerdictPass }

// Decide makes the Decision on one attestation. The reasons are, in order:
// the evidence failure alone, or the policy's failures then the identity's;
// a host that would otherwise pass fails with RuleIncidentUnresolved while
// its incident is open or investigating. A pass admits the host (production
// lease, credentials, boot spec, an identity if one was requested and
// certified) and closes a remediated incident; a failure quarantines it and
// opens, reopens or joins its incident. A state the incident workflow does
// not know fails closed.
func Decide(in Input) Decision {
	var reasons []wire.Reason
	if in.Evidence.Failure != nil {
		reasons = []wire.Reason{*in.Evidence.Failure}
	} else {
		reasons = append(reasons, in.Policy...)
		if in.Identity.Requested && in.Identity.Failure != "" {
			reasons = append(reasons, wire.Reason{Rule: RuleIdentity, Detail: in.Identity.Failure})
		}
	}
	from, id := IncidentNone, int64(0)
	if inc := in.State.Incident; inc != nil {
		from, id = inc.State, inc.ID
	}
	d := Decision{HostID: in.State.HostID}
	if len(reasons) == 0 {
		t, err := Next(from, EventPass)
		if err == nil {
			t.Incident = id
			d.Verdict, d.HostState, d.Incident = wire.VerdictPass, HostAdmitted, t
			d.Effects = Effects{
				IssueIdentity: in.Identity.Requested, SealCredentials: true, BootSpec: true,
				Lease: LeaseProduction, BindLink: in.Evidence.QuoteVerified,
			}
			return d
		}
		reasons = []wire.Reason{{Rule: RuleIncidentUnresolved,
			Detail: fmt.Sprintf("incident %d is %s: the host rejoins after an operator remediates it and a fresh attestation passes", id, from)}}
	}
	d.Verdict, d.HostState, d.Reasons = wire.VerdictFail, HostQuarantined, reasons
	d.Effects = Effects{Lease: LeaseQuarantine, BindLink: in.Evidence.QuoteVerified}
	t, err := Next(from, EventFail)
	if err != nil {
		// An incident state the workflow does not know: the failure still
		// joins the incident, which stays as it is.
		t = Transition{From: from, Event: EventFail, To: from, Attach: true}
	}
	t.Incident = id
	d.Incident = t
	return d
}
