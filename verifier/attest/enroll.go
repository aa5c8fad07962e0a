// Package attest verifies TPM attestation evidence. It is pure code: bytes in,
// verified state out, no TPM and no network.
//
// An attestation has two steps. Enroll checks where the TPM came from (its EK
// certificate is one by the TCG EK Credential Profile and chains to a
// manufacturer root, or its EK is allowlisted), that no RSA key of it has the
// ROCA fingerprint, and that the attestation key has the attributes of a
// TPM-resident restricted signing key; it yields an Enrollment, from which the verifier makes an activation
// challenge bound to the AK's name and encrypted to the EK. Verify then checks
// the answer (the activated secret, the quote and the event log) and yields
// the only value later code may act on: a Verified boot state.
package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	goattest "github.com/google/go-attestation/attest"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/internal/keytype"
	"github.com/bootgate/bootgate/internal/roca"
	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/wire"
)

// Sentinel errors a caller decides on.
var (
	ErrEKUntrusted = errors.New("EK not trusted")
	ErrBadEK       = errors.New("EK public area is not an endorsement key")
	ErrBadAK       = errors.New("AK is not a TPM-resident restricted signing key")
)

// ErrSHA1 reports an EK certificate signed with SHA-1, which Roots refuse
// unless AllowSHA1 was called.
var ErrSHA1 = errors.New("EK certificate signed with SHA-1")

// UnknownIssuerError reports an EK certificate whose chain stops at an
// issuer that is not among the configured roots and intermediates: the EK
// certificate's own issuer, or (Of set) the issuer of a configured
// intermediate the chain reached. It wraps ErrEKUntrusted.
type UnknownIssuerError struct {
	Issuer string   // the missing issuer's distinguished name (RFC 2253 form)
	AIA    []string // the CA Issuers URLs of the certificate it issued, where it can be fetched
	// Of is the configured intermediate whose issuer is missing, or ""
	// when the EK certificate's own issuer is.
	Of string
}

func (e *UnknownIssuerError) Error() string {
	s := fmt.Sprintf("%v: its issuer %q is not among the configured EK roots and intermediates", ErrEKUntrusted, e.Issuer)
	if e.Of != "" {
		s = fmt.Sprintf("%v: the chain reaches the configured intermediate %q, whose issuer %q is not among the configured EK roots and intermediates", ErrEKUntrusted, e.Of, e.Issuer)
	}
	if len(e.AIA) > 0 {
		s += fmt.Sprintf(" (the certificate names it at %s)", strings.Join(e.AIA, ", "))
	}
	return s
}

func (e *UnknownIssuerError) Unwrap() error { return ErrEKUntrusted }

// Roots is the EK provenance configuration: manufacturer root and intermediate
// certificates, and EKs without certificates that an operator allowlisted.
type Roots struct {
	roots         *x509.CertPool
	intermediates *x509.CertPool
	certs         []*x509.Certificate
	rootSet       map[string]bool // by DER
	count         int
	allowedEKs    map[string]bool // by host ID (see HostID)
	allowSHA1     bool
}

// AllowSHA1 makes r accept EK certificates (and CA certificates under a
// root) signed with SHA-1, as older TPMs' are (Nuvoton's NTC root 02, 2013).
// Risk: SHA-1 collisions are practical; a CA that still signs with SHA-1
// could be made to sign a forged certificate. The SHA-1 path is checked for
// issuer names, CA constraints, key usage, validity and signatures, not name
// or path-length constraints.
func (r *Roots) AllowSHA1() { r.allowSHA1 = true }

// NewRoots builds Roots from certificates: self-signed ones are roots, the
// others intermediates. allowEKs lists host IDs of certificate-less EKs.
func NewRoots(certs []*x509.Certificate, allowEKs []string) *Roots {
	return NewRootsWithAnchors(certs, nil, allowEKs)
}

