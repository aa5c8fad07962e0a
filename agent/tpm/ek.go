package tpm

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/internal/keytype"
)

// ErrUnsupportedEK is returned by ActivateCredential for an EK whose
// authorisation policy is neither the TCG EK policy A (TPM2_PolicySecret of
// the endorsement hierarchy) nor policy B (policy A OR policy C), so that this
// package cannot authorise its use. The agent should try another EK.
var ErrUnsupportedEK = errors.New("unsupported EK authorization policy")

// NV and handle ranges.
const (
	persistentFirst = 0x81000000 // first persistent object handle
	nvChunkDefault  = 512        // NV read size when the TPM does not report TPM_PT_NV_BUFFER_MAX
)

// EK is one endorsement key of this TPM: one that has a certificate in NV, or
// the default RSA EK if the TPM has no usable certificate at all.
type EK struct {
	Cert   []byte         // DER EK certificate read from NV, nil if none
	Public []byte         // the EK's TPMT_PUBLIC as the TPM returned it (tpm2.Marshal form, no size prefix)
	Handle tpm2.TPMHandle // where the EK key is loaded: persistent, or transient from CreatePrimary
	Type   string         // "rsa2048", "ecc-p256", "ecc-p384", ...

	name      tpm2.TPM2BName  // the key's TPM Name, for authorised commands
	pub       tpm2.TPMTPublic // Public, parsed
	transient bool            // Handle was created by EKs and must be flushed
	template  tpm2.TPMTPublic // what a transient EK was created from
}

// ekSlot is a TCG-registered NV index for an EK certificate and the template of
// the key it certifies, from the TCG EK Credential Profile for TPM Family 2.0.
type ekSlot struct {
	index    tpm2.TPMHandle
	template tpm2.TPMTPublic
}

// ekSlots returns the EK certificate indices in the order EKs reports them:
// ECC P-256 low range first (the cheapest activation), RSA 2048 low range, then
// the high range.
func ekSlots() ([]ekSlot, error) {
	type high struct {
		index   tpm2.TPMHandle
		alg     tpm2.TPMAlgID // RSA or ECC
		bits    tpm2.TPMKeyBits
		curve   tpm2.TPMECCCurve
		nameAlg tpm2.TPMAlgID
		aesBits tpm2.TPMKeyBits
	}
	highs := []high{
		{0x01c00012, tpm2.TPMAlgRSA, 2048, 0, tpm2.TPMAlgSHA256, 128},                // H-1
		{0x01c00014, tpm2.TPMAlgECC, 0, tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256, 128}, // H-2
		{0x01c00016, tpm2.TPMAlgECC, 0, tpm2.TPMECCNistP384, tpm2.TPMAlgSHA384, 256}, // H-3
		{0x01c00018, tpm2.TPMAlgECC, 0, tpm2.TPMECCNistP521, tpm2.TPMAlgSHA512, 256}, // H-4
		{0x01c0001c, tpm2.TPMAlgRSA, 3072, 0, tpm2.TPMAlgSHA384, 256},                // H-6
		{0x01c0001e, tpm2.TPMAlgRSA, 4096, 0, tpm2.TPMAlgSHA384, 256},                // H-7
	}
	slots := []ekSlot{
		{index: 0x01c0000a, template: tpm2.ECCEKTemplate}, // L-2
		{index: 0x01c00002, template: tpm2.RSAEKTemplate}, // L-1
	}
	for _, h := range highs {
		tmpl, err := highRangeEKTemplate(h.alg, h.bits, h.curve, h.nameAlg, h.aesBits)
		if err != nil {
			return nil, fmt.Errorf("build EK template for NV index %#x: %w", uint32(h.index), err)
		}
		slots = append(slots, ekSlot{index: h.index, template: tmpl})
	}
	return slots, nil
}

