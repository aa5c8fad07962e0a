package tpm

import (
	"crypto"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/bootgate/bootgate/verifier/wire"
	"github.com/google/go-tpm/tpm2"
)

// AKAlg is the algorithm of an attestation key.
type AKAlg int

// Attestation key algorithms.
const (
	AKECCP256 AKAlg = iota // ECC NIST P-256, ECDSA-SHA256
	AKRSA2048              // RSA 2048, RSASSA-PKCS1-v1_5-SHA256
)

// String names the algorithm.
func (a AKAlg) String() string {
	switch a {
	case AKECCP256:
		return "ecc-p256"
	case AKRSA2048:
		return "rsa2048"
	}
	return fmt.Sprintf("AKAlg(%d)", int(a))
}

// uniqueSize is the number of random bytes in an AK template's unique field.
const uniqueSize = 32

// AK is a fresh attestation key: a restricted signing key (fixedTPM,
// fixedParent, sensitiveDataOrigin, userWithAuth, restricted, sign; nameAlg
// SHA-256; empty auth) created as a primary key in the owner hierarchy from a
// template with a random unique field, so each boot's AK is new and nothing is
// persisted. Close flushes it.
type AK struct {
	tpm    *TPM
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	params wire.AKParams
	closed bool
}

// akTemplate returns the AK template for alg with the given unique value.
func akTemplate(alg AKAlg, unique []byte) (tpm2.TPMTPublic, error) {
	t := tpm2.TPMTPublic{
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			Restricted:          true,
			SignEncrypt:         true,
		},
	}
	null := tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}
	switch alg {
	case AKECCP256:
		t.Type = tpm2.TPMAlgECC
		t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: null,
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		})
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: unique},
		})
	case AKRSA2048:
		t.Type = tpm2.TPMAlgRSA
		t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: null,
			Scheme: tpm2.TPMTRSAScheme{
				Scheme:  tpm2.TPMAlgRSASSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			KeyBits: 2048,
		})
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: unique})
	default:
		return tpm2.TPMTPublic{}, fmt.Errorf("unknown AK algorithm %v", alg)
	}
	return t, nil
}

// NewAK creates a fresh attestation key of the given algorithm and certifies
// its creation with itself (TPM2_CertifyCreation), so that its Params pass
// go-attestation's ActivationParameters.CheckAKParameters.
func (t *TPM) NewAK(alg AKAlg) (ak *AK, err error) {
	unique := make([]byte, uniqueSize)
	if _, err := rand.Read(unique); err != nil {
		return nil, fmt.Errorf("create AK: read random unique: %w", err)
	}
	template, err := akTemplate(alg, unique)
	if err != nil {
		return nil, fmt.Errorf("create AK: %w", err)
	}
	created, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(template),
	}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("create AK: %w", err)
	}
	ak = &AK{tpm: t, handle: created.ObjectHandle, name: created.Name}
	defer func() {
		if err != nil {
			if cerr := ak.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
			ak = nil
		}
	}()

	certified, err := tpm2.CertifyCreation{
		SignHandle:     ak.authHandle(),
		ObjectHandle:   tpm2.NamedHandle{Handle: ak.handle, Name: ak.name},
		CreationHash:   created.CreationHash,
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		CreationTicket: created.CreationTicket,
	}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("certify AK creation: %w", err)
	}
	ak.params = wire.AKParams{
		Public:            created.OutPublic.Bytes(),
		CreateData:        created.CreationData.Bytes(),
		CreateAttestation: certified.CertifyInfo.Bytes(),
		CreateSignature:   tpm2.Marshal(certified.Signature),
	}
	return ak, nil
}

// authHandle returns the AK's handle with empty password authorisation.
func (a *AK) authHandle() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: a.handle, Name: a.name, Auth: tpm2.PasswordAuth(nil)}
}

// Params returns the AK's parameters for the verifier: its TPMT_PUBLIC, the
// TPMS_CREATION_DATA of its creation, and the TPMS_ATTEST of type creation and
// TPMT_SIGNATURE with which it certified that creation itself. None carries a
// TPM2B size prefix.
func (a *AK) Params() wire.AKParams {
	return a.params
}

// Close flushes the AK. Closing it again does nothing.
func (a *AK) Close() error {
	if a.closed {
		return nil
	}
	if _, err := (tpm2.FlushContext{FlushHandle: a.handle}).Execute(a.tpm.tr); err != nil {
		return fmt.Errorf("flush AK %#x: %w", uint32(a.handle), err)
	}
	a.closed = true
	return nil
}

