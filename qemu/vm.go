// Package qemu runs test hosts: QEMU VMs (q35, TCG) with OVMF in Secure Boot
// mode (SMM, secure pflash), a freshly manufactured swtpm, and a boot disk
// made from an ESP directory, so the firmware measures the whole boot chain as
// on a real machine. The guest's serial console is logged and turned into
// typed events (see Event).
package qemu

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bootgate/bootgate/qemu/swtpm"
)

// Defaults for a Config's zero values.
const (
	DefaultMemory  = 512             // MiB
	DefaultTimeout = 5 * time.Minute // whole-VM limit
)

// tailLines is how many console lines errors and failure logs show.
const tailLines = 40

// Config of one test host.
type Config struct {
	// Name is used in logs, in the console prefix and in QEMU's -name; it
	// also derives the guest's MAC address.
	Name string
	// Dir is the working directory of this VM (created): the copy of the
	// vars file, the swtpm state (Dir/tpm), console.log, qemu.log (QEMU's
	// stderr) and the QMP socket. Keep it short: unix socket paths under it
	// must fit in 107 bytes.
	Dir string
	// OVMFCode is the firmware code image, e.g.
	// /usr/share/OVMF/OVMF_CODE_4M.secboot.fd (mapped read-only).
	OVMFCode string
	// OVMFVars is the template variable store; the VM gets a fresh copy in
	// Dir at every Start.
	OVMFVars string
	// ESP is a directory presented read-only as the boot disk (a QEMU vvfat
	// FAT image on virtio-blk, first in the boot order). It must hold
	// EFI/BOOT/BOOTX64.EFI. Empty: no disk, the firmware boots from the
	// network (PXE or HTTP boot).
	ESP string
	// TPM manufactures this VM's fresh swtpm into Dir/tpm. Nil means a VM
	// without a TPM.
	TPM *swtpm.CA
	// Memory in MiB; 0 means DefaultMemory.
	Memory int
	// Net is the network: "none" (or ""), "user" (QEMU slirp: the guest
	// reaches the host's 127.0.0.1 as 10.0.2.2; built-in DHCP) or
	// "tap:IFNAME[,ns=NETNS]" (an existing tap device, in network namespace
	// NETNS if given; QEMU then runs under `ip netns exec`). The NIC has no
	// option ROM, so nothing extra is measured. An option
	// ",mac=52:54:00:xx:xx:xx" overrides the MAC address, which is otherwise
	// derived from Name; ",model=M" chooses the NIC QEMU emulates, one of
	// NICModels (default virtio-net-pci), so that a real driver (e1000e, igb)
	// brings the network up.
	Net string
	// ExtraArgs are appended to QEMU's command line.
	ExtraArgs []string
	// Timeout is the whole-VM limit: the VM is killed when it elapses.
	// 0 means DefaultTimeout.
	Timeout time.Duration
	// Console, if set, receives every console line, prefixed with "Name: "
	// and with terminal escape sequences removed.
	Console io.Writer
}

// VM is a running test host. Its methods are safe for concurrent use.
type VM struct {
	cfg     Config
	argv    []string
	cmd     *exec.Cmd
	tpm     *swtpm.TPM
	started time.Time
	console string

	waited       atomic.Bool
	tailReported atomic.Bool
	done         chan struct{} // closed when QEMU and swtpm are reaped and the exit event recorded
	qemuExited   chan struct{} // closed when QEMU is reaped
	stopped      chan struct{} // closed by Stop
	stopOnce     sync.Once
	eventsOnce   sync.Once
	eventsCh     chan Event

	mu       sync.Mutex
	events   []Event
	notify   chan struct{} // closed and replaced when an event is recorded
	cursor   int           // WaitFor's position in events
	tail     []string      // the last tailLines console lines
	killedAs string        // Exit* reason of a kill by this package
	killErr  error         // the context's error for ExitCanceled
	shutdown string        // the reason of QEMU's last QMP SHUTDOWN event
	panicked bool          // QEMU reported GUEST_PANICKED
	ended    bool          // the exit event is recorded (it is the last)
	exitErr  error
	tpmErr   error
	stderr   tailWriter
}

