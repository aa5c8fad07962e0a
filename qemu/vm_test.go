package qemu

import (
	"bytes"
	"context"
	"debug/pe"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootgate/bootgate/qemu/swtpm"
)

const (
	ovmfCode  = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	ovmfVars  = "/usr/share/OVMF/OVMF_VARS_4M.fd" // empty: setup mode, nothing to sign
	efiStub   = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
	helloLine = `BOOTGATE-EVENT {"event":"hello","n":1}`
)

func TestParseEventLine(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		ok         bool
		event      string
		raw        string
	}{
		{"plain", `BOOTGATE-EVENT {"event":"hello","n":1}`, true, "hello", `{"event":"hello","n":1}`},
		{"CRLF", "BOOTGATE-EVENT {\"event\":\"hello\",\"n\":1}\r\n", true, "hello", `{"event":"hello","n":1}`},
		{"carriage returns inside", "\rBOOTGATE-EVENT {\"event\":\r\"hello\",\"n\":1}\r", true, "hello", `{"event":"hello","n":1}`},
		{"garbage prefix", "\x1b[2J\x1b[01;01H\xc4\xc4[    3.1] random: crngBOOTGATE-EVENT {\"event\":\"hello\",\"n\":1}", true, "hello", `{"event":"hello","n":1}`},
		{"trailing noise", `BOOTGATE-EVENT {"event":"hello","n":1} [    4.2] virtio_net`, true, "hello", `{"event":"hello","n":1}`},
		{"no blank", `BOOTGATE-EVENT{"event":"a"}`, true, "a", `{"event":"a"}`},
		{"second marker good", `BOOTGATE-EVENT {"event":"a",BOOTGATE-EVENT {"event":"b"}`, true, "b", `{"event":"b"}`},
		{"nested fields", `BOOTGATE-EVENT {"event":"attested","pcrs":{"7":"ab"},"ok":true}`, true, "attested", `{"event":"attested","pcrs":{"7":"ab"},"ok":true}`},
		{"no marker", `{"event":"hello"}`, false, "", ""},
		{"marker only", "BOOTGATE-EVENT", false, "", ""},
		{"truncated JSON", `BOOTGATE-EVENT {"event":"hello","n":`, false, "", ""},
		{"garbage JSON", `BOOTGATE-EVENT {event: hello}`, false, "", ""},
		{"not an object", `BOOTGATE-EVENT ["event","hello"]`, false, "", ""},
		{"no event field", `BOOTGATE-EVENT {"name":"hello"}`, false, "", ""},
		{"event not a string", `BOOTGATE-EVENT {"event":7}`, false, "", ""},
		{"empty event", `BOOTGATE-EVENT {"event":""}`, false, "", ""},
		{"kernel line", `[    0.000000] Linux version 6.1.0-56-cloud-amd64`, false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := ParseEventLine(tc.line)
			if ok != tc.ok {
				t.Fatalf("ParseEventLine(%q) ok = %v, want %v", tc.line, ok, tc.ok)
			}
			if !ok {
				return
			}
			if e.Name != tc.event || e.Raw != tc.raw {
				t.Errorf("ParseEventLine(%q) = name %q raw %q, want %q %q", tc.line, e.Name, e.Raw, tc.event, tc.raw)
			}
			if e.String("event") != tc.event {
				t.Errorf("String(event) = %q", e.String("event"))
			}
		})
	}
}

func TestEventFields(t *testing.T) {
	e, ok := ParseEventLine(`BOOTGATE-EVENT {"event":"x","n":1,"big":9007199254740993,"f":2.5,"s":"42","l":[1,"a"],"nil":null,"b":false}`)
	if !ok {
		t.Fatal("not parsed")
	}
	for _, tc := range []struct {
		key  string
		str  string
		num  int64
		desc string
	}{
		{"n", "1", 1, "number"},
		{"big", "9007199254740993", 9007199254740993, "int64 beyond float64 precision"},
		{"f", "2.5", 2, "fraction"},
		{"s", "42", 42, "numeric string"},
		{"l", `[1,"a"]`, 0, "list"},
		{"nil", "", 0, "null"},
		{"b", "false", 0, "bool"},
		{"missing", "", 0, "missing"},
	} {
		if got := e.String(tc.key); got != tc.str {
			t.Errorf("%s: String(%q) = %q, want %q", tc.desc, tc.key, got, tc.str)
		}
		if got := e.Int(tc.key); got != tc.num {
			t.Errorf("%s: Int(%q) = %d, want %d", tc.desc, tc.key, got, tc.num)
		}
	}
	exit := Event{Name: ExitEvent, Fields: map[string]any{"code": -1, "reason": ExitTimeout}}
	if exit.Int("code") != -1 || exit.String("reason") != ExitTimeout {
		t.Errorf("exit event fields: %d %q", exit.Int("code"), exit.String("reason"))
	}
}

