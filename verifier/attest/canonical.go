package attest

import (
	"bytes"
	"errors"
	"fmt"

	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/verifier/wire"
)

// ErrNotCanonical reports a TPM structure or certificate that is not exactly
// one canonical encoding: bytes after the structure, or an encoding that
// decodes but does not re-encode to itself. A TPM never produces either; the
// appliance keeps only canonical encodings, so that what it stores and
// what it checked are the same bytes, and their size is the structure's.
var ErrNotCanonical = errors.New("not one canonical encoding")

// decode decodes b as one T. go-tpm reports malformed input as errors; the
// recover guards the verifier against a library bug on hostile input all
// the same.
func decode[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](what string, b []byte) (v *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("malformed %s: %v", what, r)
		}
	}()
	if len(b) == 0 {
		return nil, fmt.Errorf("empty %s", what)
	}
	if v, err = tpm2.Unmarshal[T, P](b); err != nil {
		return nil, fmt.Errorf("malformed %s: %w", what, err)
	}
	return v, nil
}

// reencodes reports whether v, decoded from b, encodes to exactly b, or
// why not (ErrNotCanonical).
func reencodes[T tpm2.Marshallable](what string, v *T, b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: %w: it does not re-encode: %v", what, ErrNotCanonical, r)
		}
	}()
	enc := tpm2.Marshal(*v)
	switch {
	case len(enc) < len(b) && bytes.Equal(enc, b[:len(enc)]):
		return fmt.Errorf("%s: %w: %d bytes after the structure", what, ErrNotCanonical, len(b)-len(enc))
	case !bytes.Equal(enc, b):
		return fmt.Errorf("%s: %w: it re-encodes to other bytes", what, ErrNotCanonical)
	}
	return nil
}

// canonical decodes b as one T and checks that it is exactly T's
// encoding (ErrNotCanonical otherwise). quick, if it reports true, vouches
// for that without go-tpm's reflective encoder, which costs a hundred
// microseconds a structure on the enrollment path; a false from quick
// decides nothing.
func canonical[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](what string, b []byte, quick func([]byte) bool) (*T, error) {
	v, err := decode[T, P](what, b)
	if err != nil {
		return nil, err
	}
	if quick != nil && quick(b) {
		return v, nil
	}
	if err := reencodes(what, v, b); err != nil {
		return nil, err
	}
	return v, nil
}

// checkCanonical is canonical without the decoded value: when quick
// vouches for b, nothing is decoded by reflection at all.
func checkCanonical[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](what string, b []byte, quick func([]byte) bool) error {
	if len(b) > 0 && quick(b) {
		return nil
	}
	_, err := canonical[T, P](what, b, nil)
	return err
}

// The quick checks decode with go-tpm's legacy decoders, which are
// several times faster, and re-encode; only a byte-exact round trip (or,
// for a signature, a decoder that consumed every byte) vouches for the
// input. The legacy encoders normalise some fields (an ECDSA signature's
// R and S lose leading zero bytes), so a genuine structure may fail a
// quick check: canonical then decides exactly.
//
// A legacy round trip proves the input canonical in the legacy grammar
// only. The two decoders read some structures differently: a symmetric
// XOR definition (the legacy decoder reads key bits and mode, 4 bytes;
// go-tpm's reads a hash, 2 bytes), the RSAES and ECDAA schemes, a KDF
// scheme, a TPMI_YES_NO other than 0 or 1 (the legacy decoder keeps the
// byte, go-tpm's makes it a bool that re-encodes as 1). Bytes built to
// be one structure to the legacy decoder and a shorter, other one to
// go-tpm's (which ignores what follows) would pass a round trip that the
// exact check refuses. So a quick check vouches only for layouts that
// both decoders read field for field alike: the same fixed-width
// integers and sized buffers in the same order, which go-tpm's decoder
// then consumes to the last byte and re-encodes as they were. Anything
// else is decided by the exact check.

func quickPublic(b []byte) bool {
	p, err := legacy.DecodePublic(b)
	if err != nil || !publicLayoutAgrees(p) {
		return false
	}
	enc, err := p.Encode()
	return err == nil && bytes.Equal(enc, b)
}

// publicLayoutAgrees reports whether the legacy decoder's reading of a
// public area is one go-tpm's decoder reads alike: an RSA or ECC key with
// no symmetric definition or an AES one, an RSASSA, RSAPSS or ECDSA
// scheme or none, and no KDF scheme. These are the EK and AK templates'.
func publicLayoutAgrees(p legacy.Public) bool {
	sym := func(s *legacy.SymScheme) bool { return s == nil || s.Alg == legacy.AlgAES }
	switch p.Type {
	case legacy.AlgRSA:
		r := p.RSAParameters
		return r != nil && sym(r.Symmetric) &&
			(r.Sign == nil || r.Sign.Alg == legacy.AlgRSASSA || r.Sign.Alg == legacy.AlgRSAPSS)
	case legacy.AlgECC:
		e := p.ECCParameters
		return e != nil && sym(e.Symmetric) && e.KDF == nil &&
			(e.Sign == nil || e.Sign.Alg == legacy.AlgECDSA)
	}
	return false
}

// quickCreationData: TPMS_CREATION_DATA has no union and no TPMI_YES_NO;
// both decoders read its fields alike.
func quickCreationData(b []byte) bool {
	cd, err := legacy.DecodeCreationData(b)
	if err != nil {
		return false
	}
	enc, err := cd.EncodeCreationData()
	return err == nil && bytes.Equal(enc, b)
}

// quickAttest: the legacy decoder reads only the certify, creation and
// quote attestations, which both decoders read alike, but keeps the
// clock's safe flag as a byte.
func quickAttest(b []byte) bool {
	ad, err := legacy.DecodeAttestationData(b)
	if err != nil || ad.ClockInfo.Safe > 1 {
		return false
	}
	enc, err := ad.Encode()
	return err == nil && bytes.Equal(enc, b)
}

// quickSignature: the legacy decoder reads only RSASSA, RSAPSS and ECDSA
// signatures, which both decoders read alike.
func quickSignature(b []byte) bool {
	in := bytes.NewBuffer(b)
	_, err := legacy.DecodeSignature(in)
	return err == nil && in.Len() == 0
}

// canonicalAK checks that each of the AK's parameters is one canonical TPM
// structure (ErrNotCanonical) and returns them as a copy that shares no
// memory with p.
func canonicalAK(p wire.AKParams) (wire.AKParams, error) {
	if err := checkCanonical[tpm2.TPMTPublic]("AK TPMT_PUBLIC", p.Public, quickPublic); err != nil {
		return wire.AKParams{}, err
	}
	if err := checkCanonical[tpm2.TPMSCreationData]("AK TPMS_CREATION_DATA", p.CreateData, quickCreationData); err != nil {
		return wire.AKParams{}, err
	}
	if err := checkCanonical[tpm2.TPMSAttest]("AK TPMS_ATTEST", p.CreateAttestation, quickAttest); err != nil {
		return wire.AKParams{}, err
	}
	if err := checkCanonical[tpm2.TPMTSignature]("AK TPMT_SIGNATURE", p.CreateSignature, quickSignature); err != nil {
		return wire.AKParams{}, err
	}
	return wire.AKParams{
		Public:            bytes.Clone(p.Public),
		CreateData:        bytes.Clone(p.CreateData),
		CreateAttestation: bytes.Clone(p.CreateAttestation),
		CreateSignature:   bytes.Clone(p.CreateSignature),
	}, nil
}
