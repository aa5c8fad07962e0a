// Package seal encrypts secrets to a host's TPM so that only that TPM, in the
// boot state the verifier attested, can recover them.
//
// Seal builds, entirely in software, a TPM sealed-data object (a keyed-hash
// object holding the secret) and wraps it as a duplicate for TPM2_Import with
// the host's endorsement key as the new parent (go-tpm's tpm2.CreateDuplicate:
// outer wrapper only, seed encapsulated to the EK with the "DUPLICATE" label).
// The object's authPolicy is TPM2_PolicyPCR over the SHA-256 bank with the
// attested PCR values, and userWithAuth is clear, so the TPM releases the
// secret (TPM2_Unseal) only in a policy session whose PCRs hold exactly those
// values. The agent side is Unseal in agent/tpm.
//
// The package is pure code: no TPM and no network. It supports the EKs go-tpm
// can encapsulate to: RSA and ECC (NIST P-256, P-384, P-521) restricted
// decryption keys with an AES-CFB symmetric definition, which covers the TCG
// low-range (L-1, L-2) and high-range (H-1 to H-7) EK templates.
package seal

import (
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// Limits of what can be sealed.
const (
	// MaxSecretSize is the largest secret a sealed-data object holds: the
	// TPM's MAX_SYM_DATA (TPM2B_SENSITIVE_DATA), 128 bytes on every TPM.
	// Seal a key to larger data, not the data itself.
	MaxSecretSize = 128
	// NumPCRs is the number of PCRs of a PC Client TPM; indices are 0 to 23.
	NumPCRs = 24
)

// Blob is a sealed secret, as the verifier sends it to the agent. It mirrors
// agent/tpm's SealedBlob field for field, with the same JSON names. Binary
// fields are TPM wire-format structures without TPM2B size prefixes, as
// elsewhere in the agent–verifier protocol, carried as base64 by
// encoding/json.
type Blob struct {
	// Public is the TPMT_PUBLIC of the sealed-data object: a keyed-hash
	// object (nameAlg SHA-256, no scheme) whose authPolicy is the PCR
	// policy, with fixedTPM, fixedParent and userWithAuth clear.
	Public []byte `json:"public"`
	// Duplicate is the TPM2B_PRIVATE contents for TPM2_Import: the outer
	// HMAC and the encrypted TPM2B_SENSITIVE.
	Duplicate []byte `json:"duplicate"`
	// EncryptedSeed is the TPM2B_ENCRYPTED_SECRET contents for TPM2_Import:
	// the import seed encapsulated to the EK.
	EncryptedSeed []byte `json:"encrypted_seed"`
	// PCRs are the PCRs of Bank the policy covers, in ascending order; the
	// agent runs TPM2_PolicyPCR over exactly this selection.
	PCRs []int `json:"pcrs"`
	// Bank is the PCR bank of PCRs: crypto.SHA256 or crypto.SHA1. It
	// travels beside the blob (wire.Credential.PCRBank), not in it.
	Bank crypto.Hash `json:"-"`
}

// Seal encrypts secret so that only the TPM holding the EK (ekPublic:
// TPMT_PUBLIC bytes) can import it, and it can be used (unsealed) only while
// the SHA-256 PCRs have exactly the given values.
//
// pcrs maps PCR indices (0-23) to their 32-byte SHA-256 values, normally the
// quoted ones; it must not be empty. secret must hold 1 to MaxSecretSize
// bytes. rand supplies the object's obfuscation seed and the encapsulation
// randomness (crypto/rand.Reader in production).
func Seal(rand io.Reader, ekPublic []byte, pcrs map[int][]byte, secret []byte) (*Blob, error) {
	ek, err := parseEK(ekPublic)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return SealTo(rand, ek, crypto.SHA256, pcrs, secret)
}

// SealTo is Seal to the PCRs of the bank h (crypto.SHA256, or crypto.SHA1
// with pcrs holding 20-byte values), for an EK whose TPMT_PUBLIC the caller
// has decoded already (the verifier decodes it once per enrollment): ek
// must be an RSA or ECC restricted decryption key, as Seal checks.
func SealTo(rand io.Reader, ek *tpm2.TPMTPublic, h crypto.Hash, pcrs map[int][]byte, secret []byte) (*Blob, error) {
	if rand == nil {
		return nil, errors.New("seal: nil random source")
	}
	switch {
	case len(secret) == 0:
		return nil, errors.New("seal: empty secret")
	case len(secret) > MaxSecretSize:
		return nil, fmt.Errorf("seal: secret of %d bytes exceeds the TPM's %d-byte limit", len(secret), MaxSecretSize)
	}
	if err := checkEK(ek); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	ekKey, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		return nil, fmt.Errorf("seal: EK cannot be encapsulated to: %w", err)
	}
	policy, indices, err := PCRPolicyBank(h, pcrs)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}

	public, sensitive, err := sealedObject(rand, policy, secret)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	// The public area is marshalled once: its Name (TPM 2.0 Part 1, §16:
	// nameAlg ‖ SHA-256 of the marshalled TPMT_PUBLIC) is computed from
	// the very bytes the agent imports.
	publicBytes := tpm2.Marshal(public)
	digest := sha256.Sum256(publicBytes)
	name := binary.BigEndian.AppendUint16(make([]byte, 0, 2+sha256.Size), uint16(tpm2.TPMAlgSHA256))
	name = append(name, digest[:]...)
	duplicate, seed, err := tpm2.CreateDuplicate(rand, ekKey, name, tpm2.Marshal(sensitive))
	if err != nil {
		return nil, fmt.Errorf("seal: wrap for import under the EK: %w", err)
	}
	return &Blob{
		Public:        publicBytes,
		Duplicate:     duplicate,
		EncryptedSeed: seed,
		PCRs:          indices,
		Bank:          h,
	}, nil
}

