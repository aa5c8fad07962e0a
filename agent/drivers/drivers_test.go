package drivers

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const release = "6.1.0-56-amd64"

// Modaliases of devices QEMU emulates and of real server NICs, as the kernel
// writes them (drivers/pci/pci-sysfs.c: vendor, device, subsystem vendor and
// device, base class, subclass, programming interface).
const (
	qemuE1000e  = "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00"
	qemuIGB     = "pci:v00008086d000010C9sv00008086sd00000000bc02sc00i00"
	qemuVirtio  = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
	virtioNet   = "virtio:d00000001v00001AF4"
	connectX5   = "pci:v000015B3d00001017sv000015B3sd00000008bc02sc00i00"
	mlx5Eth     = "auxiliary:mlx5_core.eth"
	x710        = "pci:v00008086d00001572sv00008086sd00000000bc02sc00i00"
	hostBridge  = "pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00"
	acpiButton  = "acpi:PNP0C0C:"
	unknownNICs = "pci:v00001234d00005678sv00000000sd00000000bc02sc00i00"
)

// fakeRoot lays out a root with depmod's files for the pinned kernel's NIC
// set (testdata) and a sysfs holding the given devices.
func fakeRoot(t testing.TB, devices ...string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "lib", "modules", release)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"modules.dep", "modules.alias"} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range devices {
		addDevice(t, root, i, d)
	}
	return root
}

// addDevice adds device number i to the fake sysfs, on the bus its modalias
// names.
func addDevice(t testing.TB, root string, i int, modalias string) {
	t.Helper()
	bus, _, _ := strings.Cut(modalias, ":")
	dir := filepath.Join(root, "sys", "bus", bus, "devices", fmt.Sprintf("%s%d", bus, i))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modalias"), []byte(modalias+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
}

// recorder is a DryRun that records the module files loaded, by name.
type recorder struct {
	mu    sync.Mutex
	order []string
	after func(name string) // called after a module "loads"
}

func (r *recorder) load(p string) {
	name := strings.TrimSuffix(filepath.Base(p), ".ko")
	r.mu.Lock()
	r.order = append(r.order, name)
	r.mu.Unlock()
	if r.after != nil {
		r.after(name)
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name    string
		devices []string
		// wantLoaded are the drivers matched, wantFiles every module file
		// loaded (dependencies included), and before pairs of files that
		// must load in that order.
		wantLoaded []string
		wantFiles  []string
		before     [][2]string
	}{
		{name: "QEMU e1000e", devices: []string{hostBridge, acpiButton, qemuE1000e},
			wantLoaded: []string{"e1000e"}, wantFiles: []string{"e1000e"}},
		{name: "QEMU igb with its dependencies first", devices: []string{qemuIGB},
			wantLoaded: []string{"igb"}, wantFiles: []string{"dca", "i2c-algo-bit", "igb"},
			before: [][2]string{{"dca", "igb"}, {"i2c-algo-bit", "igb"}}},
		{name: "virtio: the PCI transport, then the network device it adds", devices: []string{qemuVirtio},
			wantLoaded: []string{"virtio_pci", "virtio_net"},
			wantFiles:  []string{"failover", "net_failover", "virtio", "virtio_net", "virtio_pci", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_ring"},
			before:     [][2]string{{"virtio_ring", "virtio"}, {"virtio", "virtio_pci"}, {"virtio_pci", "virtio_net"}, {"failover", "net_failover"}, {"net_failover", "virtio_net"}}},
		{name: "ConnectX-5 and X710 side by side; mlx5's auxiliary device loads nothing twice", devices: []string{connectX5, mlx5Eth, x710},
			wantLoaded: []string{"i40e", "mlx5_core"}, wantFiles: []string{"i40e", "mlx5_core", "mlxfw", "pci-hyperv-intf", "psample"},
			before: [][2]string{{"mlxfw", "mlx5_core"}, {"psample", "mlx5_core"}, {"pci-hyperv-intf", "mlx5_core"}}},
		{name: "no NIC the agent has a driver for", devices: []string{hostBridge, acpiButton, unknownNICs}},
		{name: "no device at all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, tc.devices...)
			rec := &recorder{}
			rec.after = func(name string) {
				if name == "virtio_pci" { // as the kernel does when virtio_pci binds
					addDevice(t, root, 99, virtioNet)
				}
			}
			loaded, err := Load(Config{Root: root, Release: release, DryRun: rec.load}, discard())
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(loaded)
			want := slices.Clone(tc.wantLoaded)
			slices.Sort(want)
			if diff := cmp.Diff(want, loaded, cmpEmpty); diff != "" {
				t.Errorf("drivers loaded (-want +got):\n%s", diff)
			}
			files := slices.Clone(rec.order)
			slices.Sort(files)
			if diff := cmp.Diff(tc.wantFiles, files, cmpEmpty); diff != "" {
				t.Errorf("module files loaded (-want +got):\n%s", diff)
			}
			for _, b := range tc.before {
				if i, j := slices.Index(rec.order, b[0]), slices.Index(rec.order, b[1]); i < 0 || j < 0 || i > j {
					t.Errorf("%s must load before %s; order %v", b[0], b[1], rec.order)
				}
			}
		})
	}
}