// highRangeEKTemplate returns a high-range EK template (TCG EK Credential
// Profile 2.x, templates H-1 to H-7): unlike the low-range ones, they have
// userWithAuth set, authPolicy = policy B and an empty unique field.
func highRangeEKTemplate(alg tpm2.TPMAlgID, bits tpm2.TPMKeyBits, curve tpm2.TPMECCCurve, nameAlg tpm2.TPMAlgID, aesBits tpm2.TPMKeyBits) (tpm2.TPMTPublic, error) {
	policy, err := policyB(nameAlg)
	if err != nil {
		return tpm2.TPMTPublic{}, err
	}
	sym := tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, aesBits),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
	t := tpm2.TPMTPublic{
		Type:    alg,
		NameAlg: nameAlg,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			AdminWithPolicy:     true,
			Restricted:          true,
			Decrypt:             true,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
	}
	switch alg {
	case tpm2.TPMAlgRSA:
		t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{Symmetric: sym, KeyBits: bits})
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	case tpm2.TPMAlgECC:
		t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{Symmetric: sym, CurveID: curve})
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	default:
		return tpm2.TPMTPublic{}, fmt.Errorf("unsupported key type %v", alg)
	}
	return t, nil
}

// policyA computes the TCG EK policy A for nameAlg:
// TPM2_PolicySecret(TPM_RH_ENDORSEMENT).
func policyA(nameAlg tpm2.TPMAlgID) ([]byte, error) {
	calc, err := tpm2.NewPolicyCalculator(nameAlg)
	if err != nil {
		return nil, fmt.Errorf("compute policy A: %w", err)
	}
	if err := (tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement}).Update(calc); err != nil {
		return nil, fmt.Errorf("compute policy A: %w", err)
	}
	return calc.Hash().Digest, nil
}

// policyC returns the TCG EK policy C for nameAlg, TPM2_PolicyAuthorizeNV over
// the EK policy NV index 0x01c07f01 (SHA-256), 0x01c07f02 (SHA-384) or
// 0x01c07f03 (SHA-512), as published in the EK Credential Profile (Annex
// B.6.4). This package never satisfies policy C; it needs the digest only to
// take the policy A branch of policy B.
func policyC(nameAlg tpm2.TPMAlgID) ([]byte, error) {
	var digest string
	switch nameAlg {
	case tpm2.TPMAlgSHA256:
		digest = "3767e2edd43ff45a3a7e1eaefcef78643dca964632e7aad82c673a30d8633fde"
	case tpm2.TPMAlgSHA384:
		digest = "d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165"
	case tpm2.TPMAlgSHA512:
		digest = "589ee1e146544716e8deafe6db247b01b81e9f9c7dd16b814aa159138749105fba5388dd1dea702f35240c184933121e2c61b8f50d3ef91393a49a38c3f73fc8"
	default:
		return nil, fmt.Errorf("policy C for name algorithm %v: %w", nameAlg, ErrUnsupportedEK)
	}
	b, err := hex.DecodeString(digest)
	if err != nil {
		return nil, fmt.Errorf("decode policy C: %w", err)
	}
	return b, nil
}

// policyB computes the TCG EK policy B for nameAlg: TPM2_PolicyOR(A, C).
func policyB(nameAlg tpm2.TPMAlgID) ([]byte, error) {
	branches, err := policyBBranches(nameAlg)
	if err != nil {
		return nil, err
	}
	calc, err := tpm2.NewPolicyCalculator(nameAlg)
	if err != nil {
		return nil, fmt.Errorf("compute policy B: %w", err)
	}
	if err := (tpm2.PolicyOr{PHashList: tpm2.TPMLDigest{Digests: branches}}).Update(calc); err != nil {
		return nil, fmt.Errorf("compute policy B: %w", err)
	}
	return calc.Hash().Digest, nil
}

// policyBBranches returns the PolicyOR digest list of policy B: A, then C.
func policyBBranches(nameAlg tpm2.TPMAlgID) ([]tpm2.TPM2BDigest, error) {
	a, err := policyA(nameAlg)
	if err != nil {
		return nil, err
	}
	c, err := policyC(nameAlg)
	if err != nil {
		return nil, err
	}
	return []tpm2.TPM2BDigest{{Buffer: a}, {Buffer: c}}, nil
}