func TestNetworkArgs(t *testing.T) {
	for _, tc := range []struct {
		net, want, prefix string
		bad               bool
	}{
		{net: "", want: ""},
		{net: "none", want: ""},
		{net: "user", want: "-netdev user,id=net0 -device virtio-net-pci,netdev=net0,romfile=,mac=52:54:00:"},
		{net: "user,mac=52:54:00:00:00:01", want: "-netdev user,id=net0 -device virtio-net-pci,netdev=net0,romfile=,mac=52:54:00:00:00:01"},
		{net: "tap:tap0", want: "-netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=net0,romfile=,mac=52:54:00:"},
		{net: "tap:tap0,model=e1000e", want: "-netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device e1000e,netdev=net0,romfile=,mac=52:54:00:"},
		{net: "user,model=igb,mac=52:54:00:00:00:01", want: "-netdev user,id=net0 -device igb,netdev=net0,romfile=,mac=52:54:00:00:00:01"},
		{net: "user,model=rtl8139", bad: true},
		{net: "user,model=e1000e,romfile=x", bad: true},
		{net: "tap:tap0,ns=lab", want: "-netdev tap,id=net0,ifname=tap0,script=no,downscript=no", prefix: "ip netns exec lab"},
		{net: "tap", bad: true},
		{net: "user,ns=lab", bad: true},
		{net: "none,mac=1", bad: true},
		{net: "bridge:br0", bad: true},
	} {
		args, prefix, err := network(Config{Name: "h", Net: tc.net})
		if (err != nil) != tc.bad {
			t.Errorf("network(%q) error = %v, want error %v", tc.net, err, tc.bad)
			continue
		}
		if got := strings.Join(args, " "); !strings.HasPrefix(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("network(%q) = %q, want %q...", tc.net, got, tc.want)
		}
		if got := strings.Join(prefix, " "); got != tc.prefix {
			t.Errorf("network(%q) prefix = %q, want %q", tc.net, got, tc.prefix)
		}
	}
	a, _, _ := network(Config{Name: "a", Net: "user"})
	b, _, _ := network(Config{Name: "b", Net: "user"})
	if a[len(a)-1] == b[len(b)-1] {
		t.Errorf("VMs a and b got the same NIC: %s", a[len(a)-1])
	}
	if got := shellQuote("romfile="); got != "romfile=" {
		t.Errorf("shellQuote(romfile=) = %s", got)
	}
	if got := shellQuote("it's"); got != `'it'\''s'` {
		t.Errorf("shellQuote(it's) = %s", got)
	}
}

// needQEMU skips the test unless QEMU, OVMF and (with tpm) swtpm are here.
func needQEMU(t *testing.T, tpm bool) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM; skipped in -short mode")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is needed (Debian package qemu-system-x86)")
	}
	for _, f := range []string{ovmfCode, ovmfVars} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("OVMF is needed (Debian package ovmf): %v", err)
		}
	}
	if tpm {
		if err := swtpm.Available(); err != nil {
			t.Skipf("swtpm is needed: %v", err)
		}
	}
}

// fakeTB records a Boot's cleanups and errors instead of failing the test.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
	errors   []string
}