// NewRootsWithAnchors is NewRoots with anchors: CA certificates an operator
// trusts as roots whatever their issuer (RFC 5280 §6.1.1 (d): a trust anchor
// need not be self-signed), such as STMicro's "root" CAs, which GlobalSign
// issued. A chain ends at the first anchor it reaches.
func NewRootsWithAnchors(certs, anchors []*x509.Certificate, allowEKs []string) *Roots {
	all := append(slices.Clip(certs), anchors...)
	r := &Roots{roots: x509.NewCertPool(), intermediates: x509.NewCertPool(), allowedEKs: map[string]bool{}, certs: all, rootSet: map[string]bool{}}
	for _, c := range anchors {
		r.roots.AddCert(c)
		r.rootSet[string(c.Raw)] = true
		r.count++
	}
	for _, c := range certs {
		// A root's self-signature proves nothing (it is trusted as
		// configured); SHA-1 ones are read as roots too.
		if IsRoot(c) {
			r.roots.AddCert(c)
			r.rootSet[string(c.Raw)] = true
			r.count++
		} else if !r.rootSet[string(c.Raw)] {
			r.intermediates.AddCert(c)
		}
	}
	for _, id := range allowEKs {
		r.allowedEKs[strings.ToLower(id)] = true
	}
	return r
}

// IsRoot reports whether c is read as a root by NewRoots: self-signed, its
// signature checked also where it is SHA-1.
func IsRoot(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && checkSignatureSHA1(c, c) == nil
}

// AnchorsDir is the subdirectory of an EK roots directory that holds the
// operator's chosen trust anchors (NewRootsWithAnchors): certificates
// trusted as roots although they are not self-signed.
const AnchorsDir = "anchors"

// LoadRoots reads every PEM or DER certificate in dir (files ending in .pem,
// .crt, .cer or .der), and in dir/AnchorsDir the trust anchors the operator
// chose (NewRootsWithAnchors), which must be CA certificates. A directory
// with no root certificate and no anchor is an error: an empty trust store
// would refuse every TPM, and that is a configuration bug.
func LoadRoots(dir string, allowEKs []string) (*Roots, error) {
	certs, err := readCertDir(dir, false)
	if err != nil {
		return nil, err
	}
	anchors, err := readCertDir(filepath.Join(dir, AnchorsDir), true)
	if err != nil {
		return nil, err
	}
	for _, a := range anchors {
		if !a.BasicConstraintsValid || !a.IsCA {
			return nil, fmt.Errorf("read EK roots: %s: %q is not a CA certificate", filepath.Join(dir, AnchorsDir), a.Subject.String())
		}
	}
	r := NewRootsWithAnchors(certs, anchors, allowEKs)
	if r.count == 0 {
		return nil, fmt.Errorf("read EK roots: no self-signed root certificate in %s and no anchor in %s", dir, filepath.Join(dir, AnchorsDir))
	}
	return r, nil
}

// readCertDir reads the certificates of dir's certificate files; a missing
// dir is no certificate when optional.
func readCertDir(dir string, optional bool) ([]*x509.Certificate, error) {
	entries, err := os.ReadDir(dir)
	if optional && errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read EK roots: %w", err)
	}
	var certs []*x509.Certificate
	for _, e := range entries {
		if e.IsDir() || !IsCertFile(e.Name()) {
			continue
		}
		cs, err := ReadCertFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read EK roots: %w", err)
		}
		certs = append(certs, cs...)
	}
	return certs, nil
}

// IsCertFile reports whether a file name is one an EK roots directory's
// certificates are read from: ending in .pem, .crt, .cer or .der, in any
// case.
func IsCertFile(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".pem", ".crt", ".cer", ".der":
		return true
	}
	return false
}

// ReadCertFile reads the certificates of one file: PEM (any number of
// CERTIFICATE blocks, other blocks skipped) or one DER certificate. Errors
// name the file.
func ReadCertFile(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cs, err := parseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// parseCerts parses PEM (every CERTIFICATE block) or one DER certificate.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	if !bytes.Contains(b, []byte("-----BEGIN")) {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, err
		}
		return []*x509.Certificate{c}, nil
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in PEM data")
	}
	return out, nil
}

