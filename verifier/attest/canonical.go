package attest

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/verifier/wire"
)

// ErrNotCanonical reports a TPM structure or certificate that is not exactly
// one canonical encoding: bytes after the structure, or an encoding that
// decodes but does not re-encode to itself. A TPM never produces either; the
// appliance keeps only canonical encodings, so that what it stores and
// what it checked are the same bytes, and their size is the structure's.
var ErrNotCanonical = errors.New("not one canonical encoding")

// canonical decodes b as one T, re-encodes it, and returns the decoded
// value. b must be exactly that encoding (ErrNotCanonical otherwise);
// malformed input is an error naming what. go-tpm reports malformed input
// as errors; the recover guards the verifier against a library bug on
// hostile input all the same.
func canonical[T tpm2.Marshallable, P interface {
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
	v, err = tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, fmt.Errorf("malformed %s: %w", what, err)
	}
	enc := tpm2.Marshal(*v)
	switch {
	case len(enc) < len(b) && bytes.Equal(enc, b[:len(enc)]):
		return nil, fmt.Errorf("%s: %w: %d bytes after the structure", what, ErrNotCanonical, len(b)-len(enc))
	case !bytes.Equal(enc, b):
		return nil, fmt.Errorf("%s: %w: it re-encodes to other bytes", what, ErrNotCanonical)
	}
	return v, nil
}

// canonicalAK checks that each of the AK's parameters is one canonical TPM
// structure (ErrNotCanonical) and returns them as a copy that shares no
// memory with p.
func canonicalAK(p wire.AKParams) (wire.AKParams, error) {
	if _, err := canonical[tpm2.TPMTPublic]("AK TPMT_PUBLIC", p.Public); err != nil {
		return wire.AKParams{}, err
	}
	if _, err := canonical[tpm2.TPMSCreationData]("AK TPMS_CREATION_DATA", p.CreateData); err != nil {
		return wire.AKParams{}, err
	}
	if _, err := canonical[tpm2.TPMSAttest]("AK TPMS_ATTEST", p.CreateAttestation); err != nil {
		return wire.AKParams{}, err
	}
	if _, err := canonical[tpm2.TPMTSignature]("AK TPMT_SIGNATURE", p.CreateSignature); err != nil {
		return wire.AKParams{}, err
	}
	return wire.AKParams{
		Public:            bytes.Clone(p.Public),
		CreateData:        bytes.Clone(p.CreateData),
		CreateAttestation: bytes.Clone(p.CreateAttestation),
		CreateSignature:   bytes.Clone(p.CreateSignature),
	}, nil
}
