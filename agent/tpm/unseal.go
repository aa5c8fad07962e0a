package tpm

import (
	"crypto"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// SealedBlob is a secret the verifier sealed to this TPM's EK under a PCR
// policy (verifier/seal.Blob, which has the same fields and JSON names; the
// agent does not import verifier packages other than wire). Binary fields
// carry no TPM2B size prefix.
type SealedBlob struct {
	Public        []byte `json:"public"`         // TPMT_PUBLIC of the sealed-data (keyed-hash) object
	Duplicate     []byte `json:"duplicate"`      // TPM2B_PRIVATE contents for TPM2_Import
	EncryptedSeed []byte `json:"encrypted_seed"` // TPM2B_ENCRYPTED_SECRET contents for TPM2_Import
	PCRs          []int  `json:"pcrs"`           // PCRs of the object's TPM2_PolicyPCR policy
	// Bank is the bank of PCRs: crypto.SHA256 (also for 0) or crypto.SHA1.
	Bank crypto.Hash `json:"-"`
}

// Unseal imports blob under the EK (TPM2_Import with the EK as parent), loads
// it (TPM2_Load) and unseals it (TPM2_Unseal) in a policy session that runs
// TPM2_PolicyPCR over the blob's SHA-256 PCR selection with the TPM's current
// values. It returns the secret.
//
// Import and Load use the EK as parent and so need its authorisation: a policy
// session satisfying the TCG EK policy A or B, as ActivateCredential uses;
// other EK policies give ErrUnsupportedEK. The PCR policy session is salted
// with the EK and encrypts the unsealed secret on its way out of the TPM, so
// that it does not cross the bus in the clear.
//
// Unseal fails if the blob was sealed to another TPM's EK (the import's
// integrity check fails) or if any selected PCR differs from the value it was
// sealed to (the policy check fails). It flushes the sessions and the object it
// loaded, whatever the outcome; the EK stays loaded.
func (t *TPM) Unseal(ek EK, blob *SealedBlob) (secret []byte, err error) {
	if blob == nil {
		return nil, errors.New("unseal: nil blob")
	}
	sealedPub, err := parseSealedPublic(blob.Public)
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	if len(blob.Duplicate) == 0 || len(blob.EncryptedSeed) == 0 {
		return nil, errors.New("unseal: blob has no duplicate or no encrypted seed")
	}
	sel, err := bankSelection(blob.Bank, blob.PCRs)
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	orBranches, err := ekPolicyOr(&ek.pub)
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}

	tr := t.tr
	ekSess, closeEKSess, err := tpm2.PolicySession(tr, ek.pub.NameAlg, 16)
	if err != nil {
		return nil, fmt.Errorf("unseal: start EK policy session: %w", err)
	}
	defer func() {
		if cerr := closeEKSess(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("unseal: flush EK policy session: %w", cerr))
			secret = nil
		}
	}()
	parent := func() tpm2.AuthHandle {
		return tpm2.AuthHandle{Handle: ek.Handle, Name: ek.name, Auth: ekSess}
	}

	// The TPM resets a policy session after each command it authorises:
	// satisfy the EK policy again before each use.
	if err := satisfyEKPolicy(tr, ekSess, orBranches); err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	imported, err := tpm2.Import{
		ParentHandle: parent(),
		ObjectPublic: tpm2.New2B(*sealedPub),
		Duplicate:    tpm2.TPM2BPrivate{Buffer: blob.Duplicate},
		InSymSeed:    tpm2.TPM2BEncryptedSecret{Buffer: blob.EncryptedSeed},
		Symmetric:    tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
	}.Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("unseal: import under the EK: %w", err)
	}

	if err := satisfyEKPolicy(tr, ekSess, orBranches); err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	loaded, err := tpm2.Load{
		ParentHandle: parent(),
		InPrivate:    imported.OutPrivate,
		InPublic:     tpm2.New2B(*sealedPub),
	}.Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("unseal: load sealed object: %w", err)
	}
	defer func() {
		if _, ferr := (tpm2.FlushContext{FlushHandle: loaded.ObjectHandle}).Execute(tr); ferr != nil {
			err = errors.Join(err, fmt.Errorf("unseal: flush sealed object %#x: %w", uint32(loaded.ObjectHandle), ferr))
			secret = nil
		}
	}()

	pcrSess, closePCRSess, err := tpm2.PolicySession(tr, tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(ek.Handle, ek.pub),
		tpm2.AESEncryption(128, tpm2.EncryptOut))
	if err != nil {
		return nil, fmt.Errorf("unseal: start PCR policy session: %w", err)
	}
	defer func() {
		if cerr := closePCRSess(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("unseal: flush PCR policy session: %w", cerr))
			secret = nil
		}
	}()
	if _, err := (tpm2.PolicyPCR{
		PolicySession: pcrSess.Handle(),
		Pcrs:          sel,
	}).Execute(tr); err != nil {
		return nil, fmt.Errorf("unseal: PCR policy: %w", err)
	}
	rsp, err := tpm2.Unseal{
		ItemHandle: tpm2.AuthHandle{Handle: loaded.ObjectHandle, Name: loaded.Name, Auth: pcrSess},
	}.Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	return rsp.OutData.Buffer, nil
}

// satisfyEKPolicy runs, in policy session sess, the commands that satisfy the
// EK's policy A (TPM2_PolicySecret(TPM_RH_ENDORSEMENT)) and, with orBranches
// (see ekPolicyOr), policy B's TPM2_PolicyOR.
func satisfyEKPolicy(tr *countingTransport, sess tpm2.Session, orBranches []tpm2.TPM2BDigest) error {
	if _, err := (tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		PolicySession: sess.Handle(),
		NonceTPM:      sess.NonceTPM(),
	}).Execute(tr); err != nil {
		return fmt.Errorf("satisfy EK policy secret: %w", err)
	}
	if orBranches != nil {
		if _, err := (tpm2.PolicyOr{
			PolicySession: sess.Handle(),
			PHashList:     tpm2.TPMLDigest{Digests: orBranches},
		}).Execute(tr); err != nil {
			return fmt.Errorf("satisfy EK policy OR: %w", err)
		}
	}
	return nil
}

// parseSealedPublic decodes the sealed object's TPMT_PUBLIC and checks that it
// is a sealed-data object that can be imported: a keyed-hash object without
// fixedTPM or fixedParent, with a policy.
func parseSealedPublic(b []byte) (pub *tpm2.TPMTPublic, err error) {
	defer func() {
		if r := recover(); r != nil {
			pub, err = nil, fmt.Errorf("malformed sealed object TPMT_PUBLIC: %v", r)
		}
	}()
	if len(b) == 0 {
		return nil, errors.New("blob has no public area")
	}
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, fmt.Errorf("malformed sealed object TPMT_PUBLIC: %w", err)
	}
	a := pub.ObjectAttributes
	switch {
	case pub.Type != tpm2.TPMAlgKeyedHash:
		return nil, fmt.Errorf("sealed object of type %v, want keyed-hash", pub.Type)
	case a.FixedTPM || a.FixedParent:
		return nil, errors.New("sealed object is fixedTPM or fixedParent and cannot be imported")
	case len(pub.AuthPolicy.Buffer) == 0:
		return nil, errors.New("sealed object has no authorization policy")
	}
	return pub, nil
}
