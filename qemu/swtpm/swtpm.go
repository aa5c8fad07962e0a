// Package swtpm manufactures and runs software TPMs (swtpm) for test hosts:
// each gets EK certificates from a test manufacturer CA whose files live in a
// directory of the caller's, never in the machine-wide default.
package swtpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Available reports why swtpm cannot be used here, or nil.
func Available() error {
	for _, b := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not found (Debian packages swtpm and swtpm-tools)", b)
		}
	}
	return nil
}

// CA is a test TPM manufacturer: swtpm_localca's state in one directory.
type CA struct {
	Dir string
}

// NewCA prepares a manufacturer CA in dir (created by the first Manufacture).
func NewCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make TPM manufacturer CA: %w", err)
	}
	return &CA{Dir: dir}, nil
}

// Roots returns the manufacturer's certificates to trust (the root and the
// issuing CA), in PEM, once at least one TPM was manufactured.
func (ca *CA) Roots() ([]byte, error) {
	var out []byte
	for _, f := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		b, err := os.ReadFile(filepath.Join(ca.Dir, f))
		if err != nil {
			return nil, fmt.Errorf("read manufacturer CA: %w", err)
		}
		out = append(out, b...)
	}
	return out, nil
}

// Manufacture creates a TPM 2.0 state in stateDir with RSA and ECC EKs and
// their certificates signed by ca, and the SHA-256 PCR bank active.
func (ca *CA) Manufacture(ctx context.Context, stateDir string) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("manufacture TPM: %w", err)
	}
	localca := filepath.Join(ca.Dir, "swtpm-localca.conf")
	setup := filepath.Join(ca.Dir, "swtpm_setup.conf")
	files := map[string]string{
		localca: fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", ca.Dir),
		setup: fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
			mustLook("swtpm_localca"), localca, filepath.Join(ca.Dir, "swtpm-localca.options")),
		filepath.Join(ca.Dir, "swtpm-localca.options"): "--platform-manufacturer bootgate-test\n--platform-version 2.1\n--platform-model QEMU\n",
	}
	for p, content := range files {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			return fmt.Errorf("manufacture TPM: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, "swtpm_setup", "--tpm2", "--tpmstate", stateDir,
		"--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--overwrite",
		"--config", setup)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("manufacture TPM: swtpm_setup: %w\n%s", err, out.String())
	}
	return nil
}

func mustLook(bin string) string {
	if p, err := exec.LookPath(bin); err == nil {
		return p
	}
	return bin
}

// TPM is a running swtpm serving raw TPM commands on a unix socket.
type TPM struct {
	Socket string
	// Ctrl is the path of swtpm's control socket (the one QEMU's
	// `-tpmdev emulator` connects to).
	Ctrl string
	cmd  *exec.Cmd
	done chan error
}

// Start runs swtpm on stateDir with a command socket and a control socket in
// stateDir. With startup, swtpm itself sends TPM2_Startup (for processes
// that use the TPM directly; firmware sends it when a VM boots). Log goes to
// stateDir/swtpm.log.
func Start(stateDir string, startup bool) (*TPM, error) {
	sock := filepath.Join(stateDir, "tpm.sock")
	ctrl := filepath.Join(stateDir, "ctrl.sock")
	_ = os.Remove(sock)
	_ = os.Remove(ctrl)
	args := []string{"socket", "--tpm2", "--tpmstate", "dir=" + stateDir,
		"--server", "type=unixio,path=" + sock, "--ctrl", "type=unixio,path=" + ctrl,
		"--log", "file=" + filepath.Join(stateDir, "swtpm.log") + ",level=1"}
	if startup {
		args = append(args, "--flags", "startup-clear")
	}
	return run(exec.Command("swtpm", args...), &TPM{Socket: sock, Ctrl: ctrl})
}

// StartForVM runs swtpm on stateDir for a QEMU guest: a control socket only
// (stateDir/ctrl.sock, in Ctrl; QEMU passes the data channel over it, so
// Socket is empty) and no startup command (the firmware sends TPM2_Startup).
// swtpm is killed if the calling process dies. Log goes to
// stateDir/swtpm.log.
func StartForVM(stateDir string) (*TPM, error) {
	ctrl := filepath.Join(stateDir, "ctrl.sock")
	if len(ctrl) >= 108 {
		return nil, fmt.Errorf("start swtpm: control socket path %s is longer than a unix socket address allows (107 bytes)", ctrl)
	}
	_ = os.Remove(ctrl)
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+stateDir,
		"--ctrl", "type=unixio,path="+ctrl,
		"--log", "file="+filepath.Join(stateDir, "swtpm.log")+",level=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return run(cmd, &TPM{Ctrl: ctrl})
}

// run starts cmd as t's process and waits until t.Ctrl, and t.Socket if it
// has one, accept connections: swtpm opens them one after the other.
func run(cmd *exec.Cmd, t *TPM) (*TPM, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start swtpm: %w", err)
	}
	t.cmd, t.done = cmd, make(chan error, 1)
	go func() { t.done <- cmd.Wait() }()
	socks := []string{t.Ctrl}
	if t.Socket != "" {
		socks = append(socks, t.Socket)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		for len(socks) > 0 {
			c, err := net.Dial("unix", socks[0])
			if err != nil {
				break
			}
			c.Close()
			socks = socks[1:]
		}
		if len(socks) == 0 {
			return t, nil
		}
		select {
		case err := <-t.done:
			return nil, fmt.Errorf("start swtpm: exited: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = t.Stop()
			return nil, errors.New("start swtpm: its socket did not appear within 10 s")
		}
	}
}

// Stop ends swtpm and waits for it.
func (t *TPM) Stop() error {
	if t.cmd.Process == nil {
		return nil
	}
	_ = t.cmd.Process.Kill()
	select {
	case <-t.done:
	case <-time.After(5 * time.Second):
		return errors.New("stop swtpm: it did not exit")
	}
	return nil
}
