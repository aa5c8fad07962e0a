// Package softtpm impersonates a TPM 2.0 in software, for load tests that
// play many hosts against a real appliance: each TPM has its own
// endorsement key (ECC NIST P-256, TCG EK template L-2) certified by a
// Manufacturer, an attestation key with its certified creation, a host
// identity key, and SHA-256 PCRs replayed from a firmware event log.
//
// It answers what the agent asks of its TPM with the structures and
// computations of the TPM 2.0 Library specification, marshalled by go-tpm's
// tpm2 package, so that the appliance does all its real work on them:
//
//   - TPM2_CertifyCreation of the AK (Part 3 §18.3; TPMS_CREATION_DATA,
//     Part 2 §15.1; TPMS_ATTEST of type TPM_ST_ATTEST_CREATION, §10.12.12);
//   - TPM2_ActivateCredential (Part 3 §12.5), protecting the credential as
//     Part 1 §24 specifies: the seed recovered from the ECDH point with
//     KDFe and the label "IDENTITY" (Part 1 §11.4.10.3, Annex C.6.1), the
//     integrity HMAC keyed by KDFa("INTEGRITY") over encIdentity ‖ name
//     (§24.5), and AES-CFB with a zero IV under KDFa("STORAGE", name)
//     (§24.4);
//   - TPM2_Quote (Part 3 §18.4) and TPM2_Certify (§18.2), ECDSA-SHA256;
//   - TPM2_Import of a duplicate with an outer wrapper only (Part 1,
//     "Outer Duplication Wrapper"; seed label "DUPLICATE"), then TPM2_PolicyPCR and TPM2_Unseal of the
//     sealed-data object: Unseal refuses what a TPM would refuse (a wrong
//     integrity HMAC, a public area that does not match the sensitive one,
//     a policy other than the PCR policy of the current PCR values).
//
// Keys live in process memory: this is a test double, never a TPM.
package softtpm

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// Errors a TPM would answer with.
var (
	// ErrIntegrity is a credential or duplicate whose integrity HMAC does
	// not verify: it was made for another EK or another object name
	// (TPM_RC_INTEGRITY).
	ErrIntegrity = errors.New("integrity check failed")
	// ErrPolicy is a sealed object whose authPolicy is not the PCR policy
	// of this TPM's PCR values (TPM_RC_POLICY_FAIL).
	ErrPolicy = errors.New("policy check failed")
)

// NumPCRs is the number of PCRs of a PC Client TPM.
const NumPCRs = 24

// ownerHandle is TPM_RH_OWNER: the AK and the identity key are primary keys
// of the owner hierarchy, as agent/tpm makes them.
const ownerHandle = tpm2.TPMRHOwner

// TPM is one software TPM. Its methods may be called from one goroutine at
// a time.
type TPM struct {
	ek       *ecdh.PrivateKey
	ekPub    tpm2.TPMTPublic
	ekPublic []byte // TPMT_PUBLIC
	ekCert   []byte // DER
	ekX      []byte

	ak     *ecdsa.PrivateKey
	akName []byte // TPM2B_NAME contents: nameAlg ‖ SHA-256(TPMT_PUBLIC)
	akQN   []byte // qualified name
	akPub  []byte // TPMT_PUBLIC
	akCD   []byte // TPMS_CREATION_DATA
	akAtt  []byte // TPMS_ATTEST of type creation
	akSig  []byte // TPMT_SIGNATURE

	id       *ecdsa.PrivateKey
	idPublic []byte
	idName   []byte
	idQN     []byte

	pcrs  [NumPCRs][sha256.Size]byte
	clock uint64
	rand  io.Reader
}