// ekPolicyOr tells how to satisfy the EK's authPolicy once
// TPM2_PolicySecret(TPM_RH_ENDORSEMENT) has run in a policy session: with
// nothing more (policy A, nil list) or with TPM2_PolicyOR over the returned
// list (policy B). Any other policy is ErrUnsupportedEK.
func ekPolicyOr(pub *tpm2.TPMTPublic) ([]tpm2.TPM2BDigest, error) {
	a, err := policyA(pub.NameAlg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupportedEK, err)
	}
	if bytes.Equal(pub.AuthPolicy.Buffer, a) {
		return nil, nil
	}
	b, err := policyB(pub.NameAlg)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(pub.AuthPolicy.Buffer, b) {
		return policyBBranches(pub.NameAlg)
	}
	return nil, fmt.Errorf("%w: authPolicy %x is neither TCG policy A nor policy B", ErrUnsupportedEK, pub.AuthPolicy.Buffer)
}

// EKs finds the TPM's endorsement keys. It reads EK certificates from the
// TCG-registered NV indices (low range: ECC P-256 0x01c0000a, RSA 2048
// 0x01c00002; high range: RSA 2048 0x01c00012, ECC P-256 0x01c00014, ECC P-384
// 0x01c00016, ECC P-521 0x01c00018, RSA 3072 0x01c0001c, RSA 4096 0x01c0001e),
// in that order, and for each finds the key it certifies: first among the
// persistent EK-like keys (restricted decryption keys), else by
// TPM2_CreatePrimary in the endorsement hierarchy with the index's TCG default
// template. A certificate that cannot be parsed, or whose key is found
// nowhere, is skipped with no error.
//
// If no certificate yields a key, EKs returns the RSA EK created from
// tpm2.RSAEKTemplate with Cert == nil; the verifier refuses it unless it is
// allowlisted.
//
// The caller must CloseEK every returned EK. On error, EKs has already flushed
// whatever it loaded. Each transient EK holds one of the TPM's few object slots
// (often three, and a persistent key takes one while a command uses it), which
// matters without a resource manager (swtpm's socket, a simulator): close the
// EKs you will not use before activating a credential.
func (t *TPM) EKs() (eks []EK, err error) {
	defer func() {
		if err != nil {
			for _, ek := range eks {
				_ = t.CloseEK(ek) // best effort: the error being returned matters more
			}
			eks = nil
		}
	}()
	slots, err := ekSlots()
	if err != nil {
		return nil, err
	}
	chunk, err := t.nvBufferMax()
	if err != nil {
		return nil, err
	}
	var persistent []loadedKey
	listed := false
	for _, slot := range slots {
		der, err := t.readEKCert(slot.index, chunk)
		if err != nil {
			return eks, fmt.Errorf("read EK certificate at NV index %#x: %w", uint32(slot.index), err)
		}
		if der == nil {
			continue
		}
		certKey, err := certPublicKey(der)
		if err != nil {
			continue // not a certificate we can match: skip it
		}
		if !listed {
			if persistent, err = t.persistentEKs(); err != nil {
				return eks, err
			}
			listed = true
		}
		ek, found, err := t.findEK(slot.template, certKey, persistent)
		if err != nil {
			return eks, fmt.Errorf("find EK for certificate at NV index %#x: %w", uint32(slot.index), err)
		}
		if found {
			ek.Cert = der
			eks = append(eks, ek)
		}
	}
	if len(eks) > 0 {
		return eks, nil
	}
	k, err := t.createPrimaryEK(tpm2.RSAEKTemplate)
	if err != nil {
		return nil, fmt.Errorf("create default RSA EK: %w", err)
	}
	return []EK{k.ek(true)}, nil
}