// Enrollment is a TPM whose EK provenance was checked and whose AK has the
// properties of a restricted signing key in that TPM (pending activation).
type Enrollment struct {
	HostID   string
	EKType   string // "rsa2048", "ecc-p256", ...
	EKCert   []byte // DER, nil for an allowlisted EK
	EKIssuer string // the certificate's issuer, for the record
	// TPM is the manufacturer, model and version the EK certificate's
	// subject alternative name gives (zero for an allowlisted EK).
	TPM      pki.TPMAttributes
	EKPublic []byte        // TPMT_PUBLIC, canonical (as presented, which Enroll requires), for the record
	AK       wire.AKParams // each structure canonical (as presented, which Enroll requires), for the record
	ekPublic tpm2.TPMTPublic
	// firmwareProven: the AK's quotes show firmwareVersion in clear.
	firmwareProven bool
	akPublic       *goattest.AKPublic
	akName         []byte
}

// HostID derives a stable host identifier from an EK public key: the hex
// SHA-256 of its PKIX encoding, first 16 bytes.
func HostID(ek crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(ek)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:16]), nil
}

// Enroll checks an enrollment request at time now:
//   - no field is over its limit (wire.EnrollRequest.Check: an error
//     wrapping wire.ErrFieldTooLarge);
//   - the EK public area, each AK parameter and the EK certificate are each
//     exactly one canonical encoding, with no bytes after it (ErrBadEK,
//     ErrBadAK or ErrEKUntrusted, each also matching ErrNotCanonical): the
//     Enrollment keeps copies of these, never the request's buffers;
//   - the EK public area is a restricted decryption key bound to its TPM
//     (ErrBadEK);
//   - an RSA EK or AK has no ROCA fingerprint (CVE-2017-15361): ErrEKUntrusted
//     or ErrBadAK, each also matching roca.ErrVulnerable;
//   - the EK certificate follows the TCG EK Credential Profile
//     (pki.CheckEKProfile: ErrEKUntrusted and pki.ErrNotEKCertificate or
//     pki.ErrTPM12), chains to a configured root (ErrEKUntrusted, an
//     *UnknownIssuerError for an issuer that is not configured, ErrSHA1 for
//     a SHA-1 signature without AllowSHA1), and certifies the EK presented;
//     or there is no certificate and the EK is allowlisted;
//   - the AK's creation data shows a TPM-resident restricted signing key
//     (ErrBadAK).
func (r *Roots) Enroll(req *wire.EnrollRequest, now time.Time) (*Enrollment, error) {
	if err := req.Check(); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	ekPub, err := canonical[tpm2.TPMTPublic]("EK TPMT_PUBLIC", req.EKPublic, quickPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEK, err)
	}
	if err := checkEKAttributes(ekPub); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEK, err)
	}
	ekKey, err := tpm2.Pub(*ekPub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEK, err)
	}
	id, err := HostID(ekKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEK, err)
	}
	if err := roca.Check(ekKey); err != nil {
		return nil, fmt.Errorf("%w: EK %s: %w", ErrEKUntrusted, id, err)
	}
	e := &Enrollment{HostID: id, EKType: keytype.Of(ekPub), EKPublic: bytes.Clone(req.EKPublic), ekPublic: *ekPub}

	if len(req.EKCert) == 0 {
		if !r.allowedEKs[id] {
			return nil, fmt.Errorf("%w: no EK certificate, and EK %s is not allowlisted", ErrEKUntrusted, id)
		}
	} else {
		cert, attrs, err := r.VerifyEKCertificate(req.EKCert, now)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(cert.Raw, req.EKCert) {
			return nil, fmt.Errorf("%w: EK certificate: %w: %d bytes sent, the certificate's DER is %d", ErrEKUntrusted, ErrNotCanonical, len(req.EKCert), len(cert.Raw))
		}
		if !publicKeysEqual(cert.PublicKey, ekKey) {
			return nil, fmt.Errorf("%w: the certificate is for another key than the EK presented", ErrEKUntrusted)
		}
		e.EKCert, e.EKIssuer, e.TPM = bytes.Clone(cert.Raw), cert.Issuer.String(), attrs
	}

	if e.AK, err = canonicalAK(req.AK); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAK, err)
	}

	// A ROCA-weak AK could be forged by whoever factors it: checked before
	// anything about the AK but its encoding.
	if akPub, err := legacy.DecodePublic(req.AK.Public); err == nil && akPub.RSAParameters != nil {
		if key, err := akPub.Key(); err == nil {
			if err := roca.Check(key); err != nil {
				return nil, fmt.Errorf("%w: AK: %w", ErrBadAK, err)
			}
		}
	}

	params := goattest.ActivationParameters{EK: ekKey, AK: goattest.AttestationParameters{
		Public:            req.AK.Public,
		CreateData:        req.AK.CreateData,
		CreateAttestation: req.AK.CreateAttestation,
		CreateSignature:   req.AK.CreateSignature,
	}}
	if err := params.CheckAKParameters(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadAK, err)
	}
	// CheckAKParameters matched the creation data to the certified creation.
	if cd, err := legacy.DecodeCreationData(req.AK.CreateData); err == nil && cd.ParentName.Handle != nil {
		h := *cd.ParentName.Handle
		e.firmwareProven = h == legacy.HandleEndorsement || h == legacy.HandlePlatform
	}
	// The AK's name, over the canonical encoding of its public area, is what
	// CheckAKParameters matched against the creation attestation.
	akPub, nameBytes, err := akIdentity(req.AK.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadAK, err)
	}
	e.akPublic, e.akName = akPub, nameBytes
	return e, nil
}

