package cli

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/pki"
)

// fingerprint is the SHA-256 of a certificate's DER, in hex.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// short is the first 16 hex digits of a fingerprint, as listed.
func short(fp string) string { return fp[:16] }

func subjectName(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return s
	}
	return "(empty subject)"
}

type chainCert struct {
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	SHA256   string    `json:"sha256"`
	NotAfter time.Time `json:"not_after"`
}

type ekFailure struct {
	Code    string   `json:"code"` // unreadable, expired, profile, tpm12, sha1, unknown_issuer, untrusted
	Message string   `json:"message"`
	Issuer  string   `json:"missing_issuer,omitempty"`
	AIA     []string `json:"aia,omitempty"`
}

type ekResult struct {
	File     string             `json:"file"`
	Verified bool               `json:"verified"`
	Chain    []chainCert        `json:"chain,omitempty"`
	TPM      *pki.TPMAttributes `json:"tpm,omitempty"`
	VendorID string             `json:"vendor_id,omitempty"`
	Error    *ekFailure         `json:"error,omitempty"`
}

// ekFailureOf names why an EK certificate did not verify.
func ekFailureOf(err error) *ekFailure {
	f := &ekFailure{Code: "untrusted", Message: err.Error()}
	var unknown *attest.UnknownIssuerError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		f.Code, f.Issuer, f.AIA = "unknown_issuer", unknown.Issuer, unknown.AIA
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		f.Code = "expired"
	case errors.Is(err, pki.ErrTPM12):
		f.Code = "tpm12"
	case errors.Is(err, pki.ErrNotEKCertificate):
		f.Code = "profile"
	case errors.Is(err, attest.ErrSHA1):
		f.Code = "sha1"
	}
	return f
}