// CloseEK flushes the EK if EKs loaded it as a transient object; a persistent
// EK stays in the TPM. Closing an EK twice is an error.
func (t *TPM) CloseEK(ek EK) error {
	if !ek.transient {
		return nil
	}
	if _, err := (tpm2.FlushContext{FlushHandle: ek.Handle}).Execute(t.tr); err != nil {
		return fmt.Errorf("flush EK %#x: %w", uint32(ek.Handle), err)
	}
	return nil
}

// loadedKey is a key object loaded in the TPM.
type loadedKey struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public []byte // TPMT_PUBLIC as the TPM returned it
	pub    tpm2.TPMTPublic
	key    crypto.PublicKey
	// template is what CreatePrimary made the key from (zero for
	// persistent keys).
	template tpm2.TPMTPublic
}

// ek makes an EK of k, without certificate.
func (k loadedKey) ek(transient bool) EK {
	return EK{
		Public:    k.public,
		Handle:    k.handle,
		Type:      keytype.Of(&k.pub),
		name:      k.name,
		pub:       k.pub,
		transient: transient,
		template:  k.template,
	}
}

// findEK returns the EK whose public key is certKey: a persistent one, or one
// created from template. found is false if neither matches.
func (t *TPM) findEK(template tpm2.TPMTPublic, certKey crypto.PublicKey, persistent []loadedKey) (ek EK, found bool, err error) {
	for _, k := range persistent {
		if publicKeysEqual(k.key, certKey) {
			return k.ek(false), true, nil
		}
	}
	k, err := t.createPrimaryEK(template)
	var rc tpm2.TPMRC
	if errors.As(err, &rc) && !rc.IsWarning() {
		// The TPM refused the template (an unsupported curve or key size):
		// this certificate's key cannot be regenerated here. Warnings (out
		// of object memory, retry) are real errors.
		return EK{}, false, nil
	}
	if err != nil {
		return EK{}, false, err
	}
	if !publicKeysEqual(k.key, certKey) {
		if _, err := (tpm2.FlushContext{FlushHandle: k.handle}).Execute(t.tr); err != nil {
			return EK{}, false, fmt.Errorf("flush mismatching EK: %w", err)
		}
		return EK{}, false, nil
	}
	return k.ek(true), true, nil
}

// createPrimaryEK creates a primary key in the endorsement hierarchy from
// template (empty endorsement authorisation).
func (t *TPM) createPrimaryEK(template tpm2.TPMTPublic) (loadedKey, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(template),
	}.Execute(t.tr)
	if err != nil {
		return loadedKey{}, fmt.Errorf("create primary: %w", err)
	}
	k, err := parseLoadedKey(rsp.ObjectHandle, rsp.Name, rsp.OutPublic)
	if err != nil {
		if _, ferr := (tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}).Execute(t.tr); ferr != nil {
			return loadedKey{}, errors.Join(err, fmt.Errorf("flush EK: %w", ferr))
		}
		return loadedKey{}, err
	}
	k.template = template
	return k, nil
}

// parseLoadedKey decodes a loaded key's public area.
func parseLoadedKey(h tpm2.TPMHandle, name tpm2.TPM2BName, public tpm2.TPM2BPublic) (loadedKey, error) {
	pub, err := public.Contents()
	if err != nil {
		return loadedKey{}, fmt.Errorf("parse public area of %#x: %w", uint32(h), err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return loadedKey{}, fmt.Errorf("decode public key of %#x: %w", uint32(h), err)
	}
	return loadedKey{handle: h, name: name, public: public.Bytes(), pub: *pub, key: key}, nil
}

// persistentEKs lists the persistent keys that could be endorsement keys:
// fixedTPM restricted decryption keys of a type this package understands.
func (t *TPM) persistentEKs() ([]loadedKey, error) {
	var keys []loadedKey
	next := uint32(persistentFirst)
	for {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      next,
			PropertyCount: 64,
		}.Execute(t.tr)
		if err != nil {
			return nil, fmt.Errorf("list persistent handles: %w", err)
		}
		handles, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, fmt.Errorf("list persistent handles: %w", err)
		}
		for _, h := range handles.Handle {
			if uint32(h)>>24 != persistentFirst>>24 {
				return keys, nil
			}
			next = uint32(h) + 1
			k, ok, err := t.readEKPublic(h)
			if err != nil {
				return nil, err
			}
			if ok {
				keys = append(keys, k)
			}
		}
		if !rsp.MoreData || len(handles.Handle) == 0 {
			return keys, nil
		}
	}
}