// Start manufactures and starts the VM's swtpm, then starts QEMU and returns
// at once. ctx bounds the manufacture and the VM's life: when ctx is done,
// the VM is killed (as when Config.Timeout elapses). Call Wait, WaitFor or
// Stop to end it.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if err := prepare(&cfg); err != nil {
		return nil, fmt.Errorf("start VM %s: %w", cfg.Name, err)
	}
	vm := &VM{
		cfg:        cfg,
		console:    filepath.Join(cfg.Dir, "console.log"),
		done:       make(chan struct{}),
		qemuExited: make(chan struct{}),
		stopped:    make(chan struct{}),
		notify:     make(chan struct{}),
	}
	if err := vm.start(ctx); err != nil {
		return nil, fmt.Errorf("start VM %s: %w", cfg.Name, err)
	}
	return vm, nil
}

// prepare checks cfg, applies defaults, makes paths absolute and creates Dir.
func prepare(cfg *Config) error {
	if cfg.Name == "" {
		return errors.New("config: no Name")
	}
	if cfg.Dir == "" {
		return errors.New("config: no Dir")
	}
	if cfg.Memory == 0 {
		cfg.Memory = DefaultMemory
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	for _, p := range []*string{&cfg.Dir, &cfg.OVMFCode, &cfg.OVMFVars, &cfg.ESP} {
		if p == &cfg.ESP && *p == "" {
			continue // no disk: the firmware boots from the network
		}
		if *p == "" {
			return errors.New("config: OVMFCode and OVMFVars must be set")
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	files := []string{cfg.OVMFCode, cfg.OVMFVars}
	if cfg.ESP != "" {
		files = append(files, filepath.Join(cfg.ESP, "EFI", "BOOT", "BOOTX64.EFI"))
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return err
		}
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return fmt.Errorf("%w (Debian package qemu-system-x86)", err)
	}
	if n := len(filepath.Join(cfg.Dir, "qmp.sock")); n > 107 {
		return fmt.Errorf("config: Dir %s is too long for unix socket paths under it", cfg.Dir)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	return nil
}

// start does Start's work on a prepared vm.
func (vm *VM) start(ctx context.Context) (err error) {
	cfg := vm.cfg
	vars := filepath.Join(cfg.Dir, "OVMF_VARS.fd")
	if err := copyFile(vars, cfg.OVMFVars); err != nil {
		return err
	}
	var ctrl string
	if cfg.TPM != nil {
		state := filepath.Join(cfg.Dir, "tpm")
		if err := os.RemoveAll(state); err != nil {
			return err
		}
		if err := cfg.TPM.Manufacture(ctx, state); err != nil {
			return err
		}
		if vm.tpm, err = swtpm.StartForVM(state); err != nil {
			return err
		}
		ctrl = vm.tpm.Ctrl
		defer func() {
			if err != nil {
				_ = vm.tpm.Stop()
			}
		}()
	}
	qmp := filepath.Join(cfg.Dir, "qmp.sock")
	_ = os.Remove(qmp)
	if vm.argv, err = commandLine(cfg, vars, ctrl, qmp); err != nil {
		return err
	}

	console, err := os.Create(vm.console)
	if err != nil {
		return err
	}
	stderr, err := os.Create(filepath.Join(cfg.Dir, "qemu.log"))
	if err != nil {
		console.Close()
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		console.Close()
		stderr.Close()
		return err
	}
	vm.cmd = exec.Command(vm.argv[0], vm.argv[1:]...)
	vm.cmd.Stdout = pw
	vm.cmd.Stderr = io.MultiWriter(stderr, &vm.stderr)
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	vm.started = time.Now()
	err = vm.cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		console.Close()
		stderr.Close()
		return fmt.Errorf("start qemu: %w", err)
	}

	read := make(chan struct{})
	go func() {
		defer close(read)
		vm.readConsole(pr, console)
	}()
	qmpDone := make(chan struct{})
	go func() {
		defer close(qmpDone)
		vm.watchQMP(qmp)
	}()
	timer := time.AfterFunc(cfg.Timeout, func() { vm.kill(ExitTimeout, nil) })
	go func() {
		select {
		case <-ctx.Done():
			vm.kill(ExitCanceled, ctx.Err())
		case <-vm.done:
		}
	}()
	go func() {
		werr := vm.cmd.Wait()
		at := time.Since(vm.started)
		close(vm.qemuExited)
		timer.Stop()
		stderr.Close()
		select {
		case <-read:
		case <-time.After(5 * time.Second):
			pr.Close() // something else holds the pipe open: stop reading
			<-read
		}
		pr.Close()
		console.Close()
		select {
		case <-qmpDone:
		case <-time.After(5 * time.Second):
		}
		if vm.tpm != nil {
			vm.tpmErr = vm.tpm.Stop()
		}
		vm.exited(werr, at)
		close(vm.done)
	}()
	return nil
}

// commandLine returns QEMU's argv for cfg.
func commandLine(cfg Config, vars, tpmCtrl, qmp string) ([]string, error) {
	netArgs, prefix, err := network(cfg)
	if err != nil {
		return nil, err
	}
	a := append(prefix, "qemu-system-x86_64",
		"-name", esc(cfg.Name),
		"-machine", "q35,smm=on",
		"-accel", "tcg",
		"-m", fmt.Sprint(cfg.Memory),
		"-global", "driver=cfi.pflash01,property=secure,value=on",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+esc(cfg.OVMFCode),
		"-drive", "if=pflash,format=raw,unit=1,file="+esc(vars),
	)
	if tpmCtrl != "" {
		a = append(a,
			"-chardev", "socket,id=chrtpm,path="+esc(tpmCtrl),
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
			"-device", "tpm-tis,tpmdev=tpm0")
	}
	if cfg.ESP != "" {
		a = append(a,
			"-drive", "if=none,id=esp,format=raw,readonly=on,file=fat:"+esc(cfg.ESP),
			"-device", "virtio-blk-pci,drive=esp,bootindex=0")
	}
	a = append(a, "-nic", "none")
	a = append(a, netArgs...)
	a = append(a,
		"-display", "none",
		"-monitor", "none",
		"-parallel", "none",
		"-serial", "stdio",
		"-qmp", "unix:"+esc(qmp)+",server=on,wait=off",
		"-no-reboot")
	return append(a, cfg.ExtraArgs...), nil
}

// NICModels are the QEMU network devices Config.Net's model option takes,
// the default first: virtio, and Intel NICs that physical servers carry
// (82574L, e1000e; 82576, igb, which needs QEMU 8.0 or later).
var NICModels = []string{"virtio-net-pci", "e1000e", "igb"}

// network returns QEMU's arguments for cfg.Net and a command prefix.
func network(cfg Config) (args, prefix []string, err error) {
	parts := strings.Split(cfg.Net, ",")
	kind, ifname, _ := strings.Cut(parts[0], ":")
	sum := sha256.Sum256([]byte(cfg.Name))
	mac := fmt.Sprintf("52:54:00:%02x:%02x:%02x", sum[0], sum[1], sum[2])
	var ns string
	model := NICModels[0]
	for _, o := range parts[1:] {
		k, v, _ := strings.Cut(o, "=")
		switch {
		case k == "mac" && v != "":
			mac = v
		case k == "ns" && v != "" && kind == "tap":
			ns = v
		case k == "model" && slices.Contains(NICModels, v):
			model = v
		case k == "model":
			return nil, nil, fmt.Errorf("config: Net %q: NIC model %q: want one of %s", cfg.Net, v, strings.Join(NICModels, ", "))
		default:
			return nil, nil, fmt.Errorf("config: Net %q: unknown option %q", cfg.Net, o)
		}
	}
	nic := []string{"-device", model + ",netdev=net0,romfile=,mac=" + mac}
	switch {
	case kind == "" || kind == "none":
		if len(parts) > 1 {
			return nil, nil, fmt.Errorf("config: Net %q: no options with none", cfg.Net)
		}
		return nil, nil, nil
	case kind == "user" && ifname == "":
		return append([]string{"-netdev", "user,id=net0"}, nic...), nil, nil
	case kind == "tap" && ifname != "":
		args = append([]string{"-netdev", "tap,id=net0,ifname=" + esc(ifname) + ",script=no,downscript=no"}, nic...)
		if ns != "" {
			prefix = []string{"ip", "netns", "exec", ns}
		}
		return args, prefix, nil
	}
	return nil, nil, fmt.Errorf("config: Net %q: want none, user or tap:IFNAME[,ns=NETNS], with [,mac=MAC][,model=MODEL]", cfg.Net)
}

// esc escapes a value for a QEMU option list (a comma is doubled).
func esc(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// copyFile copies src to dst (mode 0600), replacing dst.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// readConsole logs every console line and records the events among them.
func (vm *VM) readConsole(r io.Reader, log io.Writer) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			vm.line(strings.ReplaceAll(strings.TrimRight(string(b), "\r\n"), "\r", ""), log)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// line handles one console line.
func (vm *VM) line(s string, log io.Writer) {
	t := time.Since(vm.started)
	_, _ = io.WriteString(log, s+"\n")
	clean := stripEscapes(s)
	if vm.cfg.Console != nil && strings.TrimSpace(clean) != "" {
		_, _ = io.WriteString(vm.cfg.Console, vm.cfg.Name+": "+clean+"\n")
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if strings.TrimSpace(clean) != "" {
		vm.tail = append(vm.tail, fmt.Sprintf("[+%5.1fs] %s", t.Seconds(), clean))
		if len(vm.tail) > tailLines {
			vm.tail = vm.tail[len(vm.tail)-tailLines:]
		}
	}
	if e, ok := ParseEventLine(s); ok {
		e.Time = t
		vm.record(e)
	}
}

// record appends e to the events and wakes the waiters; vm.mu is held.
func (vm *VM) record(e Event) {
	vm.events = append(vm.events, e)
	close(vm.notify)
	vm.notify = make(chan struct{})
}

// watchQMP connects to QEMU's QMP socket and records why the guest shut
// down, so that a guest reset (which -no-reboot turns into an exit with
// status 0) is not taken for a power-off.
func (vm *VM) watchQMP(path string) {
	var conn net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("unix", path)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-vm.qemuExited:
			return
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return
		}
	}
	defer conn.Close()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		// The connection ends with QEMU; unblock the reader if it does not.
		select {
		case <-finished:
			return
		case <-vm.qemuExited:
		}
		select {
		case <-finished:
		case <-time.After(2 * time.Second):
			conn.Close()
		}
	}()
	if _, err := io.WriteString(conn, `{"execute":"qmp_capabilities"}`+"\n"); err != nil {
		return
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var msg struct {
			Event string `json:"event"`
			Data  struct {
				Reason string `json:"reason"`
			} `json:"data"`
		}
		if json.Unmarshal(sc.Bytes(), &msg) != nil {
			continue
		}
		vm.mu.Lock()
		switch msg.Event {
		case "SHUTDOWN":
			vm.shutdown = msg.Data.Reason
		case "GUEST_PANICKED":
			vm.panicked = true
		}
		vm.mu.Unlock()
	}
}

// kill kills QEMU, recording why, unless it already exited.
func (vm *VM) kill(reason string, err error) {
	vm.mu.Lock()
	if vm.killedAs == "" {
		vm.killedAs, vm.killErr = reason, err
	}
	vm.mu.Unlock()
	_ = vm.cmd.Process.Kill() // harmless once QEMU was reaped
}

// exited records the exit event and Wait's result after QEMU exited with
// werr at time at.
func (vm *VM) exited(werr error, at time.Duration) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	st := vm.cmd.ProcessState
	code, status := -1, "unknown"
	if st != nil {
		code, status = st.ExitCode(), st.String()
	} else if werr != nil {
		status = werr.Error()
	}
	signaled := st != nil && !st.Exited()
	reason := ExitPowerOff
	switch {
	case signaled && vm.killedAs != "":
		reason = vm.killedAs
	case werr != nil:
		reason = ExitError
	case vm.panicked:
		reason = ExitPanic
	case vm.shutdown == "guest-reset":
		reason = ExitReset
	}
	fields := map[string]any{"reason": reason, "status": status, "code": code}
	name := vm.cfg.Name
	switch reason {
	case ExitPowerOff:
		vm.exitErr = nil
	case ExitReset:
		vm.exitErr = fmt.Errorf("VM %s: the guest reset (a reboot, a kernel panic with panic=N, a triple fault); -no-reboot ended QEMU", name)
	case ExitPanic:
		vm.exitErr = fmt.Errorf("VM %s: the guest panicked", name)
	case ExitTimeout:
		vm.exitErr = fmt.Errorf("VM %s: killed when its timeout of %s elapsed", name, vm.cfg.Timeout)
	case ExitCanceled:
		vm.exitErr = fmt.Errorf("VM %s: killed: %w", name, vm.killErr)
	case ExitStopped:
		vm.exitErr = fmt.Errorf("VM %s: stopped", name)
	default:
		msg := strings.TrimSpace(vm.stderr.String())
		fields["stderr"] = msg
		if werr == nil {
			werr = errors.New(status)
		}
		vm.exitErr = fmt.Errorf("VM %s: qemu failed: %w\n%s", name, werr, msg)
	}
	vm.record(Event{Name: ExitEvent, Time: at, Fields: fields})
	vm.ended = true
}