func (e *env) ekCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ek", Short: "Check TPM endorsement-key certificates"}
	var (
		roots     string
		allowSHA1 bool
		asJSON    bool
		at        string
	)
	verify := &cobra.Command{
		Use:   "verify --roots DIR CERT...",
		Short: "Check EK certificates offline against EK roots, as the appliance does",
		Long: `Check EK certificates (DER, or NV contents with their header) against the EK roots
in DIR, as the appliance checks them at enrollment: validity, the TCG EK Credential
Profile, the chain. Prints the chain built and the TPM's manufacturer, model and
version, or why the certificate is refused. Exit 0 when all verify, 1 when one does
not, 2 when one cannot be read.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("--at: %w", err)}
				}
				now = t
			}
			r, err := attest.LoadRoots(roots, nil)
			if err != nil {
				return &ExitError{Code: ExitBadInput, Err: err}
			}
			if allowSHA1 {
				r.AllowSHA1()
			}
			var results []ekResult
			unreadable, refused := 0, 0
			for _, path := range args {
				res := ekResult{File: path}
				b, err := os.ReadFile(path)
				if err == nil {
					_, err = pki.ParseEKCertificate(b)
				}
				if err != nil {
					unreadable++
					res.Error = &ekFailure{Code: "unreadable", Message: err.Error()}
					results = append(results, res)
					continue
				}
				chain, attrs, err := r.VerifyEKChain(b, now)
				if err != nil {
					refused++
					res.Error = ekFailureOf(err)
					results = append(results, res)
					continue
				}
				res.Verified = true
				for _, c := range chain {
					res.Chain = append(res.Chain, chainCert{Subject: subjectName(c), Issuer: c.Issuer.String(), SHA256: fingerprint(c), NotAfter: c.NotAfter.UTC()})
				}
				res.TPM, res.VendorID = &attrs, attrs.VendorID()
				results = append(results, res)
			}
			if asJSON {
				if err := e.printJSON(map[string]any{"certificates": results}); err != nil {
					return err
				}
			} else {
				e.printEKResults(results)
			}
			switch {
			case unreadable > 0:
				return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("%d of %d certificates could not be read", unreadable, len(args))}
			case refused > 0:
				return &ExitError{Code: ExitPolicyFail, Err: fmt.Errorf("%d of %d certificates do not verify", refused, len(args))}
			}
			return nil
		},
	}
	verify.Flags().StringVar(&roots, "roots", "", "directory of EK root and intermediate certificates (ek.roots)")
	verify.Flags().BoolVar(&allowSHA1, "allow-sha1", false, "accept SHA-1 signatures, as ek.allow_sha1 does (risk: SHA-1 collisions are practical)")
	verify.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	verify.Flags().StringVar(&at, "at", "", "check validity at this time (RFC 3339) instead of now")
	_ = verify.MarkFlagRequired("roots")
	cmd.AddCommand(verify)
	return cmd
}

func (e *env) printEKResults(results []ekResult) {
	w := e.stdout
	for _, res := range results {
		if !res.Verified {
			fmt.Fprintf(w, "%s: %s: %s\n", textsafe.Escape(res.File), notVerified(res.Error.Code), textsafe.Escape(res.Error.Message))
			if res.Error.Issuer != "" {
				fmt.Fprintf(w, "  missing issuer: %s\n", textsafe.Escape(res.Error.Issuer))
				for _, u := range res.Error.AIA {
					fmt.Fprintf(w, "  fetch it from:  %s\n", textsafe.Escape(u))
				}
			}
			continue
		}
		fmt.Fprintf(w, "%s: verified\n", textsafe.Escape(res.File))
		for i, c := range res.Chain {
			arrow := "  "
			if i > 0 {
				arrow = "  → "
			}
			fmt.Fprintf(w, "%s%s  sha256:%s\n", arrow, textsafe.Escape(c.Subject), short(c.SHA256))
		}
		fmt.Fprintf(w, "  TPM: manufacturer %s (%s), model %s, version %s\n", textsafe.Escape(res.TPM.Manufacturer),
			textsafe.Escape(res.VendorID), textsafe.Escape(res.TPM.Model), textsafe.Escape(res.TPM.Version))
	}
}

func notVerified(code string) string {
	switch code {
	case "unreadable":
		return "cannot read"
	case "expired":
		return "refused (expired)"
	case "profile":
		return "refused (not an EK certificate)"
	case "tpm12":
		return "refused (TPM 1.2)"
	case "sha1":
		return "refused (SHA-1)"
	case "unknown_issuer":
		return "refused (unknown issuer)"
	}
	return "refused"
}

type importedCA struct {
	Subject  string    `json:"subject"`
	SHA256   string    `json:"sha256"`
	NotAfter time.Time `json:"not_after"`
	Root     bool      `json:"root"`
	From     string    `json:"from"`
}

type skippedCert struct {
	Subject string `json:"subject"`
	SHA256  string `json:"sha256"`
	From    string `json:"from"`
	Reason  string `json:"reason"` // "not a CA", "duplicate", "already present"
}

// sourceFiles lists the certificate files of a source: the file itself, or
// the files of a directory tree named as attest.LoadRoots reads them.
func sourceFiles(src string) ([]string, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{src}, nil
	}
	var files []string
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && attest.IsCertFile(p) {
			files = append(files, p)
		}
		return nil
	})
	return files, err
}

// presentFingerprints are the certificates already in dir, as
// attest.LoadRoots would read them, each with whether it is a root.
func presentFingerprints(dir string) (map[string]bool, error) {
	fps := map[string]bool{}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fps, nil
	}
	if err != nil {
		return nil, err
	}
	for _, en := range entries {
		if en.IsDir() || !attest.IsCertFile(en.Name()) {
			continue
		}
		cs, err := attest.ReadCertFile(filepath.Join(dir, en.Name()))
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			fps[fingerprint(c)] = attest.IsRoot(c)
		}
	}
	return fps, nil
}

func (e *env) ekRootsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ek-roots", Short: "Manage the EK roots directory (ek.roots)"}
	var (
		into   string
		asJSON bool
		anchor bool
	)
	imp := &cobra.Command{
		Use:   "import --into DIR SOURCE...",
		Short: "Copy the CA certificates of vendor bundles into the EK roots directory",
		Long: `Copy every CA certificate of each SOURCE (a directory tree of DER or PEM
certificates, or a PEM bundle file) into DIR, the directory ek.roots names, as
<sha256>.pem. Certificates already in DIR, duplicates and non-CA certificates are
skipped and listed. Nothing is written unless every source reads.

With --anchor they go into DIR/anchors instead: trust anchors whatever their
issuer (RFC 5280 §6.1.1), for an operator who trusts a vendor CA without the root
above it, such as STMicro's EK root CAs, which GlobalSign issued.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dest := into
			if anchor {
				dest = filepath.Join(into, attest.AnchorsDir)
			}
			present, err := presentFingerprints(dest)
			if err != nil {
				return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("read %s: %w", dest, err)}
			}
			var (
				took    []importedCA
				skipped []skippedCert
				certs   []*x509.Certificate
				seen    = map[string]bool{}
			)
			for _, src := range args {
				files, err := sourceFiles(src)
				if err != nil {
					return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("read %s: %w", src, err)}
				}
				if len(files) == 0 {
					return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("read %s: no certificate files (.pem, .crt, .cer, .der)", src)}
				}
				for _, f := range files {
					cs, err := attest.ReadCertFile(f)
					if err != nil {
						return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("read %w", err)}
					}
					for _, c := range cs {
						fp := fingerprint(c)
						skip := func(reason string) {
							skipped = append(skipped, skippedCert{Subject: subjectName(c), SHA256: fp, From: f, Reason: reason})
						}
						switch {
						case !c.BasicConstraintsValid || !c.IsCA:
							skip("not a CA")
						case hasKey(present, fp):
							skip("already present")
						case seen[fp]:
							skip("duplicate")
						default:
							seen[fp] = true
							certs = append(certs, c)
							took = append(took, importedCA{Subject: subjectName(c), SHA256: fp, NotAfter: c.NotAfter.UTC(), Root: anchor || attest.IsRoot(c), From: f})
						}
					}
				}
			}
			if err := writeCerts(dest, certs); err != nil {
				return err
			}
			sort.SliceStable(took, func(i, j int) bool { return took[i].Root && !took[j].Root })
			if asJSON {
				return e.printJSON(map[string]any{"into": dest, "imported": append([]importedCA{}, took...), "skipped": append([]skippedCert{}, skipped...)})
			}
			e.printImport(dest, took, skipped)
			hasRoot := false
			for _, root := range present {
				hasRoot = hasRoot || root
			}
			for _, c := range took {
				hasRoot = hasRoot || c.Root
			}
			if !hasRoot {
				fmt.Fprintf(e.stderr, "bootgate: warning: %s holds no root certificate: the appliance will not load it until a root is imported\n", textsafe.Escape(into))
			}
			return nil
		},
	}
	imp.Flags().StringVar(&into, "into", "", "the EK roots directory (ek.roots); created if missing")
	imp.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	imp.Flags().BoolVar(&anchor, "anchor", false, "import into DIR/anchors, as trust anchors whatever their issuer")
	_ = imp.MarkFlagRequired("into")
	cmd.AddCommand(imp)
	return cmd
}

