package eventlog

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// realLogs returns every recorded firmware log in the repository's testdata.
func realLogs(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob("../../testdata/eventlogs/*.bin")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no event logs in testdata: %v", err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

// TestRealLogs checks that every recorded log parses, replays against the
// values it implies, and yields a state without structural anomalies.
func TestRealLogs(t *testing.T) {
	for name, raw := range realLogs(t) {
		t.Run(name, func(t *testing.T) {
			bank, err := Replay(raw)
			if err != nil {
				t.Fatalf("replay: %v", err)
			}
			st, err := Verify(raw, bank)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if st.Events == 0 || len(st.PCRs) == 0 {
				t.Errorf("empty state: %+v", st)
			}
			partial := name == "host-gmes.bin" // only the first events of a boot
			if len(st.Anomalies) > 0 != partial {
				t.Errorf("anomalies: %v", st.Anomalies)
			}
		})
	}
}

func TestExtractedState(t *testing.T) {
	logs := realLogs(t)
	for _, tc := range []struct {
		log          string
		secureBoot   bool
		bootApps     int
		dbAuthority  bool
		dbxHashes    int
		dmaDisabled  bool
		firstAppPath string
	}{
		{"rhel8-uefi.bin", true, 3, true, 183, false, `EFI\redhat\shimx64.efi`},
		{"ubuntu-2104-no-secure-boot.bin", false, 2, false, 183, false, `EFI\ubuntu\shimx64.efi`},
		{"ubuntu-2104-no-dbx.bin", false, 2, false, 0, false, `EFI\ubuntu\shimx64.efi`},
		{"gdc-host.bin", false, 3, false, 459, true, ""},
		{"cos-101-amd-sev.bin", true, 4, true, 0, false, `EFI\BOOT\BOOTX64.EFI`},
	} {
		t.Run(tc.log, func(t *testing.T) {
			raw := logs[tc.log]
			st := offline(t, raw)
			if !st.SecureBoot.Measured || st.SecureBoot.Enabled != tc.secureBoot || st.SecureBoot.Event == 0 {
				t.Errorf("secure boot = %+v, want enabled=%v with its event", st.SecureBoot, tc.secureBoot)
			}
			if len(st.BootApps) != tc.bootApps {
				t.Errorf("boot apps = %d, want %d", len(st.BootApps), tc.bootApps)
			}
			hasDB := false
			for _, a := range st.Authorities {
				hasDB = hasDB || a.Variable == "db"
			}
			if hasDB != tc.dbAuthority {
				t.Errorf("db authority = %v, want %v (%v)", hasDB, tc.dbAuthority, st.Authorities)
			}
			if len(st.DBX.Hashes) != tc.dbxHashes {
				t.Errorf("dbx hashes = %d, want %d", len(st.DBX.Hashes), tc.dbxHashes)
			}
			dma := false
			for _, a := range st.Actions {
				dma = dma || a.Text == ActionDMADisabled
			}
			if dma != tc.dmaDisabled {
				t.Errorf("DMA protection disabled = %v, want %v", dma, tc.dmaDisabled)
			}
			if tc.firstAppPath != "" && st.BootApps[0].Path != tc.firstAppPath {
				t.Errorf("first boot app path = %q, want %q", st.BootApps[0].Path, tc.firstAppPath)
			}
			if !st.PK.Present || len(st.PK.Certs) == 0 || st.PK.Event == 0 {
				t.Errorf("PK = %+v", st.PK)
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	raw := realLogs(t)["rhel8-uefi.bin"]
	bank, err := Replay(raw)
	if err != nil {
		t.Fatal(err)
	}
	other := realLogs(t)["ubuntu-2104-no-secure-boot.bin"]
	flipped := Bank{Hash: bank.Hash, PCRs: map[int][]byte{}}
	for i, v := range bank.PCRs {
		flipped.PCRs[i] = v
	}
	flipped.PCRs[4] = make([]byte, 32)
	for _, tc := range []struct {
		name    string
		raw     []byte
		bank    Bank
		replay  bool // a ReplayError, else ErrMalformed or another error
		malform bool
	}{
		{"empty", nil, bank, false, true},
		{"garbage", []byte("not an event log at all, just some text"), bank, false, true},
		{"truncated", raw[:len(raw)/2], bank, false, true},
		{"oversized", make([]byte, MaxLogBytes+1), bank, false, true},
		{"another machine's log", other, bank, true, false},
		{"a PCR that does not replay", raw, flipped, true, false},
		{"wrong digest size", raw, Bank{Hash: bank.Hash, PCRs: map[int][]byte{0: {1, 2, 3}}}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Verify(tc.raw, tc.bank)
			if err == nil || st != nil {
				t.Fatalf("accepted: %v", st)
			}
			var re *ReplayError
			if tc.replay != errors.As(err, &re) {
				t.Errorf("replay error = %v, want %v: %v", !tc.replay, tc.replay, err)
			}
			if tc.malform != errors.Is(err, ErrMalformed) {
				t.Errorf("ErrMalformed = %v, want %v: %v", !tc.malform, tc.malform, err)
			}
		})
	}
}

// FuzzVerify feeds arbitrary bytes, seeded with real logs, through the parser,
// replay and extraction: they must never panic.
func FuzzVerify(f *testing.F) {
	// Go's fuzzing engine stalls on a corpus of whole 20-45 KB logs; the first
	// kilobytes hold the spec ID event and the Secure Boot variables, which is
	// where the structure is.
	for _, raw := range realLogs(f) {
		f.Add(raw[:min(len(raw), 4096)])
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		bank, err := Replay(raw)
		if err != nil {
			return
		}
		_, _ = Verify(raw, bank)
	})
}

// systemd-boot measures the load options as UTF-16 with the digest over the
// text and its terminator: the text is what was measured, and is read.
func TestSystemdBootCommandLine(t *testing.T) {
	for _, tc := range []struct{ log, contains string }{
		{"../../testdata/eventlogs/arch-linux-workstation.bin", "root=/dev/mapper/cryptroot"},
		{"../../testdata/interop/lenovo-t14-amd-R1BET56W.bin", "initrd="},
		{"../../testdata/interop/t14-systemd-cmdline-kgdboc.bin", "kgdboc=ttyS0,115200 kgdbwait"},
	} {
		t.Run(filepath.Base(tc.log), func(t *testing.T) {
			raw, err := os.ReadFile(tc.log)
			if err != nil {
				t.Fatal(err)
			}
			st := offline(t, raw)
			if len(st.Unverifiable) != 0 || !slices.ContainsFunc(st.Cmdlines, func(c Cmdline) bool { return c.PCR == 8 && strings.Contains(c.Text, tc.contains) }) {
				t.Fatalf("cmdlines %+v, unverifiable %v", st.Cmdlines, st.Unverifiable)
			}
		})
	}
}

func TestKernelCommandLines(t *testing.T) {
	logs := realLogs(t)
	for _, tc := range []struct{ log, contains string }{
		{"rhel8-uefi.bin", "root=UUID=f3948fb4"},
		{"ubuntu-2104-no-secure-boot.bin", "root=PARTUUID=6443a6ae"},
		{"cos-101-amd-sev.bin", "init=/usr/lib/systemd/systemd"},
	} {
		t.Run(tc.log, func(t *testing.T) {
			st := offline(t, logs[tc.log])
			found := false
			for _, c := range st.Cmdlines {
				found = found || strings.Contains(c.Text, tc.contains)
			}
			if !found || len(st.Anomalies) > 0 {
				t.Fatalf("no command line with %q: %+v (anomalies %v)", tc.contains, st.Cmdlines, st.Anomalies)
			}
		})
	}
}

// TestMutatedLogs runs a fixed, seeded set of corruptions of every recorded
// log (byte flips, truncations, inserted and deleted runs) through replay,
// verification and extraction: each must end in a state or an error, never a
// panic. It is the deterministic companion of FuzzVerify for CI.
func TestMutatedLogs(t *testing.T) {
	r := rand.New(rand.NewPCG(2026, 11))
	n := 0
	for name, raw := range realLogs(t) {
		for i := 0; i < 150; i++ {
			b := bytes.Clone(raw)
			switch i % 4 {
			case 0:
				for k := 0; k < 1+r.IntN(8); k++ {
					b[r.IntN(len(b))] = byte(r.IntN(256))
				}
			case 1:
				b = b[:r.IntN(len(b))]
			case 2:
				at := r.IntN(len(b))
				ins := make([]byte, 1+r.IntN(64))
				for j := range ins {
					ins[j] = byte(r.IntN(256))
				}
				b = append(b[:at:at], append(ins, raw[at:]...)...)
			case 3:
				at := r.IntN(len(b))
				b = append(b[:at:at], raw[min(len(raw), at+1+r.IntN(64)):]...)
			}
			bank, err := Replay(b)
			if err != nil {
				continue
			}
			n++
			if _, err := Verify(b, bank); err != nil && !errors.Is(err, ErrMalformed) {
				var ue *UnexplainedError
				if !errors.As(err, &ue) {
					t.Errorf("%s mutation %d: self-replayed log fails with %v", name, i, err)
				}
			}
		}
	}
	t.Logf("%d mutated logs parsed and were verified", n)
}

func TestDiff(t *testing.T) {
	logs := realLogs(t)
	a, b := offline(t, logs["rhel8-uefi.bin"]), offline(t, logs["ubuntu-2104-no-secure-boot.bin"])
	if d := Diff(a, a); len(d) != 0 {
		t.Fatalf("a log differs from itself: %v", d)
	}
	d := strings.Join(Diff(a, b), "\n")
	for _, want := range []string{"Secure Boot: on → off", "boot applications: added", "PCR 7:"} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
	// The same log as quoted, with PCRs no event extends (IMA's PCR 10, a
	// zero PCR 12), is no different from the log replayed offline.
	bank, err := Replay(logs["rhel8-uefi.bin"])
	if err != nil {
		t.Fatal(err)
	}
	bank.PCRs[10], bank.PCRs[12] = bytes.Repeat([]byte{7}, 32), make([]byte, 32)
	bank.Unlogged = []int{10, 12}
	quoted, err := Verify(logs["rhel8-uefi.bin"], bank)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(a, quoted); len(d) != 0 {
		t.Errorf("unlogged PCRs shown as differences: %v", d)
	}
}

// offline replays raw against itself and returns its boot state.
func offline(t *testing.T, raw []byte) *BootState {
	t.Helper()
	bank, err := Replay(raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Verify(raw, bank)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestSCRTMVersionShown: an S-CRTM version is shown as text when it is
// text, as a GUID when it is 16 bytes of anything else (as the NUC log's
// is), and as bounded hex otherwise; never as escaped binary.
func TestSCRTMVersionShown(t *testing.T) {
	guid := []byte{0x1e, 0xfb, 0x6b, 0x54, 0x0c, 0x1d, 0x55, 0x40, 0xa4, 0xad, 0x4e, 0xf4, 0xbf, 0x17, 0xb8, 0x3a}
	for _, c := range []struct {
		data []byte
		want string
	}{
		{[]byte("N\x002\x002\x00E\x00T\x006\x008\x00W\x00 \x00\x00\x00"), "N22ET68W "},
		{[]byte("1.0\x00"), "1.0"},
		{guid, "GUID 546bfb1e-1d0c-4055-a4ad-4ef4bf17b83a"},
		{[]byte{0xff, 0x01}, "0xff01"},
		{bytes.Repeat([]byte{0xfe}, 100), "0x" + strings.Repeat("fe", 32) + "… (100 bytes)"},
	} {
		if got := scrtmVersion(c.data); got != c.want {
			t.Errorf("scrtmVersion(%x) = %q, want %q", c.data, got, c.want)
		}
	}
}