// New manufactures a TPM: a fresh ECC P-256 EK certified by m, a fresh AK
// with its creation certified by itself, a fresh identity key, and all PCRs
// zero. rand is crypto/rand.Reader when nil.
func New(m *Manufacturer, rnd io.Reader) (*TPM, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	t := &TPM{rand: rnd}
	ekKey, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, fmt.Errorf("generate EK: %w", err)
	}
	if t.ek, err = ekKey.ECDH(); err != nil {
		return nil, fmt.Errorf("generate EK: %w", err)
	}
	x, y := coords(&ekKey.PublicKey)
	t.ekX = x
	t.ekPub = tpm2.ECCEKTemplate
	t.ekPub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y},
	})
	t.ekPublic = tpm2.Marshal(t.ekPub)
	if t.ekCert, err = m.IssueEKCert(&ekKey.PublicKey); err != nil {
		return nil, err
	}
	if err := t.newAK(); err != nil {
		return nil, err
	}
	if t.id, err = ecdsa.GenerateKey(elliptic.P256(), rnd); err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	idPub := signingKeyPublic(&t.id.PublicKey, false)
	t.idPublic = tpm2.Marshal(idPub)
	if t.idName, t.idQN, err = names(&idPub); err != nil {
		return nil, fmt.Errorf("identity key name: %w", err)
	}
	return t, nil
}

// coords returns an ECC P-256 point's coordinates, 32 bytes each.
func coords(k *ecdsa.PublicKey) (x, y []byte) {
	b, err := k.Bytes() // uncompressed: 0x04 ‖ X ‖ Y
	if err != nil {
		panic(err) // a P-256 key always encodes
	}
	return b[1:33], b[33:65]
}

// signingKeyPublic is the TPMT_PUBLIC of an ECC P-256 ECDSA-SHA256 signing
// key that never leaves its TPM: restricted for an AK (as agent/tpm's AK
// template), unrestricted for the identity key (agent/tpm.IdentityTemplate).
func signingKeyPublic(k *ecdsa.PublicKey, restricted bool) tpm2.TPMTPublic {
	x, y := coords(k)
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
			Restricted: restricted, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y},
		}),
	}
}

// names returns a primary key's Name (nameAlg ‖ H(TPMT_PUBLIC), Part 1
// §16) and its qualified name under the owner hierarchy (H(parent's QN ‖
// Name), where a hierarchy's QN is its handle).
func names(pub *tpm2.TPMTPublic) (name, qn []byte, err error) {
	n, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, nil, err
	}
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(ownerHandle)))
	h.Write(n.Buffer)
	qn = binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMAlgSHA256))
	return n.Buffer, h.Sum(qn), nil
}

// newAK makes the AK as TPM2_CreatePrimary in the owner hierarchy and
// TPM2_CertifyCreation with the AK itself would.
func (t *TPM) newAK() error {
	var err error
	if t.ak, err = ecdsa.GenerateKey(elliptic.P256(), t.rand); err != nil {
		return fmt.Errorf("generate AK: %w", err)
	}
	pub := signingKeyPublic(&t.ak.PublicKey, true)
	t.akPub = tpm2.Marshal(pub)
	if t.akName, t.akQN, err = names(&pub); err != nil {
		return fmt.Errorf("AK name: %w", err)
	}
	ownerName := binary.BigEndian.AppendUint32(nil, uint32(ownerHandle))
	t.akCD = tpm2.Marshal(tpm2.TPMSCreationData{
		PCRSelect:           tpm2.TPMLPCRSelection{},
		PCRDigest:           tpm2.TPM2BDigest{Buffer: sha256.New().Sum(nil)},
		Locality:            tpm2.TPMALocality{TPMLocZero: true},
		ParentNameAlg:       tpm2.TPMAlgNull,
		ParentName:          tpm2.TPM2BName{Buffer: ownerName},
		ParentQualifiedName: tpm2.TPM2BName{Buffer: ownerName},
	})
	creationHash := sha256.Sum256(t.akCD)
	t.akAtt, t.akSig, err = t.attest(tpm2.TPMSTAttestCreation, nil, tpm2.NewTPMUAttest(tpm2.TPMSTAttestCreation, &tpm2.TPMSCreationInfo{
		ObjectName:   tpm2.TPM2BName{Buffer: t.akName},
		CreationHash: tpm2.TPM2BDigest{Buffer: creationHash[:]},
	}))
	return err
}