// PCRPolicy returns the policy digest (SHA-256) of TPM2_PolicyPCR over the
// SHA-256 bank selection of pcrs' indices, with pcrDigest = SHA-256 of the
// values concatenated in ascending PCR order, starting from an empty policy:
//
//	policyDigest = SHA-256(0…0 || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || pcrDigest)
//
// It also returns the sorted indices. The selection is encoded as agent/tpm
// encodes it (three select bytes, PC Client), which the digest depends on.
func PCRPolicy(pcrs map[int][]byte) (digest []byte, indices []int, err error) {
	return PCRPolicyBank(crypto.SHA256, pcrs)
}

// PCRPolicyBank is PCRPolicy over the selection of the bank bank
// (crypto.SHA256 or crypto.SHA1); pcrDigest is still SHA-256, the policy's
// hash, of the values of that bank.
func PCRPolicyBank(bank crypto.Hash, pcrs map[int][]byte) (digest []byte, indices []int, err error) {
	alg := tpm2.TPMAlgSHA256
	switch bank {
	case crypto.SHA256:
	case crypto.SHA1:
		alg = tpm2.TPMAlgSHA1
	default:
		return nil, nil, fmt.Errorf("no PCR policy over the %v bank", bank)
	}
	if len(pcrs) == 0 {
		return nil, nil, errors.New("no PCRs to seal to")
	}
	indices = slices.Sorted(maps.Keys(pcrs))
	sel := make([]uint, 0, len(indices))
	h := sha256.New()
	for _, i := range indices {
		if i < 0 || i >= NumPCRs {
			return nil, nil, fmt.Errorf("PCR %d out of range 0-%d", i, NumPCRs-1)
		}
		if len(pcrs[i]) != bank.Size() {
			return nil, nil, fmt.Errorf("PCR %d: value of %d bytes, want a %d-byte %v digest", i, len(pcrs[i]), bank.Size(), bank)
		}
		sel = append(sel, uint(i))
		h.Write(pcrs[i])
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("compute PCR policy: %w", err)
	}
	if err := (tpm2.PolicyPCR{
		PcrDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)},
		Pcrs: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
			Hash:      alg,
			PCRSelect: tpm2.PCClientCompatible.PCRs(sel...),
		}}},
	}).Update(calc); err != nil {
		return nil, nil, fmt.Errorf("compute PCR policy: %w", err)
	}
	return calc.Hash().Digest, indices, nil
}

// sealedObject builds the public and sensitive areas of a sealed-data object
// holding secret under authPolicy policy. Its unique field is
// SHA-256(seedValue || secret) (TPM 2.0 Part 1, "Public Area Creation").
func sealedObject(rand io.Reader, policy, secret []byte) (*tpm2.TPMTPublic, *tpm2.TPMTSensitive, error) {
	obfuscation := make([]byte, sha256.Size)
	if _, err := io.ReadFull(rand, obfuscation); err != nil {
		return nil, nil, fmt.Errorf("read obfuscation value: %w", err)
	}
	unique := sha256.New()
	unique.Write(obfuscation)
	unique.Write(secret)
	public := &tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		// TPM2_Import requires fixedTPM and fixedParent clear. With
		// userWithAuth clear and adminWithPolicy set, only a policy
		// session satisfying authPolicy can use the object at all.
		ObjectAttributes: tpm2.TPMAObject{
			AdminWithPolicy: true,
			NoDA:            true,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique.Sum(nil)}),
	}
	sensitive := &tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: obfuscation},
		Sensitive: tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{
			Buffer: secret,
		}),
	}
	return public, sensitive, nil
}

// parseEK decodes the EK's TPMT_PUBLIC (SealTo checks it).
// go-tpm reports malformed input as errors; the recover guards the verifier
// against a library bug on hostile input all the same.
func parseEK(b []byte) (pub *tpm2.TPMTPublic, err error) {
	defer func() {
		if r := recover(); r != nil {
			pub, err = nil, fmt.Errorf("malformed EK TPMT_PUBLIC: %v", r)
		}
	}()
	if len(b) == 0 {
		return nil, errors.New("empty EK TPMT_PUBLIC")
	}
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, fmt.Errorf("malformed EK TPMT_PUBLIC: %w", err)
	}
	return pub, nil
}

// checkEK checks that an EK can be an import parent: a restricted
// decryption (storage) key of type RSA or ECC.
func checkEK(pub *tpm2.TPMTPublic) error {
	if pub == nil {
		return errors.New("no EK")
	}
	a := pub.ObjectAttributes
	switch {
	case pub.Type != tpm2.TPMAlgRSA && pub.Type != tpm2.TPMAlgECC:
		return fmt.Errorf("EK of unsupported type %v", pub.Type)
	case !a.Restricted || !a.Decrypt || a.SignEncrypt:
		return errors.New("EK is not a restricted decryption key, so it cannot be an import parent")
	}
	return nil
}
