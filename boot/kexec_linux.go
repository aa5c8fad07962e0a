package boot

import (
	"os"

	"github.com/u-root/u-root/pkg/boot/kexec"
)

// LinuxKexec is the running kernel's kexec: kexec_file_load, which works
// under Secure Boot lockdown (the older kexec_load is refused there).
type LinuxKexec struct{}

// FileLoad loads kernel and initrd for the next kexec reboot.
func (LinuxKexec) FileLoad(kernel, initrd *os.File, cmdline string) error {
	return kexec.FileLoad(kernel, initrd, cmdline)
}

// Reboot jumps into the loaded kernel.
func (LinuxKexec) Reboot() error { return kexec.Reboot() }