// Events returns a channel of every event of the VM, from the first, ending
// with ExitEvent, after which it is closed. Every call returns the same
// channel; events wait for the reader (none is dropped) until Stop is
// called, which closes it. Events is independent of WaitFor. Receiving the
// exit event counts as waiting for the VM.
func (vm *VM) Events() <-chan Event {
	vm.eventsOnce.Do(func() {
		vm.eventsCh = make(chan Event)
		go vm.feed()
	})
	return vm.eventsCh
}

// feed sends the events to eventsCh.
func (vm *VM) feed() {
	defer close(vm.eventsCh)
	for i := 0; ; i++ {
		e, last, ok := vm.eventAt(i)
		if !ok {
			return
		}
		select {
		case vm.eventsCh <- e:
		case <-vm.stopped:
			return
		}
		if last {
			vm.waited.Store(true)
			return
		}
	}
}

// eventAt waits for event i; last reports whether it is the exit event. It
// returns false if Stop was called first.
func (vm *VM) eventAt(i int) (e Event, last, ok bool) {
	for {
		vm.mu.Lock()
		if i < len(vm.events) {
			e = vm.events[i]
			last = vm.ended && i == len(vm.events)-1
			vm.mu.Unlock()
			return e, last, true
		}
		ch := vm.notify
		vm.mu.Unlock()
		select {
		case <-ch:
		case <-vm.stopped:
			return Event{}, false, false
		}
	}
}