// EKPublicArea is the enrolled EK's TPMT_PUBLIC (TPM 2.0 Part 2, §12.2.4)
// as decoded once by Enroll, for sealing to it (seal.SealTo) without
// decoding it again. It is a copy; its buffers are shared and must not be
// modified.
func (e *Enrollment) EKPublicArea() *tpm2.TPMTPublic {
	p := e.ekPublic
	return &p
}

// FirmwareProven reports whether this AK's quotes carry the TPM's
// firmwareVersion in clear. A TPM obfuscates firmwareVersion (and the reset
// and restart counts) in attestations signed by a key outside the
// endorsement and platform hierarchies (TPM 2.0 Part 3, section 18.1); it
// is proven only for an AK that its certified creation data shows to be a
// primary key of one of them.
func (e *Enrollment) FirmwareProven() bool { return e.firmwareProven }

// Challenge makes the activation challenge: secret, encrypted so that only
// the EK's TPM can recover it, and only for the AK's name.
func (e *Enrollment) Challenge(rand io.Reader) (secret, credential, encSecret []byte, err error) {
	key, err := tpm2.ImportEncapsulationKey(&e.ekPublic)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("make activation challenge: %w", err)
	}
	secret = make([]byte, 32)
	if _, err := io.ReadFull(rand, secret); err != nil {
		return nil, nil, nil, fmt.Errorf("make activation challenge: %w", err)
	}
	credential, encSecret, err = tpm2.CreateCredential(rand, key, e.akName, secret)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("make activation challenge: %w", err)
	}
	return secret, credential, encSecret, nil
}

// oidSubjectAltName is often marked critical in EK certificates and holds only
// TPM manufacturer attributes in a directory name, which Go's x509 does not
// consider handled.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// VerifyEKCertificate parses a DER EK certificate (pki.ParseEKCertificate,
// which recovers RSAES-OAEP keys), checks it against the TCG EK Credential
// Profile (pki.CheckEKProfile) and its chain to a configured root at time
// now, and returns it with its TPM attributes. Errors wrap ErrEKUntrusted;
// see Enroll for the others they match.
func (r *Roots) VerifyEKCertificate(der []byte, now time.Time) (*x509.Certificate, pki.TPMAttributes, error) {
	chain, attrs, err := r.VerifyEKChain(der, now)
	if err != nil {
		return nil, attrs, err
	}
	return chain[0], attrs, nil
}

