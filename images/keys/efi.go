package keys

import (
	"crypto/x509"
	"fmt"

	"github.com/foxboron/go-uefi/efi/signature"
	"github.com/foxboron/go-uefi/efi/util"
)

// SignatureDatabase returns an EFI signature database (the value of PK, KEK or
// db) holding certs as EFI_CERT_X509 entries owned by [OwnerGUID]. Certificates
// of different DER lengths go into separate signature lists, as the
// specification requires.
func SignatureDatabase(certs ...*x509.Certificate) (*signature.SignatureDatabase, error) {
	if len(certs) == 0 {
		return nil, fmt.Errorf("signature database: no certificates")
	}
	owner := util.StringToGUID(OwnerGUID)
	db := signature.NewSignatureDatabase()
	for _, c := range certs {
		if err := db.Append(signature.CERT_X509_GUID, *owner, c.Raw); err != nil {
			return nil, fmt.Errorf("signature database: add %q: %w", c.Subject.CommonName, err)
		}
	}
	return db, nil
}

// DatabaseCerts returns the X.509 certificates of an EFI signature database and
// how many entries of other types (hashes) it holds.
func DatabaseCerts(db *signature.SignatureDatabase) ([]*x509.Certificate, int, error) {
	var certs []*x509.Certificate
	other := 0
	for _, l := range *db {
		if !util.CmpEFIGUID(l.SignatureType, signature.CERT_X509_GUID) {
			other += len(l.Signatures)
			continue
		}
		for _, s := range l.Signatures {
			c, err := x509.ParseCertificate(s.Data)
			if err != nil {
				return nil, 0, fmt.Errorf("signature database: parse certificate: %w", err)
			}
			certs = append(certs, c)
		}
	}
	return certs, other, nil
}