// readEKPublic reads the public area of persistent key h; ok is false if it
// is not EK-like.
func (t *TPM) readEKPublic(h tpm2.TPMHandle) (k loadedKey, ok bool, err error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(t.tr)
	if err != nil {
		return loadedKey{}, false, fmt.Errorf("read public area of %#x: %w", uint32(h), err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return loadedKey{}, false, fmt.Errorf("parse public area of %#x: %w", uint32(h), err)
	}
	a := pub.ObjectAttributes
	if !a.FixedTPM || !a.Restricted || !a.Decrypt || a.SignEncrypt {
		return loadedKey{}, false, nil
	}
	k, err = parseLoadedKey(h, rsp.Name, rsp.OutPublic)
	if err != nil {
		return loadedKey{}, false, nil // an algorithm we cannot compare: not a candidate
	}
	return k, true, nil
}

// publicKeysEqual reports whether a and b are the same public key.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// keyType names a key's algorithm and size: "rsa2048", "ecc-p256", ...

// nvBufferMax returns the largest TPM2_NV_Read the TPM accepts
// (TPM_PT_NV_BUFFER_MAX), or a conservative default if it does not say.
func (t *TPM) nvBufferMax() (int, error) {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTNVBufferMax),
		PropertyCount: 1,
	}.Execute(t.tr)
	if err != nil {
		return 0, fmt.Errorf("read TPM_PT_NV_BUFFER_MAX: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return 0, fmt.Errorf("read TPM_PT_NV_BUFFER_MAX: %w", err)
	}
	for _, p := range props.TPMProperty {
		if p.Property == tpm2.TPMPTNVBufferMax && p.Value > 0 {
			return int(min(p.Value, 0xffff)), nil
		}
	}
	return nvChunkDefault, nil
}

// readEKCert reads the DER certificate in NV index idx, trimmed of trailing
// padding. It returns nil if the index is not defined, not written, or does
// not hold a DER SEQUENCE.
func (t *TPM) readEKCert(idx tpm2.TPMHandle, chunk int) ([]byte, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(t.tr)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read NV public area: %w", err)
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("parse NV public area: %w", err)
	}
	if !pub.Attributes.Written {
		return nil, nil
	}
	return t.readNVDER(idx, rsp.NVName, pub, chunk)
}

// readNVDER reads the DER SEQUENCE at the start of an NV index in chunks of at
// most chunk bytes, stopping at its end. It returns nil if the index does not
// start with a complete DER SEQUENCE.
func (t *TPM) readNVDER(idx tpm2.TPMHandle, name tpm2.TPM2BName, pub *tpm2.TPMSNVPublic, chunk int) ([]byte, error) {
	var auth tpm2.AuthHandle
	switch {
	case pub.Attributes.AuthRead: // EK certificate indices have an empty authValue
		auth = tpm2.AuthHandle{Handle: idx, Name: name, Auth: tpm2.PasswordAuth(nil)}
	case pub.Attributes.OwnerRead:
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	default:
		return nil, errors.New("index is readable with neither its own nor owner authorization")
	}
	size := int(pub.DataSize)
	data := make([]byte, 0, size)
	for len(data) < size {
		n := min(chunk, size-len(data))
		rsp, err := tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: idx, Name: name},
			Size:       uint16(n),
			Offset:     uint16(len(data)),
		}.Execute(t.tr)
		if err != nil {
			return nil, fmt.Errorf("read NV at offset %d: %w", len(data), err)
		}
		if len(rsp.Data.Buffer) == 0 {
			return nil, fmt.Errorf("read NV at offset %d: TPM returned no data", len(data))
		}
		data = append(data, rsp.Data.Buffer...)
		// Once the DER header is in, read no further than the certificate.
		if l, err := derLength(data); err == nil || errors.Is(err, errDERTruncated) {
			size = min(size, l)
		} else {
			return nil, nil
		}
	}
	l, err := derLength(data)
	if err != nil {
		return nil, nil
	}
	return data[:l], nil
}