// attest makes a TPMS_ATTEST of the given type over extraData, signed by
// the AK with ECDSA-SHA256, and returns it with its TPMT_SIGNATURE.
func (t *TPM) attest(typ tpm2.TPMST, extraData []byte, info tpm2.TPMUAttest) (attest, sig []byte, err error) {
	t.clock += 7
	attest = tpm2.Marshal(tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            typ,
		QualifiedSigner: tpm2.TPM2BName{Buffer: t.akQN},
		ExtraData:       tpm2.TPM2BData{Buffer: extraData},
		ClockInfo:       tpm2.TPMSClockInfo{Clock: t.clock, Safe: true},
		FirmwareVersion: 0x0001000200000000,
		Attested:        info,
	})
	sig, err = signECDSA(t.rand, t.ak, attest)
	if err != nil {
		return nil, nil, err
	}
	return attest, sig, nil
}

// signECDSA signs SHA-256(msg) and returns a TPMT_SIGNATURE (TPM_ALG_ECDSA,
// R and S as 32-byte parameters).
func signECDSA(rnd io.Reader, k *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	digest := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rnd, k, digest[:])
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, 32))},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: s.FillBytes(make([]byte, 32))},
		}),
	}), nil
}

// EKCert is the EK certificate (DER), as the TPM's NV index 0x01c0000a
// holds it.
func (t *TPM) EKCert() []byte { return t.ekCert }

// EKPublic is the EK's TPMT_PUBLIC (no size prefix).
func (t *TPM) EKPublic() []byte { return t.ekPublic }

// AKParams returns the AK's TPMT_PUBLIC, TPMS_CREATION_DATA, and the
// TPMS_ATTEST and TPMT_SIGNATURE of its certified creation, none with a
// TPM2B size prefix (wire.AKParams' fields).
func (t *TPM) AKParams() (public, createData, createAttestation, createSignature []byte) {
	return t.akPub, t.akCD, t.akAtt, t.akSig
}

// IdentityPublic is the identity key's TPMT_PUBLIC.
func (t *TPM) IdentityPublic() []byte { return t.idPublic }

// IdentityKey is the identity key's public key, which an identity
// certificate for this TPM must certify.
func (t *TPM) IdentityKey() *ecdsa.PublicKey { return &t.id.PublicKey }

// eccSeed recovers a seed encapsulated to the EK (Part 1 §11.4.10.3 and
// Annex C.6.1, One-Pass Diffie-Hellman): encSecret is the ephemeral
// TPMS_ECC_POINT; the seed is KDFe(SHA-256, Z, label, ephemeral X, EK X,
// 256). It fails for a point that is not on P-256.
func (t *TPM) eccSeed(encSecret []byte, label string) ([]byte, error) {
	pt, err := tpm2.Unmarshal[tpm2.TPMSECCPoint](encSecret)
	if err != nil {
		return nil, fmt.Errorf("encrypted seed: %w", err)
	}
	if len(pt.X.Buffer) != 32 || len(pt.Y.Buffer) != 32 {
		return nil, errors.New("encrypted seed: not a P-256 point")
	}
	eph, err := ecdh.P256().NewPublicKey(append(append([]byte{4}, pt.X.Buffer...), pt.Y.Buffer...))
	if err != nil {
		return nil, fmt.Errorf("encrypted seed: %w", err)
	}
	z, err := t.ek.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("encrypted seed: %w", err)
	}
	return tpm2.KDFe(crypto.SHA256, z, label, pt.X.Buffer, t.ekX, sha256.Size*8), nil
}