func hasKey(m map[string]bool, k string) bool {
	_, ok := m[k]
	return ok
}

// writeCerts writes certs into dir as <sha256>.pem: first into a temporary
// directory inside dir (attest.LoadRoots does not read subdirectories),
// then renamed into place, so that a failed write leaves no partial
// certificate file.
func writeCerts(dir string, certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write EK roots: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".import-")
	if err != nil {
		return fmt.Errorf("write EK roots: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, c := range certs {
		name := fingerprint(c) + ".pem"
		if err := os.WriteFile(filepath.Join(tmp, name), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
			return fmt.Errorf("write EK roots: %w", err)
		}
	}
	for _, c := range certs {
		name := fingerprint(c) + ".pem"
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("write EK roots: %w", err)
		}
	}
	return nil
}

func (e *env) printImport(into string, took []importedCA, skipped []skippedCert) {
	tw := e.table()
	fmt.Fprintf(tw, "KIND\tSHA256\tNOT AFTER\tSUBJECT\n")
	now := time.Now()
	for _, c := range took {
		kind := "intermediate"
		if c.Root {
			kind = "root"
		}
		na := c.NotAfter.Format("2006-01-02")
		if now.After(c.NotAfter) {
			na += " (expired)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", kind, short(c.SHA256), na, textsafe.Escape(c.Subject))
	}
	tw.Flush()
	for _, s := range skipped {
		fmt.Fprintf(e.stdout, "skipped (%s): %s  sha256:%s  in %s\n", s.Reason, textsafe.Escape(s.Subject), short(s.SHA256), textsafe.Escape(s.From))
	}
	fmt.Fprintf(e.stdout, "imported %d CA certificates into %s; skipped %d\n", len(took), textsafe.Escape(into), len(skipped))
}