// WaitFor waits for the next event for which match returns true, and
// returns it. It looks at the events after the one the previous WaitFor
// returned (events in between are passed over, as in expect), the exit
// event included: so WaitFor can wait for the VM's end. It fails if QEMU
// exits first, or ctx is done; the error says which and holds the last
// console lines. A VM killed at its Config.Timeout fails as an exit.
func (vm *VM) WaitFor(ctx context.Context, match func(Event) bool) (Event, error) {
	vm.waited.Store(true)
	for {
		vm.mu.Lock()
		from, n := vm.cursor, len(vm.events)
		pending := vm.events[from:n:n] // recorded events are never changed
		exitErr, ended, ch := vm.exitErr, vm.ended, vm.notify
		vm.mu.Unlock()
		for i, e := range pending {
			if match(e) {
				vm.advance(from + i + 1)
				return e, nil
			}
		}
		vm.advance(n)
		if ended {
			if exitErr == nil {
				exitErr = fmt.Errorf("VM %s: the guest powered off", vm.cfg.Name)
			}
			return Event{}, vm.withTail(fmt.Errorf("no awaited event: %w", exitErr))
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Event{}, vm.withTail(fmt.Errorf("VM %s: waiting for an event: %w", vm.cfg.Name, ctx.Err()))
		}
	}
}