// unwrap checks and decrypts a credential or duplicate protected under
// seed for the object named name (Part 1 §24.4–24.5, and the outer
// duplication wrapper, which protects a duplicate the same way): blob is
// TPM2B_DIGEST(HMAC) ‖ encrypted; the HMAC, keyed by KDFa(SHA-256, seed,
// "INTEGRITY", nil, nil, 256), is over encrypted ‖ name; the plaintext is
// AES-128-CFB (zero IV, the EK template's symmetric definition) under
// KDFa(SHA-256, seed, "STORAGE", name, nil, 128), and is a TPM2B whose
// contents unwrap returns.
func unwrap(seed, name, blob []byte) ([]byte, error) {
	if len(blob) < 2 {
		return nil, fmt.Errorf("%w: %d bytes", ErrIntegrity, len(blob))
	}
	n := int(binary.BigEndian.Uint16(blob))
	if n != sha256.Size || len(blob) < 2+n {
		return nil, fmt.Errorf("%w: integrity HMAC of %d bytes", ErrIntegrity, n)
	}
	want, enc := blob[2:2+n], blob[2+n:]
	mac := hmac.New(sha256.New, tpm2.KDFa(crypto.SHA256, seed, "INTEGRITY", nil, nil, sha256.Size*8))
	mac.Write(enc)
	mac.Write(name)
	if !hmac.Equal(mac.Sum(nil), want) {
		return nil, ErrIntegrity
	}
	block, err := aes.NewCipher(tpm2.KDFa(crypto.SHA256, seed, "STORAGE", name, nil, 128))
	if err != nil {
		return nil, err
	}
	plain := make([]byte, len(enc))
	cipher.NewCFBDecrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(plain, enc)
	if len(plain) < 2 || int(binary.BigEndian.Uint16(plain)) != len(plain)-2 {
		return nil, fmt.Errorf("%w: decrypted size does not match", ErrIntegrity)
	}
	return plain[2:], nil
}

// ActivateCredential does what TPM2_ActivateCredential with the AK as
// activateHandle and the EK as keyHandle does (Part 3 §12.5): it recovers
// the seed from secret (TPM2B_ENCRYPTED_SECRET contents, label
// "IDENTITY"), checks the integrity of credential (TPM2B_ID_OBJECT
// contents) for the AK's name, decrypts it and returns the credential
// value. A credential made for another EK or another AK fails with
// ErrIntegrity.
func (t *TPM) ActivateCredential(credential, secret []byte) ([]byte, error) {
	seed, err := t.eccSeed(secret, "IDENTITY")
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	v, err := unwrap(seed, t.akName, credential)
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	return v, nil
}

// pcrSelection is the SHA-256 bank selection of pcrs (PC Client, three
// select bytes).
func pcrSelection(pcrs []int) (tpm2.TPMLPCRSelection, error) {
	sel := make([]uint, 0, len(pcrs))
	for _, p := range pcrs {
		if p < 0 || p >= NumPCRs {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("PCR %d out of range", p)
		}
		sel = append(sel, uint(p))
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(sel...),
	}}}, nil
}

// pcrDigest is SHA-256 over the selected PCRs' values in ascending index
// order, as TPM2_Quote and TPM2_PolicyPCR compute it.
func (t *TPM) pcrDigest(pcrs []int) []byte {
	var in [NumPCRs]bool
	for _, p := range pcrs {
		in[p] = true
	}
	h := sha256.New()
	for i := range NumPCRs {
		if in[i] {
			h.Write(t.pcrs[i][:])
		}
	}
	return h.Sum(nil)
}

// Quote is TPM2_Quote with the AK over the SHA-256 PCRs pcrs and
// qualifying data qualifying: the TPMS_ATTEST and its TPMT_SIGNATURE.
func (t *TPM) Quote(qualifying []byte, pcrs []int) (quote, sig []byte, err error) {
	sel, err := pcrSelection(pcrs)
	if err != nil {
		return nil, nil, fmt.Errorf("quote: %w", err)
	}
	return t.attest(tpm2.TPMSTAttestQuote, qualifying, tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
		PCRSelect: sel, PCRDigest: tpm2.TPM2BDigest{Buffer: t.pcrDigest(pcrs)},
	}))
}

// CertifyIdentity is TPM2_Certify of the identity key by the AK over
// qualifying: the TPMS_ATTEST and its TPMT_SIGNATURE.
func (t *TPM) CertifyIdentity(qualifying []byte) (attest, sig []byte, err error) {
	return t.attest(tpm2.TPMSTAttestCertify, qualifying, tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{
		Name: tpm2.TPM2BName{Buffer: t.idName}, QualifiedName: tpm2.TPM2BName{Buffer: t.idQN},
	}))
}