func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Errorf(format string, a ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprintf(format, a...))
}
func (f *fakeTB) Failed() bool        { return len(f.errors) > 0 }
func (f *fakeTB) Logf(string, ...any) {}
func (f *fakeTB) cleanup() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// minimalESP makes an ESP directory whose BOOTX64.EFI is not a PE image, so
// the firmware finds nothing to boot.
func minimalESP(t *testing.T) string {
	esp := filepath.Join(t.TempDir(), "esp")
	if err := os.MkdirAll(filepath.Join(esp, "EFI", "BOOT"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(esp, "EFI", "BOOT", "BOOTX64.EFI"), []byte("not a PE image"), 0o644); err != nil {
		t.Fatal(err)
	}
	return esp
}

// TestQEMUFailure checks that a QEMU that fails at once is reported with its
// stderr, and that a VM never waited for fails the test that booted it.
func TestQEMUFailure(t *testing.T) {
	needQEMU(t, false)
	cfg := Config{Name: "bad-args", Dir: t.TempDir(), OVMFCode: ovmfCode, OVMFVars: ovmfVars,
		ESP: minimalESP(t), ExtraArgs: []string{"-no-such-option"}}

	vm := Boot(t, cfg)
	err := vm.Wait()
	if err == nil || !strings.Contains(err.Error(), "qemu failed") || !strings.Contains(err.Error(), "no-such-option") {
		t.Errorf("Wait = %v, want a QEMU failure naming the bad option", err)
	}
	if _, err := vm.WaitFor(context.Background(), func(e Event) bool { return e.Name == "hello" }); err == nil ||
		!strings.Contains(err.Error(), "no awaited event: VM bad-args: qemu failed") {
		t.Errorf("WaitFor = %v, want an error saying the VM ended", err)
	}

	fake := &fakeTB{TB: t}
	cfg.Dir = t.TempDir()
	_ = Boot(fake, cfg)
	fake.cleanup()
	if len(fake.errors) != 1 || !strings.Contains(fake.errors[0], "never waited for") {
		t.Errorf("a VM never waited for: test errors %q, want one saying so", fake.errors)
	}
}

// TestTimeout checks that a VM is killed when its timeout elapses, with
// its swtpm, and that WaitFor and Wait say so.
func TestTimeout(t *testing.T) {
	needQEMU(t, true)
	ca, err := swtpm.NewCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	vm := Boot(t, Config{Name: "timeout", Dir: t.TempDir(), OVMFCode: ovmfCode, OVMFVars: ovmfVars,
		ESP: minimalESP(t), TPM: ca, Timeout: 3 * time.Second})
	_, err = vm.WaitFor(context.Background(), func(e Event) bool { return e.Name == "hello" })
	if err == nil || !strings.Contains(err.Error(), "timeout of 3s elapsed") {
		t.Errorf("WaitFor = %v, want a timeout", err)
	}
	if err := vm.Wait(); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("Wait = %v, want a timeout", err)
	}
	vm.mu.Lock()
	exit := vm.events[len(vm.events)-1]
	vm.mu.Unlock()
	if exit.Name != ExitEvent || exit.String("reason") != ExitTimeout || exit.Int("code") != -1 {
		t.Errorf("last event = %s, want an exit with reason timeout", exit.Format())
	}
	if left := leftovers(t, vm.cfg.Dir); len(left) > 0 {
		t.Errorf("processes left after the VM ended: %q", left)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := vm.WaitFor(ctx, func(e Event) bool { return false }); err == nil {
		t.Error("WaitFor after the exit event succeeded")
	}
}

// TestBootUKI boots OVMF (setup mode, Secure Boot not enforced) with a TPM
// from an ESP holding a UKI (systemd's EFI stub, the pinned kernel, and an
// initramfs whose /init prints a hello event and powers off).
func TestBootUKI(t *testing.T) {
	needQEMU(t, true)
	for _, tool := range []string{"objcopy", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is needed", tool)
		}
	}
	if _, err := os.Stat(efiStub); err != nil {
		t.Skipf("systemd's EFI stub is needed (Debian package systemd-boot-efi): %v", err)
	}
	kernel := pinnedKernel(t)

	t0 := time.Now()
	work := t.TempDir()
	initrd := filepath.Join(work, "initrd.cpio")
	writeInitramfs(t, initrd, buildInit(t, work))
	esp := filepath.Join(work, "esp")
	if err := os.MkdirAll(filepath.Join(esp, "EFI", "BOOT"), 0o755); err != nil {
		t.Fatal(err)
	}
	buildUKI(t, filepath.Join(esp, "EFI", "BOOT", "BOOTX64.EFI"), kernel, initrd, "console=ttyS0 panic=-1")
	t.Logf("built init, initramfs and UKI in %.1fs", time.Since(t0).Seconds())

	ca, err := swtpm.NewCA(filepath.Join(work, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	marks := newMilestones()
	t1 := time.Now()
	vm := Boot(t, Config{
		Name:     "hello",
		Dir:      filepath.Join(work, "vm"),
		OVMFCode: ovmfCode,
		OVMFVars: ovmfVars,
		ESP:      esp,
		TPM:      ca,
		Net:      "user",
		Timeout:  90 * time.Second,
		Console:  marks,
	})
	t.Logf("swtpm manufactured and started, QEMU started in %.1fs", time.Since(t1).Seconds())
	t.Logf("QEMU command line:\n%s", vm.CommandLine())

	var names []string
	eventsRead := make(chan struct{})
	go func() {
		defer close(eventsRead)
		for e := range vm.Events() {
			names = append(names, e.Name)
		}
	}()

	hello, err := vm.WaitFor(context.Background(), func(e Event) bool { return e.Name == "hello" })
	if err != nil {
		t.Fatal(err)
	}
	if hello.Int("n") != 1 || hello.Raw != `{"event":"hello","n":1}` {
		t.Errorf("hello event = %s, want n=1", hello.Format())
	}
	if err := vm.Wait(); err != nil {
		t.Fatalf("Wait = %v, want nil after the guest powered off", err)
	}
	exit, err := vm.WaitFor(context.Background(), func(e Event) bool { return e.Name == ExitEvent })
	if err != nil {
		t.Fatal(err)
	}
	if exit.String("reason") != ExitPowerOff || exit.Int("code") != 0 {
		t.Errorf("exit event = %s, want a power-off with status 0", exit.Format())
	}

	log, err := os.ReadFile(vm.ConsoleLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		helloLine + "\n",
		"TPMEventLog=",                 // the firmware measured the boot into the swtpm
		"tpm_tis MSFT0101:00: 2.0 TPM", // and Linux sees it
		"EFI stub: Measured initrd data into PCR 9",
	} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("%s lacks %q", vm.ConsoleLog(), want)
		}
	}
	<-eventsRead
	if got := strings.Join(names, " "); got != "hello exit" {
		t.Errorf("Events() gave %q, want hello exit", got)
	}
	for _, m := range marks.report(vm.started) {
		t.Log(m)
	}
	t.Logf("%-42s +%5.1fs", "hello event", hello.Time.Seconds())
	t.Logf("%-42s +%5.1fs", "QEMU exited (guest powered off)", exit.Time.Seconds())
	if err := vm.Stop(); err != nil {
		t.Error(err)
	}
	if left := leftovers(t, vm.cfg.Dir); len(left) > 0 {
		t.Errorf("processes left after the VM ended: %q", left)
	}
}