// advance moves WaitFor's position to i.
func (vm *VM) advance(i int) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.cursor = max(vm.cursor, i)
}

// withTail appends the console's last lines to err.
func (vm *VM) withTail(err error) error {
	vm.tailReported.Store(true)
	return fmt.Errorf("%w\nlast console lines (%s):\n%s", err, vm.console, vm.Tail())
}

// Tail returns the last 40 console lines, each prefixed with the time it was
// read since QEMU started, terminal escape sequences removed.
func (vm *VM) Tail() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return strings.Join(vm.tail, "\n")
}

// Wait waits until QEMU exits and swtpm is stopped. It returns nil when the
// guest powered off, and otherwise an error saying how the VM ended: a guest
// reset or panic, the timeout, ctx, Stop, or a QEMU failure with its stderr.
func (vm *VM) Wait() error {
	vm.waited.Store(true)
	<-vm.done
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.exitErr
}

// Stop kills QEMU and swtpm, if still running, and waits for them. It may be
// called more than once, and after Wait.
func (vm *VM) Stop() error {
	vm.kill(ExitStopped, nil)
	vm.stopOnce.Do(func() { close(vm.stopped) })
	select {
	case <-vm.done:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("stop VM %s: QEMU (pid %d) did not exit", vm.cfg.Name, vm.cmd.Process.Pid)
	}
	if vm.tpmErr != nil {
		return fmt.Errorf("stop VM %s: %w", vm.cfg.Name, vm.tpmErr)
	}
	return nil
}

