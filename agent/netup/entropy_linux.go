package netup

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rndAddEntropy is RNDADDENTROPY from linux/random.h.
const rndAddEntropy = 0x40085203

// AddEntropy mixes seed into the kernel's random pool and credits it, so that
// getrandom (which TLS and DHCP need) does not block early in boot on machines
// whose kernel does not trust a CPU or board source yet. The seed must come
// from a real random source: the agent takes it from the TPM.
func AddEntropy(seed []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("add entropy: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(buf[0:], uint32(8*len(seed))) // entropy_count, in bits
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(seed)))   // buf_size
	copy(buf[8:], seed)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndAddEntropy, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return fmt.Errorf("add entropy: %w", errno)
	}
	return nil
}
