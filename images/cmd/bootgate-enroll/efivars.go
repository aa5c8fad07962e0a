package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	efiDir     = "/sys/firmware/efi"
	efivarsDir = "/sys/firmware/efi/efivars"
)

// mountEfivarfs makes the EFI variables available at efivarsDir: it loads the
// efivarfs module unless the kernel already has the file system, and mounts it
// unless it is mounted (u-root's init tries to mount it before it loads
// modules, so usually it is not).
func mountEfivarfs(c *console, module string) error {
	if _, err := os.Stat(efiDir); err != nil {
		return fmt.Errorf("no %s: not booted through UEFI: %w", efiDir, err)
	}
	mounted, err := isMounted(efivarsDir, "efivarfs")
	if err != nil {
		return err
	}
	if mounted {
		c.printf("efivarfs already mounted on %s", efivarsDir)
		return nil
	}
	have, err := haveFilesystem("efivarfs")
	if err != nil {
		return err
	}
	if !have {
		if err := loadModule(module); err != nil {
			return err
		}
		c.printf("loaded %s", module)
	}
	if err := os.MkdirAll(efivarsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", efivarsDir, err)
	}
	if err := unix.Mount("efivarfs", efivarsDir, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount efivarfs on %s: %w", efivarsDir, err)
	}
	c.printf("mounted efivarfs on %s", efivarsDir)
	return nil
}

// loadModule loads a kernel module from a file; a module that is already
// loaded is not an error.
func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load efivarfs module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	return nil
}

// haveFilesystem reports whether the running kernel supports file system fstype.
func haveFilesystem(fstype string) (bool, error) {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false, fmt.Errorf("read /proc/filesystems: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 && fields[len(fields)-1] == fstype {
			return true, nil
		}
	}
	return false, nil
}

// isMounted reports whether a file system of type fstype is mounted on target.
func isMounted(target, fstype string) (bool, error) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false, fmt.Errorf("read /proc/self/mounts: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[1] == target && fields[2] == fstype {
			return true, nil
		}
	}
	return false, nil
}
