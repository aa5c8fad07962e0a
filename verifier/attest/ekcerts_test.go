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

// TestOperatorAnchors: STMicro's "root" CA is issued by GlobalSign. An
// operator who trusts STMicro without GlobalSign puts it in the roots
// directory's anchors/; then chains end there. Without it, the refusal
// names the exact certificate whose issuer is missing.
func TestOperatorAnchors(t *testing.T) {
	now := time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	der, err := os.ReadFile(ekcerts + "leaf-stm-rsa2048-st33htph-ca05.der")
	if err != nil {
		t.Fatal(err)
	}
	stmRoot := readCert(t, "int-stm-rsa-stmroot-under-globalsign.der")
	dir := func(t *testing.T, files []string, anchors []string) string {
		d := t.TempDir()
		for sub, names := range map[string][]string{"": files, attest.AnchorsDir: anchors} {
			if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
				t.Fatal(err)
			}
			for _, n := range names {
				b, err := os.ReadFile(ekcerts + n)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(d, sub, n), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		return d
	}
	chainEnd := func(t *testing.T, r *attest.Roots) *x509.Certificate {
		t.Helper()
		chain, _, err := r.VerifyEKChain(der, now)
		if err != nil {
			t.Fatalf("chain: %v", err)
		}
		return chain[len(chain)-1]
	}

	t.Run("anchored at STMicro", func(t *testing.T) {
		r, err := attest.LoadRoots(dir(t, []string{"int-stm-rsa-ca05.der"}, []string{"int-stm-rsa-stmroot-under-globalsign.der"}), nil)
		if err != nil {
			t.Fatal(err)
		}
		if end := chainEnd(t, r); !end.Equal(stmRoot) {
			t.Errorf("chain ends at %q, want the anchor %q", end.Subject, stmRoot.Subject)
		}
	})
	t.Run("GlobalSign root", func(t *testing.T) {
		r, err := attest.LoadRoots(dir(t, []string{"int-stm-rsa-ca05.der", "int-stm-rsa-stmroot-under-globalsign.der", "root-globalsign-tpm-rsa.der"}, nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		if end := chainEnd(t, r); end.Subject.CommonName == stmRoot.Subject.CommonName {
			t.Errorf("chain ends at %q without anchors, want GlobalSign's root", end.Subject)
		}
	})
	t.Run("STMicro root as an intermediate only", func(t *testing.T) {
		// Not an anchor unless the operator says so: with neither GlobalSign
		// nor an anchor, nothing is trusted.
		if _, err := attest.LoadRoots(dir(t, []string{"int-stm-rsa-ca05.der", "int-stm-rsa-stmroot-under-globalsign.der"}, nil), nil); err == nil {
			t.Error("a directory without a self-signed root or an anchor loaded")
		}
	})
	t.Run("missing intermediate named", func(t *testing.T) {
		r, err := attest.LoadRoots(dir(t, []string{"int-stm-rsa-ca05.der", "root-globalsign-tpm-rsa.der"}, nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = r.VerifyEKChain(der, now)
		var ue *attest.UnknownIssuerError
		if !errors.As(err, &ue) || ue.Issuer != stmRoot.Subject.String() || !strings.Contains(ue.Of, "Intermediate CA 05") {
			t.Fatalf("err = %v, want the missing issuer %q of the intermediate CA 05", err, stmRoot.Subject)
		}
	})
	t.Run("anchor must be a CA", func(t *testing.T) {
		_, err := attest.LoadRoots(dir(t, []string{"root-globalsign-tpm-rsa.der"}, []string{"leaf-stm-rsa2048-st33htph-ca05.der"}), nil)
		if err == nil || !strings.Contains(err.Error(), "not a CA certificate") {
			t.Fatalf("a leaf as anchor: %v", err)
		}
	})
}