// TestGuestReset checks that a guest that resets (here the kernel panics,
// having no init, and panic=-1 reboots it) is not taken for a power-off,
// although -no-reboot makes QEMU exit with status 0 either way.
func TestGuestReset(t *testing.T) {
	needQEMU(t, false)
	if _, err := exec.LookPath("objcopy"); err != nil {
		t.Skip("objcopy is needed")
	}
	if _, err := os.Stat(efiStub); err != nil {
		t.Skipf("systemd's EFI stub is needed (Debian package systemd-boot-efi): %v", err)
	}
	work := t.TempDir()
	initrd := filepath.Join(work, "initrd.cpio")
	writeInitramfs(t, initrd, "")
	esp := filepath.Join(work, "esp")
	if err := os.MkdirAll(filepath.Join(esp, "EFI", "BOOT"), 0o755); err != nil {
		t.Fatal(err)
	}
	buildUKI(t, filepath.Join(esp, "EFI", "BOOT", "BOOTX64.EFI"), pinnedKernel(t), initrd, "console=ttyS0 panic=-1")

	vm := Boot(t, Config{Name: "reset", Dir: filepath.Join(work, "vm"), OVMFCode: ovmfCode, OVMFVars: ovmfVars,
		ESP: esp, Timeout: time.Minute})
	exit, err := vm.WaitFor(context.Background(), func(e Event) bool { return e.Name == ExitEvent })
	if err != nil {
		t.Fatal(err)
	}
	if exit.String("reason") != ExitReset || exit.Int("code") != 0 {
		t.Errorf("exit event = %s, want a reset with status 0", exit.Format())
	}
	if err := vm.Wait(); err == nil || !strings.Contains(err.Error(), "the guest reset") {
		t.Errorf("Wait = %v, want an error saying the guest reset", err)
	}
	if !strings.Contains(vm.Tail(), "Kernel panic") {
		t.Errorf("console tail lacks the kernel panic:\n%s", vm.Tail())
	}
	t.Logf("kernel panic and reset seen at +%.1fs", exit.Time.Seconds())
}

// milestones is a Console writer that notes when boot milestones were seen.
type milestones struct {
	patterns []struct{ text, label string } // console texts marking boot stages, in order
	mu       sync.Mutex
	at       map[string]time.Time
}

func newMilestones() *milestones {
	return &milestones{at: map[string]time.Time{}, patterns: []struct{ text, label string }{
		{"BdsDxe: loading Boot", "OVMF boot manager loads the UKI"},
		{"BdsDxe: starting Boot", "OVMF starts the UKI (verified, measured)"},
		{"EFI stub: ", "Linux EFI stub runs"},
		{"Linux version", "kernel console up"},
		{"Run /init as init process", "kernel runs /init"},
		{"reboot: Power down", "kernel powers off"},
	}}
}

