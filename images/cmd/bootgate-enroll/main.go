// Command bootgate-enroll enrolls bootgate's Secure Boot keys into UEFI firmware
// that is in setup mode, or reports the firmware's Secure Boot state.
//
// It runs as the u-root uinit of a one-off provisioning VM (OVMF with an empty
// variable store). It loads and mounts efivarfs, then writes, as authenticated
// variable updates:
//
//  1. db, holding every *.der certificate of the -db directories, signed by KEK;
//  2. KEK, holding KEK.pem, signed by PK;
//  3. PK, holding PK.pem, signed by itself, which leaves setup mode.
//
// The keys and certificates are read from -dir (PK.key, PK.pem, KEK.key, KEK.pem,
// as written by bootgate-keys). The last line printed is BOOTGATE-ENROLL-OK or
// BOOTGATE-ENROLL-FAIL: REASON.
//
// With -check it changes nothing and prints SecureBoot, SetupMode and the
// certificates in PK, KEK, db and dbx, compares them with those in -dir and the
// -db directories, and ends with BOOTGATE-CHECK-OK or BOOTGATE-CHECK-FAIL: REASON.
//
// With -poweroff the machine is powered off at the end, whatever the outcome.
// Arguments come from the u-root uinit command and from the kernel command line
// (uroot.uinitargs="-check"), e.g.
//
//	uroot.uinitargs="-db=/etc/enroll/db,/etc/enroll/db-other"
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for the provisioning initramfs's layout.
const (
	defaultDir    = "/etc/enroll"
	defaultDB     = "/etc/enroll/db"
	defaultModule = "/lib/modules/efivarfs.ko"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	dir      string
	dbDirs   []string
	module   string
	check    bool
	poweroff bool
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bootgate-enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opts options
		db   string
	)
	fs.StringVar(&opts.dir, "dir", defaultDir, "directory with PK.key, PK.pem, KEK.key and KEK.pem")
	fs.StringVar(&db, "db", defaultDB, "comma-separated directories whose *.der certificates make up db")
	fs.StringVar(&opts.module, "efivarfs-module", defaultModule, "efivarfs kernel module to load if efivarfs is not available")
	fs.BoolVar(&opts.check, "check", false, "only report the Secure Boot state and compare it with the expected keys")
	fs.BoolVar(&opts.poweroff, "poweroff", false, "power the machine off when done (for use as an initramfs's uinit)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		// As a uinit, still give a verdict and power off: the VM must not
		// hang on a bad uroot.uinitargs.
		tag := "BOOTGATE-ENROLL"
		if slices.Contains(args, "-check") || slices.Contains(args, "--check") {
			tag = "BOOTGATE-CHECK"
		}
		fmt.Fprintf(stdout, "%s-FAIL: arguments: %v\n", tag, err)
		if slices.Contains(args, "-poweroff") || slices.Contains(args, "--poweroff") {
			powerOff(&console{w: stdout}, stdout)
		}
		return 2
	}
	for _, d := range strings.Split(db, ",") {
		if d = strings.TrimSpace(d); d != "" {
			opts.dbDirs = append(opts.dbDirs, d)
		}
	}

	c := &console{w: stdout}
	tag := "BOOTGATE-ENROLL"
	if opts.check {
		tag = "BOOTGATE-CHECK"
	}
	start := time.Now()
	err := mountEfivarfs(c, opts.module)
	if err == nil {
		if opts.check {
			err = check(c, opts)
		} else {
			err = enroll(c, opts)
		}
	}
	status := 0
	c.printf("done in %.1fs", time.Since(start).Seconds())
	if err != nil {
		fmt.Fprintf(stdout, "%s-FAIL: %v\n", tag, err)
		status = 1
	} else {
		fmt.Fprintf(stdout, "%s-OK\n", tag)
	}
	if opts.poweroff {
		powerOff(c, stdout)
	}
	return status
}

// console prints progress lines prefixed with the command's name.
type console struct{ w io.Writer }

func (c *console) printf(format string, args ...any) {
	fmt.Fprintf(c.w, "bootgate-enroll: "+format+"\n", args...)
}

// powerOff flushes file systems and the console and powers the machine off. It
// returns only if that fails.
func powerOff(c *console, out io.Writer) {
	unix.Sync()
	if f, ok := out.(*os.File); ok {
		// tcdrain: wait until the serial console has sent the last line.
		_ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
	}
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		c.printf("power off: %v", err)
	}
}
