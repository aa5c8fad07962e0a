package attest

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"

	goattest "github.com/google/go-attestation/attest"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/verifier/wire"
)

// ErrIdentity reports an identity key that the AK did not certify as a
// TPM-resident key over this session's nonce.
var ErrIdentity = errors.New("identity key not certified")

// VerifyIdentityKey checks that the AK certified req's key (TPM2_Certify)
// over nonce, and that the key is a TPM-resident signing key that never
// leaves its TPM (fixedTPM, fixedParent, sensitiveDataOrigin, sign, not
// decrypt). Its public area, the certify attestation and the signature
// must each be exactly one canonical encoding (ErrIdentity and
// ErrNotCanonical). It returns the key's public key.
func (e *Enrollment) VerifyIdentityKey(req *wire.IdentityRequest, nonce []byte) (crypto.PublicKey, error) {
	if err := checkCanonical[tpm2.TPMTPublic]("identity key TPMT_PUBLIC", req.Public, quickPublic); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	if err := checkCanonical[tpm2.TPMSAttest]("identity key certify TPMS_ATTEST", req.CertifyInfo, quickAttest); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	if err := checkCanonical[tpm2.TPMTSignature]("identity key certify TPMT_SIGNATURE", req.Signature, quickSignature); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	cp := goattest.CertificationParameters{Public: req.Public, CreateAttestation: req.CertifyInfo, CreateSignature: req.Signature}
	if err := cp.Verify(goattest.VerifyOpts{Public: e.akPublic.Public, Hash: e.akPublic.Hash}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	att, err := legacy.DecodeAttestationData(req.CertifyInfo)
	if err != nil || att.Type != legacy.TagAttestCertify {
		return nil, fmt.Errorf("%w: not a certify attestation", ErrIdentity)
	}
	if !bytes.Equal(att.ExtraData, nonce) {
		return nil, fmt.Errorf("%w: certified over another nonce", ErrIdentity)
	}
	pub, err := legacy.DecodePublic(req.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	a := pub.Attributes
	if a&legacy.FlagSign == 0 || a&legacy.FlagDecrypt != 0 || a&legacy.FlagRestricted != 0 {
		return nil, fmt.Errorf("%w: not an unrestricted signing key", ErrIdentity)
	}
	key, err := pub.Key()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	return key, nil
}