// ActivateCredential runs TPM2_ActivateCredential with the AK as activateHandle
// (empty password) and ek as keyHandle, authorised by a policy session that
// satisfies the TCG EK policy A (TPM2_PolicySecret(TPM_RH_ENDORSEMENT)) or, for
// high-range EKs, policy B (policy A, then TPM2_PolicyOR(A, C)). Other EK
// policies give ErrUnsupportedEK.
//
// credential and secret are what go-tpm's tpm2.CreateCredential returns: the
// TPMS_ID_OBJECT contents and the encrypted seed, without TPM2B size prefixes.
// Their TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET forms, with the 2-byte size
// prefixes (as go-attestation's ActivationParameters.Generate produces), are
// accepted too: the two encodings cannot be mistaken for each other.
//
// It returns the decrypted credential value.
func (a *AK) ActivateCredential(ek EK, credential, secret []byte) (value []byte, err error) {
	if a.closed {
		return nil, errors.New("activate credential: AK is closed")
	}
	orBranches, err := ekPolicyOr(&ek.pub)
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	idObject, err := idObjectContents(credential)
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	encSecret, err := encryptedSecretContents(&ek.pub, secret)
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}

	tr := a.tpm.tr
	sess, closeSess, err := tpm2.PolicySession(tr, ek.pub.NameAlg, 16)
	if err != nil {
		return nil, fmt.Errorf("activate credential: start EK policy session: %w", err)
	}
	defer func() {
		if cerr := closeSess(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("flush EK policy session: %w", cerr))
			value = nil
		}
	}()
	if _, err := (tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		PolicySession: sess.Handle(),
		NonceTPM:      sess.NonceTPM(),
	}).Execute(tr); err != nil {
		return nil, fmt.Errorf("activate credential: satisfy EK policy secret: %w", err)
	}
	if orBranches != nil {
		if _, err := (tpm2.PolicyOr{
			PolicySession: sess.Handle(),
			PHashList:     tpm2.TPMLDigest{Digests: orBranches},
		}).Execute(tr); err != nil {
			return nil, fmt.Errorf("activate credential: satisfy EK policy OR: %w", err)
		}
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: a.authHandle(),
		KeyHandle:      tpm2.AuthHandle{Handle: ek.Handle, Name: ek.name, Auth: sess},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: idObject},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encSecret},
	}.Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	return rsp.CertInfo.Buffer, nil
}

// idObjectContents returns the TPMS_ID_OBJECT in credential, which may carry
// its TPM2B_ID_OBJECT size prefix or not. A TPMS_ID_OBJECT starts with the
// size of its integrity HMAC, which is less than its length minus 2 (the
// encrypted identity follows), so a first uint16 equal to the length minus 2
// can only be a TPM2B prefix.
func idObjectContents(credential []byte) ([]byte, error) {
	if len(credential) < 4 {
		return nil, fmt.Errorf("credential too short: %d bytes", len(credential))
	}
	if int(binary.BigEndian.Uint16(credential)) == len(credential)-2 {
		return credential[2:], nil
	}
	return credential, nil
}

// encryptedSecretContents returns the encrypted seed in secret, which may carry
// its TPM2B_ENCRYPTED_SECRET size prefix or not. For an RSA EK the seed is
// exactly as long as the modulus; for an ECC EK it is a TPMS_ECC_POINT, whose
// first uint16 (the X size) is never its length minus 2.
func encryptedSecretContents(ek *tpm2.TPMTPublic, secret []byte) ([]byte, error) {
	if len(secret) < 4 {
		return nil, fmt.Errorf("secret too short: %d bytes", len(secret))
	}
	if ek.Type == tpm2.TPMAlgRSA {
		if n, err := ek.Unique.RSA(); err == nil && len(secret) == len(n.Buffer) {
			return secret, nil
		}
	}
	if int(binary.BigEndian.Uint16(secret)) == len(secret)-2 {
		return secret[2:], nil
	}
	return secret, nil
}

// Quote quotes the given SHA-256 PCRs over nonce (the qualifying data) with the
// AK's signing scheme. It returns the TPMS_ATTEST (no size prefix) and the
// marshalled TPMT_SIGNATURE, as go-attestation's AKPublic.Verify expects.
func (a *AK) Quote(nonce []byte, pcrs []int) (quote, sig []byte, err error) {
	return a.QuoteBank(nonce, crypto.SHA256, pcrs)
}

// QuoteBank is Quote of the PCRs of bank h: crypto.SHA256 or crypto.SHA1.
func (a *AK) QuoteBank(nonce []byte, h crypto.Hash, pcrs []int) (quote, sig []byte, err error) {
	if a.closed {
		return nil, nil, errors.New("quote: AK is closed")
	}
	sel, err := bankSelection(h, pcrs)
	if err != nil {
		return nil, nil, fmt.Errorf("quote: %w", err)
	}
	rsp, err := tpm2.Quote{
		SignHandle:     a.authHandle(),
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      sel,
	}.Execute(a.tpm.tr)
	if err != nil {
		return nil, nil, fmt.Errorf("quote: %w", err)
	}
	return rsp.Quoted.Bytes(), tpm2.Marshal(rsp.Signature), nil
}