// VerifyEKChain checks an EK certificate as VerifyEKCertificate does and
// returns the chain it verified: the EK certificate first, the configured
// root last.
func (r *Roots) VerifyEKChain(der []byte, now time.Time) ([]*x509.Certificate, pki.TPMAttributes, error) {
	cert, err := pki.ParseEKCertificate(der)
	if err != nil {
		return nil, pki.TPMAttributes{}, fmt.Errorf("%w: %w", ErrEKUntrusted, err)
	}
	// Validity first: an expired certificate is refused as such, whatever
	// else is wrong with it.
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, pki.TPMAttributes{}, fmt.Errorf("%w: EK certificate valid %s to %s: %w", ErrEKUntrusted,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339), x509.CertificateInvalidError{Cert: cert, Reason: x509.Expired, Detail: "the time is " + now.UTC().Format(time.RFC3339)})
	}
	attrs, err := pki.CheckEKProfile(cert)
	if err != nil {
		return nil, attrs, fmt.Errorf("%w: %w", ErrEKUntrusted, err)
	}
	chain, err := r.verifyChain(cert, now)
	if err != nil {
		return nil, attrs, err
	}
	return chain, attrs, nil
}

func isSHA1(a x509.SignatureAlgorithm) bool {
	return a == x509.SHA1WithRSA || a == x509.ECDSAWithSHA1 || a == x509.DSAWithSHA1
}