// errDERTruncated reports that a DER element is longer than the data holding it.
var errDERTruncated = errors.New("truncated DER element")

// derLength returns the total length (header and contents) of the DER SEQUENCE
// that b starts with. If b holds its header but not all its contents, it
// returns that length with errDERTruncated.
func derLength(b []byte) (int, error) {
	if len(b) < 2 || b[0] != 0x30 {
		return 0, errors.New("not a DER SEQUENCE")
	}
	l, hdr := int(b[1]), 2
	if l&0x80 != 0 {
		n := l & 0x7f
		if n == 0 || n > 3 { // indefinite length, or over 16 MiB
			return 0, errors.New("unsupported DER length")
		}
		if len(b) < 2+n {
			return 0, errors.New("short DER header")
		}
		l = 0
		for _, c := range b[2 : 2+n] {
			l = l<<8 | int(c)
		}
		hdr += n
	}
	if hdr+l > len(b) {
		return hdr + l, errDERTruncated
	}
	return hdr + l, nil
}

// certPublicKey returns the public key of a DER X.509 certificate. It reads
// only SubjectPublicKeyInfo, because EK certificates are often not quite valid
// X.509 (negative serial numbers, unusual extensions) and Go's parser rejects
// them; the verifier judges the certificate, the agent only needs the key.
func certPublicKey(der []byte) (crypto.PublicKey, error) {
	var cert, tbs asn1.RawValue
	if _, err := asn1.Unmarshal(der, &cert); err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	if _, err := asn1.Unmarshal(cert.Bytes, &tbs); err != nil {
		return nil, fmt.Errorf("parse TBSCertificate: %w", err)
	}
	var fields []asn1.RawValue
	for rest := tbs.Bytes; len(rest) > 0; {
		var f asn1.RawValue
		var err error
		if rest, err = asn1.Unmarshal(rest, &f); err != nil {
			return nil, fmt.Errorf("parse TBSCertificate: %w", err)
		}
		fields = append(fields, f)
	}
	// Optional [0] version, then serialNumber, signature, issuer, validity,
	// subject, subjectPublicKeyInfo.
	if len(fields) > 0 && fields[0].Class == asn1.ClassContextSpecific && fields[0].Tag == 0 {
		fields = fields[1:]
	}
	if len(fields) < 6 {
		return nil, errors.New("parse TBSCertificate: too few fields")
	}
	key, err := x509.ParsePKIXPublicKey(fields[5].FullBytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate public key: %w", err)
	}
	return key, nil
}

// ReloadEK makes ek usable again after CloseEK without enumerating the TPM's
// EKs anew: a persistent EK is where it was; a transient one is recreated
// from the template it was made from (one command).
func (t *TPM) ReloadEK(ek EK) (EK, error) {
	if !ek.transient {
		return ek, nil
	}
	k, err := t.createPrimaryEK(ek.template)
	if err != nil {
		return EK{}, fmt.Errorf("reload EK: %w", err)
	}
	if !bytes.Equal(k.public, ek.Public) {
		_, _ = tpm2.FlushContext{FlushHandle: k.handle}.Execute(t.tr)
		return EK{}, errors.New("reload EK: the TPM made another key from the EK's template")
	}
	re := k.ek(true)
	re.Cert = ek.Cert
	return re, nil
}
