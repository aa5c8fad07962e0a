package boot

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/foxboron/go-uefi/authenticode"
)

// ErrSignature reports a kernel that is not signed by the expected signer.
var ErrSignature = errors.New("kernel signature check failed")

// VerifyKernel checks that the PE image at path carries an Authenticode
// signature by signer whose digest matches the image. Under Secure Boot
// lockdown kexec_file_load checks the signature again, against the keys the
// running kernel trusts; this check makes the agent refuse an image its
// verifier did not name, before anything is loaded.
func VerifyKernel(path string, signer *x509.Certificate) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return verifyPE(b, signer)
}

func verifyPE(img []byte, signer *x509.Certificate) error {
	pe, err := authenticode.Parse(bytes.NewReader(img))
	if err != nil {
		return fmt.Errorf("%w: not a PE image: %v", ErrSignature, err)
	}
	ok, err := pe.Verify(signer)
	if err != nil || !ok {
		return fmt.Errorf("%w: not signed by %s: %v", ErrSignature, signer.Subject, err)
	}
	return nil
}
