package eventlog

import (
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// EFI_SIGNATURE_LIST parsing for the measured Secure Boot variables.
//
// This is written here rather than taken from a library because the data is
// untrusted evidence: every size field is checked against the bytes that are
// there before it is used, and a certificate that Go's x509 package refuses
// (some firmware ships certificates with negative serial numbers) is still
// identified by its fingerprint instead of failing the whole variable.

var (
	certX509GUID   = guid(0xa5c059a1, 0x94e4, 0x4aa7, [8]byte{0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72})
	certSHA256GUID = guid(0xc1c41626, 0x504c, 0x4092, [8]byte{0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28})
)

func guid(d1 uint32, d2, d3 uint16, d4 [8]byte) [16]byte {
	var g [16]byte
	binary.LittleEndian.PutUint32(g[0:], d1)
	binary.LittleEndian.PutUint16(g[4:], d2)
	binary.LittleEndian.PutUint16(g[6:], d3)
	copy(g[8:], d4[:])
	return g
}

const (
	guidSize       = 16
	sigListHdrSize = guidSize + 12
)

var errSigList = errors.New("malformed EFI signature list")

// parseSignatureLists returns the X.509 certificates and SHA-256 hashes of a
// sequence of EFI_SIGNATURE_LISTs. Other signature types are counted as
// "other" entries so that nothing in the variable goes unnoticed.
func parseSignatureLists(b []byte) (certs []Cert, hashes []string, other int, err error) {
	for len(b) > 0 {
		if len(b) < sigListHdrSize {
			return nil, nil, 0, fmt.Errorf("%w: %d trailing bytes", errSigList, len(b))
		}
		var typ [16]byte
		copy(typ[:], b)
		listSize := binary.LittleEndian.Uint32(b[16:])
		hdrSize := binary.LittleEndian.Uint32(b[20:])
		sigSize := binary.LittleEndian.Uint32(b[24:])
		if uint64(listSize) > uint64(len(b)) || listSize < sigListHdrSize {
			return nil, nil, 0, fmt.Errorf("%w: list size %d of %d bytes", errSigList, listSize, len(b))
		}
		body := b[sigListHdrSize:listSize]
		b = b[listSize:]
		if uint64(hdrSize) > uint64(len(body)) {
			return nil, nil, 0, fmt.Errorf("%w: header size %d", errSigList, hdrSize)
		}
		body = body[hdrSize:]
		if sigSize <= guidSize || len(body)%int(sigSize) != 0 {
			return nil, nil, 0, fmt.Errorf("%w: signature size %d for %d bytes", errSigList, sigSize, len(body))
		}
		for ; len(body) > 0; body = body[sigSize:] {
			data := body[guidSize:sigSize]
			switch typ {
			case certX509GUID:
				certs = append(certs, certFromDER(data))
			case certSHA256GUID:
				if len(data) != sha256.Size {
					return nil, nil, 0, fmt.Errorf("%w: SHA-256 entry of %d bytes", errSigList, len(data))
				}
				hashes = append(hashes, hex.EncodeToString(data))
			default:
				other++
			}
		}
	}
	return certs, hashes, other, nil
}

// certFromDER names a certificate by fingerprint and subject. Only the
// subject is decoded, not the whole certificate: this runs for every
// certificate in PK, KEK, db and dbx of every log, and Go's full parser also
// refuses certificates that firmware ships (negative serial numbers).
func certFromDER(der []byte) Cert {
	sum := sha256.Sum256(der)
	c := Cert{SHA256: hex.EncodeToString(sum[:])}
	if subj, err := subjectOf(der); err == nil {
		c.Subject = subj
	} else {
		c.Subject = "(unparsable certificate)"
	}
	return c
}

// subjectOf reads the subject of an X.509 certificate: Certificate ::=
// SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
// signature, issuer, validity, subject, ... }, ... }.
func subjectOf(der []byte) (string, error) {
	var cert, tbs asn1.RawValue
	if _, err := asn1.Unmarshal(der, &cert); err != nil {
		return "", err
	}
	if _, err := asn1.Unmarshal(cert.Bytes, &tbs); err != nil {
		return "", err
	}
	rest := tbs.Bytes
	var el asn1.RawValue
	for i := 0; i < 6; i++ {
		var err error
		if rest, err = asn1.Unmarshal(rest, &el); err != nil {
			return "", err
		}
		if i == 0 && !(el.Class == asn1.ClassContextSpecific && el.Tag == 0) {
			i++ // no version field: this was the serial number
		}
	}
	var rdn pkix.RDNSequence
	if _, err := asn1.Unmarshal(el.FullBytes, &rdn); err != nil {
		return "", err
	}
	var name pkix.Name
	name.FillFromRDNSequence(&rdn)
	return name.String(), nil
}

// authorityCert extracts the certificate of an EV_EFI_VARIABLE_AUTHORITY event's
// variable data. The specification says EFI_SIGNATURE_DATA (owner GUID, then
// the DER certificate); shim logs its vendor and MOK certificates as bare DER.
func authorityCert(data []byte) (Cert, error) {
	if isDERSequence(data) {
		return certFromDER(data), nil
	}
	if len(data) > guidSize && isDERSequence(data[guidSize:]) {
		return certFromDER(data[guidSize:]), nil
	}
	return Cert{}, errors.New("authority data is neither EFI_SIGNATURE_DATA nor a DER certificate")
}

// isDERSequence reports whether b is exactly one DER SEQUENCE.
func isDERSequence(b []byte) bool {
	if len(b) < 2 || b[0] != 0x30 {
		return false
	}
	l := int(b[1])
	hdr := 2
	if l&0x80 != 0 {
		n := l & 0x7f
		if n == 0 || n > 4 || len(b) < 2+n {
			return false
		}
		l = 0
		for _, c := range b[2 : 2+n] {
			l = l<<8 | int(c)
		}
		hdr += n
	}
	return hdr+l == len(b)
}