func (r *Roots) verifyChain(cert *x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	if isSHA1(cert.SignatureAlgorithm) {
		if !r.allowSHA1 {
			return nil, fmt.Errorf("%w: %w (%v); SHA-1 is accepted only with ek.allow_sha1", ErrEKUntrusted, ErrSHA1, cert.SignatureAlgorithm)
		}
		if !onlySAN(cert.UnhandledCriticalExtensions) {
			return nil, fmt.Errorf("%w: EK certificate has unhandled critical extensions %v", ErrEKUntrusted, cert.UnhandledCriticalExtensions)
		}
		if path := r.verifySHA1Path(cert, now, 0); path != nil {
			return append([]*x509.Certificate{cert}, path...), nil
		}
		return nil, &UnknownIssuerError{Issuer: cert.Issuer.String(), AIA: cert.IssuingCertificateURL}
	}
	var unhandled []asn1.ObjectIdentifier
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(oidSubjectAltName) {
			unhandled = append(unhandled, oid)
		}
	}
	c := *cert
	c.UnhandledCriticalExtensions = unhandled
	chains, err := c.Verify(x509.VerifyOptions{
		Roots:         r.roots,
		Intermediates: r.intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		if missing := r.missingIssuer(cert); missing != nil {
			return nil, missing
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: EK certificate (issuer %q) does not chain to a manufacturer root: %v", ErrEKUntrusted, cert.Issuer.String(), err)
	}
	chain := append([]*x509.Certificate{}, chains[0]...)
	chain[0] = cert
	return chain, nil
}

// issuerKnown reports whether a configured certificate has c's issuer as
// its subject.
func (r *Roots) issuerKnown(c *x509.Certificate) bool {
	return r.issuerOf(c) != nil
}

// issuerOf returns a configured certificate whose subject is c's issuer
// and whose key signed c, or one whose subject only matches, or nil.
func (r *Roots) issuerOf(c *x509.Certificate) *x509.Certificate {
	var named *x509.Certificate
	for _, p := range r.certs {
		if bytes.Equal(p.RawSubject, c.RawIssuer) {
			if checkSignatureSHA1(p, c) == nil {
				return p
			}
			named = p
		}
	}
	return named
}

// missingIssuer follows c's issuers through the configured certificates
// and returns the first one that is missing, as an *UnknownIssuerError
// naming the certificate it issued; nil when the path reaches a root or an
// anchor (the chain then fails for another reason) or loops.
func (r *Roots) missingIssuer(c *x509.Certificate) *UnknownIssuerError {
	seen := map[*x509.Certificate]bool{}
	for cur, depth := c, 0; depth < 8; depth++ {
		if r.rootSet[string(cur.Raw)] {
			return nil
		}
		p := r.issuerOf(cur)
		if p == nil {
			e := &UnknownIssuerError{Issuer: cur.Issuer.String(), AIA: cur.IssuingCertificateURL}
			if cur != c {
				e.Of = cur.Subject.String()
			}
			return e
		}
		if seen[p] || p == cur {
			return nil
		}
		seen[p] = true
		cur = p
	}
	return nil
}

// verifySHA1Path looks for a path from c to a configured root through the
// configured certificates, checking signatures itself so that SHA-1 ones
// verify (crypto/x509 refuses them): names, CA flag, key usage, validity
// and signature of each issuer. It returns the issuers from c's up to the
// root, or nil if there is no such path.
func (r *Roots) verifySHA1Path(c *x509.Certificate, now time.Time, depth int) []*x509.Certificate {
	if depth > 4 {
		return nil
	}
	for _, p := range r.certs {
		if !bytes.Equal(p.RawSubject, c.RawIssuer) || !p.BasicConstraintsValid || !p.IsCA || len(p.UnhandledCriticalExtensions) > 0 ||
			(p.KeyUsage != 0 && p.KeyUsage&x509.KeyUsageCertSign == 0) ||
			now.Before(p.NotBefore) || now.After(p.NotAfter) || checkSignatureSHA1(p, c) != nil {
			continue
		}
		if r.rootSet[string(p.Raw)] {
			return []*x509.Certificate{p}
		}
		if path := r.verifySHA1Path(p, now, depth+1); path != nil {
			return append([]*x509.Certificate{p}, path...)
		}
	}
	return nil
}

// onlySAN reports whether the unhandled critical extensions are at most
// the subject alternative name, which CheckEKProfile reads.
func onlySAN(oids []asn1.ObjectIdentifier) bool {
	for _, o := range oids {
		if !o.Equal(oidSubjectAltName) {
			return false
		}
	}
	return true
}

// checkSignatureSHA1 checks c's signature by parent, also where it is
// SHA-1.
func checkSignatureSHA1(parent, c *x509.Certificate) error {
	if !isSHA1(c.SignatureAlgorithm) {
		return c.CheckSignatureFrom(parent)
	}
	sum := sha1.Sum(c.RawTBSCertificate)
	switch k := parent.PublicKey.(type) {
	case *rsa.PublicKey:
		if c.SignatureAlgorithm == x509.SHA1WithRSA {
			return rsa.VerifyPKCS1v15(k, crypto.SHA1, sum[:], c.Signature)
		}
	case *ecdsa.PublicKey:
		if c.SignatureAlgorithm == x509.ECDSAWithSHA1 && ecdsa.VerifyASN1(k, sum[:], c.Signature) {
			return nil
		}
	}
	return errors.New("signature does not verify")
}

// checkEKAttributes accepts the public area of a storage-style endorsement
// key: created in and bound to its TPM, a restricted decryption key.
func checkEKAttributes(p *tpm2.TPMTPublic) error {
	a := p.ObjectAttributes
	switch {
	case !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin:
		return errors.New("not fixedTPM, fixedParent and sensitiveDataOrigin")
	case !a.Restricted || !a.Decrypt || a.SignEncrypt:
		return errors.New("not a restricted decryption key")
	case p.Type != tpm2.TPMAlgRSA && p.Type != tpm2.TPMAlgECC:
		return fmt.Errorf("unsupported key type %v", p.Type)
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}
