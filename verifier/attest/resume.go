package attest

import (
	"encoding/json"
	"errors"
	"fmt"

	goattest "github.com/google/go-attestation/attest"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/wire"
)

// enrollmentState is what an Enrollment keeps of its checks, as JSON: the
// fields its verification depends on, each checked when Enroll made it.
type enrollmentState struct {
	HostID         string            `json:"host"`
	EKType         string            `json:"ek_type"`
	EKCert         []byte            `json:"ek_cert,omitempty"`
	EKIssuer       string            `json:"ek_issuer,omitempty"`
	TPM            pki.TPMAttributes `json:"tpm"`
	EKPublic       []byte            `json:"ek_public"`
	AK             wire.AKParams     `json:"ak"`
	FirmwareProven bool              `json:"firmware_proven,omitempty"`
}

// MarshalBinary encodes the enrollment's checked state, so that a verifier
// can keep it outside its memory (sealed into a session token) and resume
// the enrollment with ResumeEnrollment when the quote arrives, on any
// replica. The encoding is not authenticated: whoever keeps it must be.
func (e *Enrollment) MarshalBinary() ([]byte, error) {
	return json.Marshal(enrollmentState{
		HostID: e.HostID, EKType: e.EKType, EKCert: e.EKCert, EKIssuer: e.EKIssuer,
		TPM: e.TPM, EKPublic: e.EKPublic, AK: e.AK, FirmwareProven: e.firmwareProven,
	})
}

// ResumeEnrollment decodes what MarshalBinary encoded, without checking the
// EK certificate or the AK's creation again: b must be bytes this verifier
// authenticated as its own (a session token it sealed). It re-derives the
// parsed keys and the AK's name, so a resumed enrollment verifies quotes
// and activations exactly as the one Enroll returned.
//
// Errors: the encoding is not one MarshalBinary wrote.
func ResumeEnrollment(b []byte) (*Enrollment, error) {
	var st enrollmentState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("resume enrollment: %w", err)
	}
	if st.HostID == "" {
		return nil, errors.New("resume enrollment: no host")
	}
	ekPub, err := decode[tpm2.TPMTPublic]("EK TPMT_PUBLIC", st.EKPublic)
	if err != nil {
		return nil, fmt.Errorf("resume enrollment: EK: %w", err)
	}
	akPub, name, err := akIdentity(st.AK.Public)
	if err != nil {
		return nil, fmt.Errorf("resume enrollment: AK: %w", err)
	}
	return &Enrollment{
		HostID: st.HostID, EKType: st.EKType, EKCert: st.EKCert, EKIssuer: st.EKIssuer,
		TPM: st.TPM, EKPublic: st.EKPublic, AK: st.AK, ekPublic: *ekPub,
		firmwareProven: st.FirmwareProven, akPublic: akPub, akName: name,
	}, nil
}

// akIdentity parses an AK's TPMT_PUBLIC and returns it with its name
// (TPM 2.0 Part 1 §16: nameAlg ‖ H(public area)), the name a credential is
// made for. The legacy decoder is used because it is several times faster
// than go-tpm's reflective one on this hot path.
func akIdentity(public []byte) (*goattest.AKPublic, []byte, error) {
	akPub, err := goattest.ParseAKPublic(public)
	if err != nil {
		return nil, nil, err
	}
	legacyAK, err := legacy.DecodePublic(public)
	if err != nil {
		return nil, nil, err
	}
	lname, err := legacyAK.Name()
	if err != nil || lname.Digest == nil {
		return nil, nil, fmt.Errorf("no name: %v", err)
	}
	name, err := lname.Digest.Encode()
	if err != nil {
		return nil, nil, err
	}
	return akPub, name, nil
}
