package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/attest"
)

const (
	ekcerts = "../pki/testdata/ekcerts/"
	ekroots = "testdata/ekroots/"
	// ekAt is the time the real certificates are checked at, so that the
	// outcomes do not change as they expire.
	ekAt = "2026-01-15T00:00:00Z"
)

// vendorRoots is a roots directory with every CA of the testdata.
func vendorRoots(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, pat := range []string{"root-*.der", "int-*.der"} {
		files, _ := filepath.Glob(ekcerts + pat)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// TestEKVerifyRealCertificates checks each real EK certificate with its
// vendor's CAs and gets the outcome and exit status the testdata README
// gives.
func TestEKVerifyRealCertificates(t *testing.T) {
	roots := vendorRoots(t)
	for _, c := range []struct {
		name, leaf string
		sha1       bool
		code       int
		want       []string // in the output
	}{
		{name: "Infineon SLB 9670", leaf: "leaf-infineon-rsa2048-slb9670-mfrca035.der",
			want: []string{": verified", "Infineon OPTIGA(TM) RSA Manufacturing CA 035", "→ CN=Infineon OPTIGA(TM) RSA Root CA", "sha256:899e35474c9807eb", "id:49465800 (IFX), model SLB 9670 TPM2.0, version id:073f"}},
		{name: "STMicro under GlobalSign", leaf: "leaf-stm-rsa2048-st33htph-ca05.der",
			want: []string{": verified", "CN=STM TPM EK Intermediate CA 05", "CN=STM TPM EK Root CA", "→ CN=GlobalSign Trusted Platform Module Root CA", "(STM), model ST33HTPHAHB4"}},
		{name: "Nuvoton NPCT75x", leaf: "leaf-nuvoton-rsa2048-npct75x-root2111-1.der",
			want: []string{": verified", "→ CN=Nuvoton TPM Root CA 2111", "(NTC), model NPCT75x"}},
		{name: "Google vTPM", leaf: "leaf-google-gce-rsa2048-cloudhost2021.der",
			want: []string{": verified", "tpm_ek_v1_cloud_host_root-signer", "(GOOG), model vTPM"}},
		{name: "Nuvoton NPCT42x, SHA-1 refused", leaf: "leaf-nuvoton-rsa2048-npct42x-ntcroot02.der", code: ExitPolicyFail,
			want: []string{"refused (SHA-1)", "ek.allow_sha1"}},
		{name: "Nuvoton NPCT42x, SHA-1 allowed", leaf: "leaf-nuvoton-rsa2048-npct42x-ntcroot02.der", sha1: true,
			want: []string{": verified", "→ CN=NTC TPM EK Root CA 02", "(WEC), model NPCT42x/NPCT50x"}},
		{name: "VMware vTPM, issuer missing", leaf: "leaf-vmware-vtpm-rsa2048.der", code: ExitPolicyFail,
			want: []string{"refused (unknown issuer)", "missing issuer: CN=CA,OU=VMware Engineering", "fetch it from:  https://sc2-10-184-103-126.eng.vmware.com/afd/vecs/ca"}},
		{name: "Infineon TPM 1.2", leaf: "leaf-infineon-tpm12-rsa2048-slb9660-ifxca20.der", code: ExitPolicyFail,
			want: []string{"refused (TPM 1.2)", `TPM family "1.2"`}},
		{name: "Google AK signing certificate", leaf: "aksign-google-gce-rsa2048-cloudhost2020.der", code: ExitPolicyFail,
			want: []string{"refused (not an EK certificate)", "key usage (digitalSignature) includes signing"}},
		{name: "STMicro NV contents, expired", leaf: "leaf-stm-rsa2048-st33zp24-ca02-3.nvraw.bin", code: ExitPolicyFail,
			want: []string{"refused (expired)", "to 2024-02-23"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"ek", "verify", "--roots", roots, "--at", ekAt, ekcerts + c.leaf}
			if c.sha1 {
				args = append(args, "--allow-sha1")
			}
			code, out, errOut := run(t, args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d\n%s%s", code, c.code, out, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestEKVerifyJSON(t *testing.T) {
	code, out, _ := run(t, "ek", "verify", "--roots", vendorRoots(t), "--at", ekAt, "--json",
		ekcerts+"leaf-infineon-rsa2048-slb9670-mfrca035.der", ekcerts+"leaf-vmware-vtpm-rsa2048.der")
	if code != ExitPolicyFail {
		t.Fatalf("exit %d, want 1", code)
	}
	var got struct {
		Certificates []ekResult `json:"certificates"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Certificates) != 2 {
		t.Fatalf("%d results:\n%s", len(got.Certificates), out)
	}
	ok, bad := got.Certificates[0], got.Certificates[1]
	if !ok.Verified || len(ok.Chain) != 3 || ok.VendorID != "IFX" || ok.TPM.Model != "SLB 9670 TPM2.0" {
		t.Errorf("Infineon: %+v", ok)
	}
	if bad.Verified || bad.Error == nil || bad.Error.Code != "unknown_issuer" || len(bad.Error.AIA) != 1 || !strings.Contains(bad.Error.Issuer, "VMware Engineering") {
		t.Errorf("VMware: %+v", bad)
	}
}

func TestEKVerifyUnreadable(t *testing.T) {
	roots := vendorRoots(t)
	garbage := filepath.Join(t.TempDir(), "garbage.der")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, files := range [][]string{
		{garbage},
		{filepath.Join(t.TempDir(), "missing.der")},
		// Unreadable wins over refused and verified.
		{ekcerts + "leaf-infineon-rsa2048-slb9670-mfrca035.der", ekcerts + "leaf-vmware-vtpm-rsa2048.der", garbage},
	} {
		code, out, errOut := run(t, append([]string{"ek", "verify", "--roots", roots, "--at", ekAt}, files...)...)
		if code != ExitBadInput || !strings.Contains(out, "cannot read") || !strings.Contains(errOut, "could not be read") {
			t.Errorf("%v: exit %d, want 2\n%s%s", files, code, out, errOut)
		}
	}
	// Roots that do not load are bad input too.
	if code, _, _ := run(t, "ek", "verify", "--roots", t.TempDir(), ekcerts+"leaf-vmware-vtpm-rsa2048.der"); code != ExitBadInput {
		t.Errorf("empty roots: exit %d, want 2", code)
	}
}

func dirListing(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

// TestEKRootsImportBundles imports each real vendor bundle, loads the
// result as the appliance does and verifies the real leaves against it, as
// far as each bundle holds their CAs (testdata/ekroots/README.md).
func TestEKRootsImportBundles(t *testing.T) {
	at, _ := time.Parse(time.RFC3339, ekAt)
	for _, c := range []struct {
		bundle   string
		sources  []string
		want     []string // in the listing
		verifies map[string]bool
	}{
		{bundle: "keylime-tpm_cert_store", sources: []string{ekroots + "keylime-tpm_cert_store"},
			want: []string{"root ", "intermediate ", "CN=GlobalSign Trusted Platform Module Root CA", "CN=Nuvoton TPM Root CA 2111", "skipped (duplicate): CN=IFX TPM EK Intermediate CA 01"},
			verifies: map[string]bool{
				"leaf-stm-rsa2048-st33htph-ca05.der":          true,
				"leaf-nuvoton-rsa2048-npct75x-root2111-1.der": true,
				"leaf-nuvoton-rsa2048-npct42x-ntcroot02.der":  true,
				"leaf-infineon-rsa2048-slb9670-mfrca035.der":  false,
			}},
		{bundle: "loicsikidi-tpm-ca-certificates", sources: []string{
			ekroots + "loicsikidi-tpm-ca-certificates/MIRROR.tpm-ca-certificates.pem",
			ekroots + "loicsikidi-tpm-ca-certificates/MIRROR.tpm-intermediate-ca-certificates.pem"},
			want: []string{"root ", "intermediate ", "CN=Infineon OPTIGA(TM) RSA Manufacturing CA 035", "CN=STM TPM EK Intermediate CA 05"},
			verifies: map[string]bool{
				"leaf-stm-rsa2048-st33htph-ca05.der":          true,
				"leaf-nuvoton-rsa2048-npct75x-root2111-1.der": true,
				"leaf-infineon-rsa2048-slb9670-mfrca035.der":  true,
				"leaf-nuvoton-rsa2048-npct42x-ntcroot02.der":  false,
			}},
	} {
		t.Run(c.bundle, func(t *testing.T) {
			into := filepath.Join(t.TempDir(), "ek-roots")
			code, out, errOut := run(t, append([]string{"ek-roots", "import", "--into", into}, c.sources...)...)
			if code != 0 {
				t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("listing lacks %q:\n%s", w, out)
				}
			}
			r, err := attest.LoadRoots(into, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.AllowSHA1()
			for leaf, want := range c.verifies {
				b, err := os.ReadFile(ekcerts + leaf)
				if err != nil {
					t.Fatal(err)
				}
				_, _, err = r.VerifyEKCertificate(b, at)
				if (err == nil) != want {
					t.Errorf("%s: verifies %v, want %v (%v)", leaf, err == nil, want, err)
				}
			}
			before := dirListing(t, into)
			code, out, _ = run(t, append([]string{"ek-roots", "import", "--into", into}, c.sources...)...)
			if code != 0 || !strings.Contains(out, "imported 0 CA certificates") || !strings.Contains(out, "skipped (already present)") {
				t.Errorf("second import: exit %d\n%s", code, out)
			}
			after := dirListing(t, into)
			if len(after) != len(before) {
				t.Errorf("second import: %d files, was %d", len(after), len(before))
			}
			for name, b := range before {
				if after[name] != b {
					t.Errorf("second import changed %s", name)
				}
			}
		})
	}
}

func TestEKRootsImportRefusesUnreadable(t *testing.T) {
	src := t.TempDir()
	for name, content := range map[string][]byte{
		"a-good.pem": mustRead(t, ekroots+"keylime-tpm_cert_store/GS_TPM_RT.pem"),
		"b-bad.der":  []byte("not a certificate"),
	} {
		if err := os.WriteFile(filepath.Join(src, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	into := filepath.Join(t.TempDir(), "ek-roots")
	code, out, errOut := run(t, "ek-roots", "import", "--into", into, src)
	if code != ExitBadInput || !strings.Contains(errOut, "b-bad.der") {
		t.Fatalf("exit %d, want 2\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(into); !os.IsNotExist(err) {
		t.Errorf("%s written after a refused import (%v)", into, err)
	}
	// A leaf certificate is skipped, not imported.
	code, out, _ = run(t, "ek-roots", "import", "--into", into, ekcerts+"leaf-infineon-rsa2048-slb9670-mfrca035.der", ekcerts+"root-infineon-optiga-rsa.der")
	if code != 0 || !strings.Contains(out, "skipped (not a CA)") || len(dirListing(t, into)) != 1 {
		t.Errorf("exit %d\n%s", code, out)
	}
}

// An intermediate alone is imported with a warning: the appliance needs a root.
func TestEKRootsImportWarnsWithoutRoot(t *testing.T) {
	into := filepath.Join(t.TempDir(), "ek-roots")
	code, out, errOut := run(t, "ek-roots", "import", "--into", into, ekcerts+"int-stm-rsa-ca05.der")
	if code != 0 || !strings.Contains(out, "intermediate  ") || !strings.Contains(errOut, "holds no root certificate") {
		t.Errorf("exit %d\n%s%s", code, out, errOut)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEKRootsImportAnchor: the operator trusts STMicro's own root CA, which
// GlobalSign issued, as an anchor; the STMicro EK then verifies without
// GlobalSign, and its chain ends at that anchor.
func TestEKRootsImportAnchor(t *testing.T) {
	into := t.TempDir()
	if code, out, errOut := run(t, "ek-roots", "import", "--into", into, ekcerts+"int-stm-rsa-ca05.der"); code != 0 {
		t.Fatalf("import the intermediate: exit %d\n%s%s", code, out, errOut)
	}
	leaf := ekcerts + "leaf-stm-rsa2048-st33htph-ca05.der"
	if code, out, _ := run(t, "ek", "verify", "--roots", into, "--at", ekAt, leaf); code != ExitBadInput {
		t.Fatalf("roots without a root or an anchor: exit %d, want %d\n%s", code, ExitBadInput, out)
	}
	code, out, errOut := run(t, "ek-roots", "import", "--anchor", "--into", into, ekcerts+"int-stm-rsa-stmroot-under-globalsign.der")
	if code != 0 || !strings.Contains(out, filepath.Join(into, attest.AnchorsDir)) {
		t.Fatalf("import the anchor: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = run(t, "ek", "verify", "--roots", into, "--at", ekAt, leaf)
	if code != 0 || !strings.Contains(out, "→ CN=STM TPM EK Root CA") || strings.Contains(out, "GlobalSign") {
		t.Fatalf("verify with the anchor: exit %d\n%s%s", code, out, errOut)
	}
}
