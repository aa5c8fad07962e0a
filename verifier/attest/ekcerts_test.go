package attest_test

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/pki"
)

const ekcerts = "../pki/testdata/ekcerts/"

func readCert(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(ekcerts + name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.ParseEKCertificate(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

// TestRealEKCertificates checks each real TPM's EK certificate with its
// vendor's CA chain configured as EK roots, and the outcome the testdata
// README gives for it.
func TestRealEKCertificates(t *testing.T) {
	now := time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name, leaf string
		chain      []string
		sha1       bool // AllowSHA1
		// want: "" accepts with wantVendor; otherwise check the error.
		wantVendor, wantModel string
		check                 func(t *testing.T, err error)
	}{
		{name: "Infineon SLB 9670", leaf: "leaf-infineon-rsa2048-slb9670-mfrca035.der",
			chain: []string{"int-infineon-rsa-mfrca035.der", "root-infineon-optiga-rsa.der"}, wantVendor: "IFX", wantModel: "SLB 9670 TPM2.0"},
		{name: "STMicro ST33 under GlobalSign", leaf: "leaf-stm-rsa2048-st33htph-ca05.der",
			chain: []string{"int-stm-rsa-ca05.der", "int-stm-rsa-stmroot-under-globalsign.der", "root-globalsign-tpm-rsa.der"}, wantVendor: "STM", wantModel: "ST33HTPHAHB4"},
		{name: "Nuvoton NPCT75x, RSA EK signed with ECDSA", leaf: "leaf-nuvoton-rsa2048-npct75x-root2111-1.der",
			chain: []string{"root-nuvoton-2111.der"}, wantVendor: "NTC", wantModel: "NPCT75x"},
		{name: "Google vTPM", leaf: "leaf-google-gce-rsa2048-cloudhost2021.der",
			chain: []string{"int-google-cloudhost-2021.der", "root-google-cloudhost-root2018.der"}, wantVendor: "GOOG", wantModel: "vTPM"},
		{name: "Nuvoton NPCT42x, RSAES-OAEP key, SHA-1, allowed", leaf: "leaf-nuvoton-rsa2048-npct42x-ntcroot02.der",
			chain: []string{"root-nuvoton-ntc02.der"}, sha1: true, wantVendor: "WEC", wantModel: "NPCT42x/NPCT50x"},
		{name: "Nuvoton NPCT42x, SHA-1 refused by default", leaf: "leaf-nuvoton-rsa2048-npct42x-ntcroot02.der",
			chain: []string{"root-nuvoton-ntc02.der"}, check: func(t *testing.T, err error) {
				if !errors.Is(err, attest.ErrSHA1) || !errors.Is(err, attest.ErrEKUntrusted) {
					t.Errorf("got %v, want ErrSHA1", err)
				}
			}},
		{name: "VMware vTPM, issuer not configured", leaf: "leaf-vmware-vtpm-rsa2048.der",
			chain: []string{"root-google-cloudhost-root2018.der"}, check: func(t *testing.T, err error) {
				var u *attest.UnknownIssuerError
				if !errors.As(err, &u) || !errors.Is(err, attest.ErrEKUntrusted) || !strings.Contains(u.Issuer, "VMware Engineering") || !strings.Contains(u.Issuer, "CN=CA") {
					t.Errorf("got %v, want an UnknownIssuerError naming the vCenter CA", err)
				}
			}},
		{name: "STMicro, issuer not configured, AIA named", leaf: "leaf-stm-rsa2048-st33htph-ca05.der",
			chain: []string{"root-globalsign-tpm-rsa.der"}, check: func(t *testing.T, err error) {
				var u *attest.UnknownIssuerError
				if !errors.As(err, &u) || u.Issuer != "CN=STM TPM EK Intermediate CA 05,O=STMicroelectronics NV,C=CH" ||
					len(u.AIA) != 1 || u.AIA[0] != "http://secure.globalsign.com/stmtpmekint05.crt" || !strings.Contains(err.Error(), u.AIA[0]) {
					t.Errorf("got %v (%+v), want the missing STM intermediate and its AIA URL", err, u)
				}
			}},
		{name: "Infineon TPM 1.2", leaf: "leaf-infineon-tpm12-rsa2048-slb9660-ifxca20.der",
			chain: []string{"int-infineon-tpm12-ifxca20.der", "root-infineon-tpm12-ifxroot-notselfsigned.der"}, sha1: true, check: func(t *testing.T, err error) {
				if !errors.Is(err, pki.ErrTPM12) || !errors.Is(err, attest.ErrEKUntrusted) {
					t.Errorf("got %v, want ErrTPM12", err)
				}
			}},
		{name: "Google vTPM signing key", leaf: "aksign-google-gce-rsa2048-cloudhost2020.der",
			chain: []string{"int-google-cloudhost-2020.der", "root-google-cloudhost-root2018.der"}, check: func(t *testing.T, err error) {
				var pe *pki.ProfileError
				if !errors.Is(err, pki.ErrNotEKCertificate) || !errors.As(err, &pe) || pe.Requirement != "key usage" ||
					!strings.Contains(err.Error(), "TCG EK Credential Profile") {
					t.Errorf("got %v, want refused as not an EK certificate by its key usage", err)
				}
			}},
		{name: "STMicro ST33ZP24 as read from NV, expired", leaf: "leaf-stm-rsa2048-st33zp24-ca02-3.nvraw.bin",
			chain: []string{"root-globalsign-tpm-rsa.der"}, check: func(t *testing.T, err error) {
				var inv x509.CertificateInvalidError
				if !errors.As(err, &inv) || inv.Reason != x509.Expired || !errors.Is(err, attest.ErrEKUntrusted) {
					t.Errorf("got %v, want refused as expired", err)
				}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var chain []*x509.Certificate
			for _, f := range c.chain {
				chain = append(chain, readCert(t, f))
			}
			roots := attest.NewRoots(chain, nil)
			if c.sha1 {
				roots.AllowSHA1()
			}
			der, err := os.ReadFile(filepath.Join(ekcerts, c.leaf))
			if err != nil {
				t.Fatal(err)
			}
			cert, attrs, err := roots.VerifyEKCertificate(der, now)
			if c.check != nil {
				if err == nil {
					t.Fatalf("accepted, want refused")
				}
				c.check(t, err)
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if cert.PublicKey == nil || attrs.VendorID() != c.wantVendor || attrs.Model != c.wantModel || attrs.Version == "" {
				t.Errorf("TPM attributes %+v (vendor %q), want %s %s", attrs, attrs.VendorID(), c.wantVendor, c.wantModel)
			}
		})
	}
}