// PCR returns the SHA-256 value of PCR i.
func (t *TPM) PCR(i int) []byte { return bytes.Clone(t.pcrs[i][:]) }

// Extend is TPM2_PCR_Extend of a SHA-256 digest into PCR i.
func (t *TPM) Extend(i int, digest []byte) error {
	if i < 0 || i >= NumPCRs || len(digest) != sha256.Size {
		return fmt.Errorf("extend PCR %d with %d bytes", i, len(digest))
	}
	h := sha256.New()
	h.Write(t.pcrs[i][:])
	h.Write(digest)
	h.Sum(t.pcrs[i][:0])
	return nil
}

// SetPCRs sets the SHA-256 PCRs to values (index → 32 bytes), as a replay
// of a firmware log leaves them (see Replay); the others keep theirs.
func (t *TPM) SetPCRs(values map[int][]byte) error {
	for i, v := range values {
		if i < 0 || i >= NumPCRs || len(v) != sha256.Size {
			return fmt.Errorf("set PCR %d to %d bytes", i, len(v))
		}
		copy(t.pcrs[i][:], v)
	}
	return nil
}

// Unseal does what agent/tpm.Unseal asks of a TPM: TPM2_Import of the
// sealed object (public: its TPMT_PUBLIC; duplicate: TPM2B_PRIVATE
// contents; encSeed: TPM2B_ENCRYPTED_SECRET contents) under the EK,
// TPM2_Load, TPM2_PolicyPCR over the SHA-256 PCRs pcrs with their current
// values, and TPM2_Unseal. It returns the secret, or fails as the TPM
// would: ErrIntegrity for a duplicate made for another EK or another
// public area, or whose sensitive area does not match the public one;
// ErrPolicy when the object's authPolicy is not that PCR policy.
func (t *TPM) Unseal(public, duplicate, encSeed []byte, pcrs []int) ([]byte, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		return nil, fmt.Errorf("unseal: public area: %w", err)
	}
	a := pub.ObjectAttributes
	if pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256 || a.FixedTPM || a.FixedParent {
		return nil, errors.New("unseal: not an importable SHA-256 keyed-hash object")
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	seed, err := t.eccSeed(encSeed, "DUPLICATE")
	if err != nil {
		return nil, fmt.Errorf("unseal: import: %w", err)
	}
	plain, err := unwrap(seed, name.Buffer, duplicate)
	if err != nil {
		return nil, fmt.Errorf("unseal: import: %w", err)
	}
	sens, err := tpm2.Unmarshal[tpm2.TPMTSensitive](plain)
	if err != nil || sens.SensitiveType != tpm2.TPMAlgKeyedHash {
		return nil, fmt.Errorf("unseal: import: %w: sensitive area is not a keyed-hash one", ErrIntegrity)
	}
	data, err := sens.Sensitive.Bits()
	if err != nil {
		return nil, fmt.Errorf("unseal: import: %w", err)
	}
	// Load: the public area's unique must be H(seedValue ‖ data).
	unique, err := pub.Unique.KeyedHash()
	if err != nil {
		return nil, fmt.Errorf("unseal: load: %w", err)
	}
	h := sha256.New()
	h.Write(sens.SeedValue.Buffer)
	h.Write(data.Buffer)
	if subtle.ConstantTimeCompare(h.Sum(nil), unique.Buffer) != 1 {
		return nil, fmt.Errorf("unseal: load: %w: public and sensitive areas do not match", ErrIntegrity)
	}
	// Unseal in a policy session: userWithAuth is clear, so only the
	// policy authorises it, and PolicyPCR leaves its digest in the session.
	if a.UserWithAuth {
		return nil, errors.New("unseal: the object can be used with its authValue, not only under its policy")
	}
	sel, err := pcrSelection(pcrs)
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: t.pcrDigest(pcrs)}, Pcrs: sel}).Update(calc); err != nil {
		return nil, err
	}
	if !bytes.Equal(calc.Hash().Digest, pub.AuthPolicy.Buffer) {
		return nil, fmt.Errorf("unseal: %w", ErrPolicy)
	}
	return data.Buffer, nil
}