var cmpEmpty = cmp.Comparer(func(a, b []string) bool { return slices.Equal(a, b) })

// A driver that fails to load does not keep the others from loading, and its
// error names it.
func TestLoadGoesOnPastAFailure(t *testing.T) {
	root := fakeRoot(t, qemuE1000e, qemuIGB)
	// igb's dependency dca is gone from modules.dep: the prober cannot
	// resolve it.
	dep := filepath.Join(root, "lib", "modules", release, "modules.dep")
	b, err := os.ReadFile(dep)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "kernel/drivers/dca/dca.ko:") {
			kept = append(kept, l)
		}
	}
	if err := os.WriteFile(dep, []byte(strings.Join(kept, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	loaded, err := Load(Config{Root: root, Release: release, DryRun: rec.load}, discard())
	if !slices.Equal(loaded, []string{"e1000e"}) {
		t.Errorf("loaded %v, want [e1000e]", loaded)
	}
	var le *LoadError
	if !errors.As(err, &le) || le.Module != "igb" || le.Modalias != qemuIGB {
		t.Fatalf("error %v, want a *LoadError for igb", err)
	}
	if slices.Contains(rec.order, "igb") {
		t.Errorf("igb loaded without its dependency dca: %v", rec.order)
	}
}

// Without readable depmod output nothing loads.
func TestLoadRefusesBadModuleFiles(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		want                string
	}{
		{name: "no modules.alias", file: "modules.alias", want: "modules.alias: no such file"},
		{name: "no modules.dep", file: "modules.dep", want: "modules.dep: no such file"},
		{name: "a line that is not an alias", file: "modules.alias", content: "alias pci:v00008086d000010D3* e1000e\noptions e1000e debug=1\n", want: "line 2"},
		{name: "a malformed pattern", file: "modules.alias", content: "alias pci:v[8086* e1000e\n", want: "line 1: pattern"},
		{name: "a modules.alias too long", file: "modules.alias", content: strings.Repeat("# padding\n", MaxAliasBytes/10+1), want: "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, qemuE1000e)
			p := filepath.Join(root, "lib", "modules", release, tc.file)
			var err error
			if tc.content == "" {
				err = os.Remove(p)
			} else {
				err = os.WriteFile(p, []byte(tc.content), 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{}
			loaded, err := Load(Config{Root: root, Release: release, DryRun: rec.load}, discard())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
			if len(loaded) != 0 || len(rec.order) != 0 {
				t.Errorf("loaded %v (files %v), want nothing", loaded, rec.order)
			}
		})
	}
}

// Every driver images/modules.txt names has aliases in the pinned kernel's
// depmod output, and each matches a real device of its kind.
func TestAliasesOfThePinnedKernel(t *testing.T) {
	f, err := os.Open("testdata/modules.alias")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, err := ReadAliases(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ modalias, want string }{
		{qemuE1000e, "e1000e"},
		{qemuIGB, "igb"},
		{"pci:v00008086d000010FBsv00008086sd00000003bc02sc00i00", "ixgbe"}, // 82599ES SFP+
		{x710, "i40e"},
		{"pci:v00008086d00001592sv00008086sd00000002bc02sc00i00", "ice"}, // E810-C QSFP
		{connectX5, "mlx5_core"},
		{"pci:v000014E4d000016D7sv000014E4sd00001402bc02sc00i00", "bnxt_en"}, // BCM57414
		{"pci:v000014E4d00001657sv0000103Csd000022BEbc02sc00i00", "tg3"},     // BCM5719
		{qemuVirtio, "virtio_pci"},
		{virtioNet, "virtio_net"},
	} {
		if got := a.Match(tc.modalias); !slices.Equal(got, []string{tc.want}) {
			t.Errorf("Match(%s) = %v, want [%s]", tc.modalias, got, tc.want)
		}
	}
	if got := a.Match(hostBridge); len(got) != 0 {
		t.Errorf("a host bridge matches %v", got)
	}
}

// testdata is depmod's output for the drivers images/modules.txt names: each
// of them is in its modules.dep and drives some device in its modules.alias.
// When the images are built, testdata is what images/kernel.sh wrote.
func TestTestdataIsTheImagesNICSet(t *testing.T) {
	list, err := os.ReadFile("../../images/modules.txt")
	if err != nil {
		t.Fatal(err)
	}
	dep, err := os.ReadFile("testdata/modules.dep")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("testdata/modules.alias")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	aliases, err := ReadAliases(f)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range strings.Split(string(list), "\n") {
		name = strings.TrimSpace(name)
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		n++
		if !strings.Contains(string(dep), "/"+name+".ko:") {
			t.Errorf("%s is not in testdata/modules.dep", name)
		}
		if !slices.ContainsFunc(aliases, func(a Alias) bool { return a.Module == name }) {
			t.Errorf("%s drives no device in testdata/modules.alias", name)
		}
	}
	if n == 0 {
		t.Fatal("images/modules.txt names no driver")
	}
	built, _ := filepath.Glob("../../build/kernel/modules/lib/modules/*")
	if len(built) != 1 {
		t.Skip("images not built: testdata not compared with images/kernel.sh's output")
	}
	for _, name := range []string{"modules.dep", "modules.alias"} {
		want, err := os.ReadFile(filepath.Join(built[0], name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("testdata/%s differs from %s: copy it again", name, filepath.Join(built[0], name))
		}
	}
}

// BenchmarkLoad is the agent's cost of choosing drivers on a large server: 256
// PCI functions (none of them a NIC the set drives but the last) against the
// pinned kernel's aliases, module loads left out (DryRun).
func BenchmarkLoad(b *testing.B) {
	devices := make([]string, 0, 256)
	for i := 0; i < 255; i++ {
		devices = append(devices, fmt.Sprintf("pci:v00008086d%08Xsv00008086sd00000000bc06sc04i00", 0x3000+i))
	}
	devices = append(devices, x710)
	root := fakeRoot(b, devices...)
	b.ResetTimer()
	for range b.N {
		if _, err := Load(Config{Root: root, Release: release, DryRun: func(string) {}}, discard()); err != nil {
			b.Fatal(err)
		}
	}
}

// Match follows the shell patterns kmod matches with fnmatch(3).
func TestMatch(t *testing.T) {
	a, err := ReadAliases(strings.NewReader(`# comment

alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v00008086d0000?0D3sv*sd*bc*sc*i* wild
alias pci:v0000[0-9]086d000010D3* range
alias pci:v00008086d000010D3sv*sd*bc02sc00i* e1000e
alias virtio:d00000001v* virtio_net
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		modalias string
		want     []string
	}{
		{qemuE1000e, []string{"e1000e", "wild", "range"}},
		{"pci:v00008086d000020D3sv00008086sd00000000bc02sc00i00", []string{"wild"}},
		{"pci:v00008086d000010D4sv00008086sd00000000bc02sc00i00", nil},
		{virtioNet, []string{"virtio_net"}},
		{"virtio:d00000002v00001AF4", nil},
		{"", nil},
	} {
		if got := a.Match(tc.modalias); !slices.Equal(got, tc.want) {
			t.Errorf("Match(%q) = %v, want %v", tc.modalias, got, tc.want)
		}
	}
}
