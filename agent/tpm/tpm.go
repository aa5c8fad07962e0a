// Package tpm is the bootgate agent's TPM boundary. It opens the TPM (a kernel
// device, swtpm's unix socket or any go-tpm transport), finds the endorsement
// keys and their certificates, creates a fresh attestation key, answers the
// verifier's credential-activation challenge, quotes and reads SHA-256 PCRs, and
// can replay a firmware event log into a test TPM.
//
// It speaks to the TPM with go-tpm's direct API (tpm2 and tpm2/transport) and
// persists nothing in the TPM: every object it creates is transient, and the
// matching Close or CloseEK flushes it.
package tpm

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// Prefixes of Open's spec argument.
const (
	specDevice = "device:"
	specSwtpm  = "swtpm:"
)

// TPM is an open TPM: /dev/tpmrm0, swtpm's unix socket, or a simulator.
//
// Commands are sent one at a time under a lock, so a TPM may be shared by
// goroutines; sequences that span several commands (a policy session and the
// command it authorises) are not atomic with respect to each other, which is
// harmless behind a resource manager and irrelevant to the single-threaded
// agent.
type TPM struct {
	tr *countingTransport
}

// countingTransport serialises the commands sent to a TPM and counts them.
type countingTransport struct {
	mu sync.Mutex
	t  transport.TPMCloser
	n  int
}

// Send implements transport.TPM.
func (c *countingTransport) Send(cmd []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.t.Send(cmd)
}

// New wraps an open transport, e.g. a simulator from go-tpm's
// tpm2/transport/simulator or transport.FromReadWriteCloser. The TPM owns t
// from then on: Close closes it.
func New(t transport.TPMCloser) *TPM {
	return &TPM{tr: &countingTransport{t: t}}
}

// OpenDevice opens a TPM character device such as /dev/tpmrm0. Use the
// resource-managed device: the agent relies on the kernel to evict its
// transient objects and sessions if it dies.
func OpenDevice(path string) (*TPM, error) {
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open TPM device %s: %w", path, err)
	}
	return New(t), nil
}

// OpenSocket opens swtpm's TPM command channel, started with
// `swtpm socket --tpm2 --server type=unixio,path=PATH`. swtpm must have been
// started with --flags startup-clear (or be sent TPM2_Startup otherwise).
func OpenSocket(path string) (*TPM, error) {
	t, err := linuxudstpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open swtpm socket %s: %w", path, err)
	}
	return New(t), nil
}

// Open opens the TPM that spec names: "device:/dev/tpmrm0" opens a device,
// "swtpm:/path/to/sock" swtpm's unix socket, and a plain path either of them,
// depending on whether the file is a socket.
func Open(spec string) (*TPM, error) {
	switch {
	case strings.HasPrefix(spec, specDevice):
		return OpenDevice(strings.TrimPrefix(spec, specDevice))
	case strings.HasPrefix(spec, specSwtpm):
		return OpenSocket(strings.TrimPrefix(spec, specSwtpm))
	case spec == "":
		return nil, errors.New("open TPM: empty path")
	}
	fi, err := os.Stat(spec)
	if err != nil {
		return nil, fmt.Errorf("open TPM: %w", err)
	}
	if fi.Mode()&os.ModeSocket != 0 {
		return OpenSocket(spec)
	}
	return OpenDevice(spec)
}

// Close closes the transport. It does not flush objects: close AKs and EKs
// first.
func (t *TPM) Close() error {
	if err := t.tr.t.Close(); err != nil {
		return fmt.Errorf("close TPM: %w", err)
	}
	return nil
}

// Transport returns the TPM's transport for callers that need raw commands.
// Commands sent through it are serialised with this package's and counted by
// Commands.
func (t *TPM) Transport() transport.TPM {
	return t.tr
}

// Commands returns the number of TPM commands sent since the TPM was opened.
func (t *TPM) Commands() int {
	t.tr.mu.Lock()
	defer t.tr.mu.Unlock()
	return t.tr.n
}
