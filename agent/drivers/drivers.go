// Package drivers loads the kernel modules that drive the devices present,
// as udev's coldplug with modprobe does on a full system: each device's
// modalias (sysfs, /sys/bus/BUS/devices/DEV/modalias) is matched against the
// patterns of modules.alias, and each matching module is loaded with its
// dependencies from modules.dep. Both files are depmod's output for the
// module tree /lib/modules/RELEASE, so a driver's dependencies and the
// devices it drives come from the kernel's own modules, not from a list kept
// by hand.
package drivers

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

// Bounds on what is read: depmod's modules.alias of a whole distribution
// kernel is about 1.5 MB; a sysfs attribute is at most one page.
const (
	MaxAliasBytes    = 8 << 20
	MaxModaliasBytes = 4096
	MaxDevices       = 16384
	// MaxRounds bounds the passes over the devices: a loaded driver can add
	// devices on another bus (virtio_pci adds a virtio device, whose driver
	// is virtio_net), which the next pass matches.
	MaxRounds = 4
)

// Alias is one line of modules.alias: devices whose modalias matches
// Pattern (a shell pattern, as kmod's fnmatch(3)) are driven by Module.
type Alias struct {
	Pattern string
	Module  string
	// literal is Pattern up to its first wildcard: a modalias without that
	// prefix cannot match, which spares most path.Match calls.
	literal string
}

// Aliases is a parsed modules.alias, in file order.
type Aliases []Alias

// ReadAliases parses modules.alias: lines "alias PATTERN MODULE", blank lines
// and '#' comments. It reads at most MaxAliasBytes; a longer file, a line of
// another form or a malformed pattern is an error naming the line.
func ReadAliases(r io.Reader) (Aliases, error) {
	var out Aliases
	lr := &io.LimitedReader{R: r, N: MaxAliasBytes + 1}
	sc := bufio.NewScanner(lr)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return nil, fmt.Errorf("modules.alias line %d: want \"alias PATTERN MODULE\", got %q", n, truncate(line))
		}
		if _, err := path.Match(f[1], ""); err != nil {
			return nil, fmt.Errorf("modules.alias line %d: pattern %q: %w", n, truncate(f[1]), err)
		}
		lit := f[1]
		if i := strings.IndexAny(lit, "*?[\\"); i >= 0 {
			lit = lit[:i]
		}
		out = append(out, Alias{Pattern: f[1], Module: f[2], literal: lit})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.alias: %w", err)
	}
	if lr.N <= 0 {
		return nil, fmt.Errorf("read modules.alias: longer than %d bytes", MaxAliasBytes)
	}
	return out, nil
}

// Match returns the modules whose patterns match modalias, each once, in file
// order. A pattern's '*' does not match '/' (Go's path.Match); no bus's
// modalias contains one.
func (a Aliases) Match(modalias string) []string {
	var out []string
	for _, al := range a {
		if !strings.HasPrefix(modalias, al.literal) {
			continue
		}
		if ok, _ := path.Match(al.Pattern, modalias); ok && !slices.Contains(out, al.Module) {
			out = append(out, al.Module)
		}
	}
	return out
}

// Modaliases returns the modalias of every device under sysfs/bus/*/devices,
// sorted and each once. A device without one (most have none) is skipped; one
// that cannot be read, or more than MaxDevices devices, is an error.
func Modaliases(sysfs string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(sysfs, "bus", "*", "devices", "*", "modalias"))
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	if len(files) > MaxDevices {
		return nil, fmt.Errorf("list devices: %d devices with a modalias, more than %d", len(files), MaxDevices)
	}
	out := make([]string, 0, len(files))
	for _, f := range files {
		b, err := readSmall(f, MaxModaliasBytes)
		if errors.Is(err, os.ErrNotExist) {
			continue // the device went away
		}
		if err != nil {
			return nil, fmt.Errorf("read modalias: %w", err)
		}
		if m := strings.TrimSpace(string(b)); m != "" {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// LoadError is a module that drives a device present but did not load.
type LoadError struct {
	Module   string
	Modalias string // the first device it matched
	Err      error
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("load module %s (for %s): %v", e.Module, e.Modalias, e.Err)
}

func (e *LoadError) Unwrap() error { return e.Err }

// Config says where the devices and modules are.
type Config struct {
	// Root is the directory that holds sys/ and lib/modules/; "" is "/".
	Root string
	// Release names the module tree, Root/lib/modules/Release; "" is the
	// running kernel's release (uname -r).
	Release string
	// DryRun, if set, is given the path of each module file in load order
	// (a module's dependencies before it) instead of loading it.
	DryRun func(path string)
}

// Load loads the drivers of the devices present: for each device whose
// modalias matches modules.alias, the module named and, first, what it
// depends on (modules.dep; u-root's kmodule prober, which skips what the
// kernel has built in or already loaded). It repeats while loading adds
// devices that match other modules, at most MaxRounds times. It returns the
// matched modules that loaded, in load order. A module that fails to load
// does not stop the others: each failure is a *LoadError, joined into the
// error returned. A missing or malformed modules.alias or modules.dep loads
// nothing and is an error; no matching device is not.
func Load(cfg Config, log *slog.Logger) ([]string, error) {
	root := cfg.Root
	if root == "" {
		root = "/"
	}
	rel := cfg.Release
	if rel == "" {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return nil, fmt.Errorf("load drivers: uname: %w", err)
		}
		rel = unix.ByteSliceToString(u.Release[:])
	}
	dir := filepath.Join(root, "lib", "modules", rel)
	f, err := os.Open(filepath.Join(dir, "modules.alias"))
	if err != nil {
		return nil, fmt.Errorf("load drivers: %w", err)
	}
	aliases, err := ReadAliases(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("load drivers: %w", err)
	}
	p, err := kmodule.NewProber(kmodule.ProbeOpts{RootDir: cfg.Root, KVer: rel, DryRunCB: cfg.DryRun, IgnoreProcMods: cfg.DryRun != nil})
	if err != nil {
		return nil, fmt.Errorf("load drivers: %w", err)
	}
	tried := map[string]bool{}
	var loaded []string
	var errs []error
	for round := 0; round < MaxRounds; round++ {
		devices, err := Modaliases(filepath.Join(root, "sys"))
		if err != nil {
			return loaded, errors.Join(append(errs, fmt.Errorf("load drivers: %w", err))...)
		}
		added := false
		for _, d := range devices {
			for _, m := range aliases.Match(d) {
				if tried[m] {
					continue
				}
				tried[m], added = true, true
				if err := p.Probe(m, ""); err != nil {
					errs = append(errs, &LoadError{Module: m, Modalias: d, Err: err})
					continue
				}
				log.Debug("loaded driver", "module", m, "modalias", d)
				loaded = append(loaded, m)
			}
		}
		if !added {
			break
		}
	}
	return loaded, errors.Join(errs...)
}

// readSmall reads at most limit bytes of name.
func readSmall(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// truncate shortens text from a file for an error message.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
