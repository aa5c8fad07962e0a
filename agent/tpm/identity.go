package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// identityUnique makes the identity key a deterministic primary key of the
// owner hierarchy: the production OS recreates the very same TPM-resident key
// from this template (no key blob to carry), and it changes only if the TPM
// is cleared.
var identityUnique = []byte("bootgate host identity v1")

// IdentityTemplate is the identity key's template: ECC P-256, ECDSA-SHA256,
// an unrestricted signing key (it signs TLS handshakes) that never leaves the
// TPM (fixedTPM, fixedParent, sensitiveDataOrigin).
func IdentityTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			CurveID: tpm2.TPMECCNistP256,
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: identityUnique},
		}),
	}
}

// Key is a TPM-resident signing key that stays loaded until Close.
type Key struct {
	tpm    *TPM
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public []byte
	pub    *ecdsa.PublicKey
}

// IdentityKey loads the host identity key (see IdentityTemplate).
func (t *TPM) IdentityKey() (*Key, error) {
	created, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(IdentityTemplate()),
	}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("load identity key: %w", err)
	}
	k := &Key{tpm: t, handle: created.ObjectHandle, name: created.Name, public: created.OutPublic.Bytes()}
	pub, err := created.OutPublic.Contents()
	if err == nil {
		var cp crypto.PublicKey
		if cp, err = tpm2.Pub(*pub); err == nil {
			var ok bool
			if k.pub, ok = cp.(*ecdsa.PublicKey); !ok {
				err = errors.New("not an ECDSA key")
			}
		}
	}
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("load identity key: %w", err)
	}
	return k, nil
}

// Public is the key's TPMT_PUBLIC.
func (k *Key) Public() []byte { return k.public }

// Close flushes the key.
func (k *Key) Close() error {
	if k.handle == 0 {
		return nil
	}
	_, err := tpm2.FlushContext{FlushHandle: k.handle}.Execute(k.tpm.tr)
	k.handle = 0
	return err
}

// Certify has the AK certify key (TPM2_Certify): the verifier learns that
// key lives in the same TPM as the AK, with the attributes it was made with.
// qualifying is the verifier's nonce; the result is the TPMS_ATTEST and the
// marshalled TPMT_SIGNATURE.
func (a *AK) Certify(key *Key, qualifying []byte) (attest, sig []byte, err error) {
	rsp, err := tpm2.Certify{
		ObjectHandle:   tpm2.AuthHandle{Handle: key.handle, Name: key.name, Auth: tpm2.PasswordAuth(nil)},
		SignHandle:     a.authHandle(),
		QualifyingData: tpm2.TPM2BData{Buffer: qualifying},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}.Execute(a.tpm.tr)
	if err != nil {
		return nil, nil, fmt.Errorf("certify key: %w", err)
	}
	return rsp.CertifyInfo.Bytes(), tpm2.Marshal(rsp.Signature), nil
}

// Signer returns a crypto.Signer that signs with the key inside the TPM
// (ECDSA over SHA-256 digests), for TLS client authentication.
func (k *Key) Signer() crypto.Signer { return keySigner{k} }

type keySigner struct{ k *Key }

func (s keySigner) Public() crypto.PublicKey { return s.k.pub }

// Sign signs a SHA-256 digest and returns an ASN.1 ECDSA signature.
func (s keySigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("tpm signer: hash %v not supported, only SHA-256", opts.HashFunc())
	}
	rsp, err := tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: s.k.handle, Name: s.k.name, Auth: tpm2.PasswordAuth(nil)},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(s.k.tpm.tr)
	if err != nil {
		return nil, fmt.Errorf("tpm sign: %w", err)
	}
	e, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("tpm sign: %w", err)
	}
	return asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(e.SignatureR.Buffer), new(big.Int).SetBytes(e.SignatureS.Buffer),
	})
}
