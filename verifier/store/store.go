// Package store keeps the verifier's record: every attestation with its
// verdict, reasons and evidence, the hosts, the incidents that failures
// open, the audit log, host identities, used enrollment sessions and the
// DHCP gate's leases. Store is the interface the appliance uses; DB
// implements it once, in SQL, on an embedded SQLite file (the default) or
// on a PostgreSQL database that several appliances share (Open chooses by
// the location's form). dialect.go holds what differs between the two.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/bootgate/bootgate/verifier/admission"
	"github.com/bootgate/bootgate/verifier/wire"
)

// ErrNotFound is returned when a record does not exist.
var ErrNotFound = errors.New("not found")

// Host states (admission's).
const (
	HostAdmitted    = admission.HostAdmitted
	HostQuarantined = admission.HostQuarantined
)

// Incident states: open → investigating → remediated (a post-mortem note is
// required) → closed, which only a fresh passing attestation does. A failure
// of a remediated host reopens its incident. The workflow is admission's
// state table (admission.Next); the store only applies its steps.
const (
	IncidentOpen          = admission.IncidentOpen
	IncidentInvestigating = admission.IncidentInvestigating
	IncidentRemediated    = admission.IncidentRemediated
	IncidentClosed        = admission.IncidentClosed
)

// ErrInvalid reports an operator action the incident workflow refuses; it
// is admission.ErrRefused.
var ErrInvalid = admission.ErrRefused

// Note is one entry of an incident's history: an operator's note, an
// assignment, a state change.
type Note struct {
	Time   time.Time `json:"time"`
	Author string    `json:"author"`
	Kind   string    `json:"kind"` // note, assign, remediate, state
	Text   string    `json:"text"`
}

// AuditEntry is one operator action, in the append-only audit log.
type AuditEntry struct {
	ID     int64     `json:"id"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail"`
}

// Evidence is everything a host sent for one attestation, kept so that a
// verdict can be re-examined.
type Evidence struct {
	EKCert    []byte        `json:"ek_cert,omitempty"`
	EKType    string        `json:"ek_type"`
	EKPublic  []byte        `json:"ek_public"` // TPMT_PUBLIC
	AK        wire.AKParams `json:"ak"`        // the AK and its creation attestation
	Nonce     []byte        `json:"nonce"`
	Quote     []byte        `json:"quote"`
	Signature []byte        `json:"signature"`
	PCRs      []wire.PCR    `json:"pcrs"`
	EventLog  []byte        `json:"event_log"`
}

// TPM is what a host's TPM said of itself at one attestation: manufacturer,
// model and version from its EK certificate's subject alternative name
// (empty for an allowlisted EK without one) and the firmware version from
// its verified quote. Text is stored as received; show it escaped.
type TPM struct {
	Manufacturer string `json:"manufacturer,omitempty"` // TCG vendor ID, e.g. "IFX"
	Model        string `json:"model,omitempty"`
	Version      string `json:"version,omitempty"`  // as the EK certificate gives it, e.g. "id:073f"
	Firmware     string `json:"firmware,omitempty"` // TPMS_ATTEST firmwareVersion, policy.FormatFirmware form
}

// Attestation is one completed attestation.
type Attestation struct {
	ID           int64         `json:"id"`
	HostID       string        `json:"host_id"`
	Time         time.Time     `json:"time"`
	Verdict      string        `json:"verdict"` // wire.VerdictPass or wire.VerdictFail
	Reasons      []wire.Reason `json:"reasons,omitempty"`
	PolicyName   string        `json:"policy_name"`
	PolicyDigest string        `json:"policy_digest"`
	Evidence     Evidence      `json:"evidence"`
	// BootState is the extracted state as JSON, when the log verified.
	BootState []byte `json:"boot_state,omitempty"`
	// TPM identifies the TPM and its firmware (schema version 2; empty in
	// attestations recorded before).
	TPM TPM `json:"tpm"`
}

// Host is a TPM the verifier has seen, by the ID derived from its EK.
type Host struct {
	ID                string    `json:"id"`
	EKType            string    `json:"ek_type"`
	EKIssuer          string    `json:"ek_issuer,omitempty"`
	State             string    `json:"state"` // HostAdmitted or HostQuarantined
	FirstSeen         time.Time `json:"first_seen"`
	LastSeen          time.Time `json:"last_seen"`
	LastVerdict       string    `json:"last_verdict"`
	LastAttestationID int64     `json:"last_attestation_id"`
}

// Incident is opened by a host's failed attestation; further failures of the
// same host attach to it while it is open.
type Incident struct {
	ID                 int64         `json:"id"`
	HostID             string        `json:"host_id"`
	State              string        `json:"state"`
	Opened             time.Time     `json:"opened"`
	Updated            time.Time     `json:"updated"`
	Failures           int           `json:"failures"`
	FirstAttestationID int64         `json:"first_attestation_id"`
	LastAttestationID  int64         `json:"last_attestation_id"`
	Reasons            []wire.Reason `json:"reasons"` // of the latest failure
	Assignee           string        `json:"assignee,omitempty"`
	// Unrecorded is how many of Failures were counted without storing
	// their attestation (Limits.StoredFailures); LastAttestationID is the
	// latest stored one, Reasons and Updated the latest failure's.
	Unrecorded int `json:"unrecorded,omitempty"`
}

// Store is the verifier's persistent state. Implementations are safe for
// concurrent use.
//
// Verdicts are written only by the admission port (AdmissionState and
// Apply on *DB, which re-check the state a Decision was based on); the
// interface has no way to write one unchecked.
type Store interface {
	Attestation(ctx context.Context, id int64) (*Attestation, error)
	Hosts(ctx context.Context) ([]Host, error)
	Host(ctx context.Context, id string) (*Host, error)
	// AdmittedHosts returns the IDs of the hosts admitted now.
	AdmittedHosts(ctx context.Context) (map[string]bool, error)
	// Quarantine sets a known host's state to quarantined (an operator's
	// decision, audited); only a fresh passing attestation admits it again.
	Quarantine(ctx context.Context, id, actor string) error
	// UnresolvedIncident returns the host's incident that is not closed, or
	// nil.
	UnresolvedIncident(ctx context.Context, hostID string) (*Incident, error)
	Incidents(ctx context.Context) ([]Incident, error)
	// RecordIdentity notes an identity certificate issued to a host, if
	// the host is admitted (else ErrNotAdmitted); the host's identities are
	// revoked when it stops being admitted.
	RecordIdentity(ctx context.Context, r IdentityRecord) error
	RevokedIdentities(ctx context.Context, now time.Time) ([]IdentityRecord, error)
	IdentityValid(ctx context.Context, serial string) (bool, error)
	// ConsumeSession marks an enrollment session used until it expires;
	// it returns ErrSessionUsed when it was used before (on any appliance
	// sharing the database).
	ConsumeSession(ctx context.Context, id []byte, expires time.Time) error
	Close() error
}