func (m *milestones) Write(p []byte) (int, error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, pat := range m.patterns {
		if _, seen := m.at[pat.text]; !seen && bytes.Contains(p, []byte(pat.text)) {
			m.at[pat.text] = now
		}
	}
	return len(p), nil
}

func (m *milestones) report(start time.Time) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, pat := range m.patterns {
		if at, ok := m.at[pat.text]; ok {
			out = append(out, fmt.Sprintf("%-42s +%5.1fs", pat.label, at.Sub(start).Seconds()))
		}
	}
	return out
}

// pinnedKernel returns build/kernel/vmlinuz, fetching it with
// images/kernel.sh if it is missing.
func pinnedKernel(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("find the module root: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	kernel := filepath.Join(root, "build", "kernel", "vmlinuz")
	if _, err := os.Stat(kernel); err == nil {
		return kernel
	}
	cmd := exec.Command("bash", "images/kernel.sh")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("the pinned kernel is missing and images/kernel.sh failed: %v\n%s", err, out)
	}
	return kernel
}

// initSource is the test initramfs's /init: it prints a hello event on the
// console, waits until the UART sent it, and powers off.
const initSource = `package main

import (
	"fmt"
	"os"
	"syscall"
)

func main() {
	c, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		c = os.Stdout
	}
	fmt.Fprintln(c, ` + "`" + helloLine + "`" + `)
	// tcdrain (TCSBRK with a non-zero argument): power off only after the
	// UART sent the line.
	syscall.Syscall(syscall.SYS_IOCTL, c.Fd(), 0x5409, 1)
	syscall.Sync()
	err = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	fmt.Fprintln(c, "power off:", err)
	select {}
}
`

// buildInit builds initSource as a static Linux binary in dir.
func buildInit(t *testing.T, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "initsrc")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"go.mod":  "module bootgate.test/init\n\ngo 1.22\n",
		"main.go": initSource,
	} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "init")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOWORK=off", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build /init: %v\n%s", err, out)
	}
	return bin
}

// writeInitramfs writes a newc cpio archive holding /dev/console and, unless
// init is "", the program init as /init.
func writeInitramfs(t *testing.T, path, init string) {
	t.Helper()
	var b bytes.Buffer
	ino := 0
	add := func(name string, mode, rdevMajor, rdevMinor int, data []byte) {
		ino++
		fmt.Fprintf(&b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
		b.WriteString(name + "\x00")
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
		b.Write(data)
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	add("dev", 0o040755, 0, 0, nil)
	add("dev/console", 0o020600, 5, 1, nil)
	if init != "" {
		prog, err := os.ReadFile(init)
		if err != nil {
			t.Fatal(err)
		}
		add("init", 0o100755, 0, 0, prog)
	}
	add("TRAILER!!!", 0, 0, 0, nil)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// buildUKI writes a unified kernel image: the EFI stub with .cmdline,
// .initrd and .linux sections placed after the stub's own, as ukify does.
func buildUKI(t *testing.T, out, kernel, initrd, cmdline string) {
	t.Helper()
	f, err := pe.Open(efiStub)
	if err != nil {
		t.Fatal(err)
	}
	oh, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	if !ok {
		t.Fatalf("%s is not a PE32+ image", efiStub)
	}
	var end uint64
	for _, s := range f.Sections {
		end = max(end, uint64(s.VirtualAddress)+uint64(max(s.VirtualSize, s.Size)))
	}
	f.Close()
	align := func(v uint64) uint64 { return (v + 0xfff) &^ 0xfff }

	cmdlineFile := filepath.Join(filepath.Dir(initrd), "cmdline")
	if err := os.WriteFile(cmdlineFile, []byte(cmdline), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{}
	next := align(end)
	for _, s := range []struct{ name, file string }{{".cmdline", cmdlineFile}, {".initrd", initrd}, {".linux", kernel}} {
		fi, err := os.Stat(s.file)
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "--add-section", s.name+"="+s.file,
			"--change-section-vma", fmt.Sprintf("%s=%#x", s.name, oh.ImageBase+next))
		next = align(next + uint64(fi.Size()))
	}
	args = append(args, efiStub, out)
	if b, err := exec.Command("objcopy", args...).CombinedOutput(); err != nil {
		t.Fatalf("objcopy %s: %v\n%s", strings.Join(args, " "), err, b)
	}
}

// leftovers lists the processes whose command line mentions dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		if cmd := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cmd, dir) {
			found = append(found, filepath.Base(filepath.Dir(p))+": "+cmd)
		}
	}
	return found
}