// CommandLine returns QEMU's command line, shell-quoted, to reproduce a run.
// It needs the VM's swtpm on Dir/tpm/ctrl.sock (`swtpm socket --tpm2
// --tpmstate dir=DIR/tpm --ctrl type=unixio,path=DIR/tpm/ctrl.sock`) and a
// fresh copy of the vars file in Dir/OVMF_VARS.fd.
func (vm *VM) CommandLine() string {
	q := make([]string, len(vm.argv))
	for i, a := range vm.argv {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// shellQuote quotes s for a POSIX shell when needed.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ConsoleLog returns the path of the full console log (Dir/console.log):
// every line as the guest wrote it, carriage returns removed.
func (vm *VM) ConsoleLog() string { return vm.console }

// Boot starts a VM for a test and fails the test if it cannot. The VM is
// stopped when the test ends; the test fails if it never waited for the VM
// (with Wait, WaitFor, or by reading Events to the exit event). When the test
// failed, the QEMU command line and the console's last lines are logged.
func Boot(tb testing.TB, cfg Config) *VM {
	tb.Helper()
	vm, err := Start(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("boot: %v", err)
	}
	tb.Cleanup(func() {
		if !vm.waited.Load() {
			tb.Errorf("VM %s was started but never waited for: call Wait or WaitFor", vm.cfg.Name)
		}
		if err := vm.Stop(); err != nil {
			tb.Errorf("%v", err)
		}
		if !tb.Failed() {
			return
		}
		tb.Logf("VM %s: QEMU command line:\n%s", vm.cfg.Name, vm.CommandLine())
		if vm.tailReported.Load() {
			tb.Logf("VM %s: full console log: %s", vm.cfg.Name, vm.console)
		} else {
			tb.Logf("VM %s: last console lines (%s):\n%s", vm.cfg.Name, vm.console, vm.Tail())
		}
	})
	return vm
}

// tailWriter keeps the last 4 KiB written to it.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > 4096 {
		w.buf = w.buf[len(w.buf)-4096:]
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}

// stripEscapes removes terminal escape sequences (the firmware's cursor
// moves and colours) and other control characters but tabs from s.
func stripEscapes(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0x1b && i+1 < len(s) && s[i+1] == '[':
			// CSI: parameters and intermediates, then a final byte in @..~.
			i += 2
			for i < len(s) && (s[i] < 0x40 || s[i] > 0x7e) {
				i++
			}
		case c == 0x1b:
			i++ // a two-byte sequence
		case c < 0x20 && c != '\t' || c == 0x7f:
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
