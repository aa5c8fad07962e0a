package policy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/eventlogtest"
	"github.com/bootgate/bootgate/verifier/eventlog"
)

// The mutation suite adds to real logs a measurement that a rule must
// refuse, checks that the rule refuses it, then disguises the added event
// (every other event type, its data rewritten, its digests kept) and checks
// that every disguise still fails. The TPM's PCRs are those of the log with
// the measurement as it was made; the host sends the disguised log. Only the
// digests are proven by a quote, so a verdict that changes with a disguise is
// a verdict decided by unsigned fields.

// Event types, as numbers: every type the PFP defines, and a few it does not.
var disguiseTypes = []uint32{
	0x00000000, 0x00000001, 0x00000002, 0x00000003, 0x00000004, 0x00000005, 0x00000006,
	0x00000007, 0x00000008, 0x00000009, 0x0000000a, 0x0000000b, 0x0000000c, 0x0000000d,
	0x0000000e, 0x0000000f, 0x00000010, 0x00000011, 0x00000012, 0x00000013,
	0x80000001, 0x80000002, 0x80000003, 0x80000004, 0x80000005, 0x80000006, 0x80000007,
	0x80000008, 0x80000009, 0x8000000a, 0x8000000b, 0x8000000c, 0x80000010, 0x800000e0,
	0x800000e1, 0x800000e2, 0x10000000, 0xdeadbeef,
}

const (
	evSeparator  = 0x00000004
	evIPL        = 0x0000000d
	evEFIBootApp = 0x80000003
	evEFIAction  = 0x80000007
	evAuthority  = 0x800000e0
	evEventTag   = 0x00000006
)

// A measurement a policy must refuse.
type forbidden struct {
	name string
	rule string
	// allowed reports whether the learned policy allows it on purpose.
	allowed func(*Policy) bool
	event   func(l *eventlogtest.Log) eventlogtest.Event
	// covers lists data that a host could send instead, hoping to hide it.
	covers func(l *eventlogtest.Log) [][]byte
}

const debugger = "ro quiet kgdboc=ttyS0,115200 kgdbwait"

func forbiddenMeasurements(t testing.TB) []forbidden {
	untrusted := selfSigned(t, "Untrusted Boot Loader Signer")
	zero4 := []byte{0, 0, 0, 0}
	plain := func(extra ...[]byte) func(*eventlogtest.Log) [][]byte {
		return func(l *eventlogtest.Log) [][]byte {
			out := [][]byte{nil, zero4, []byte(eventlog.ActionCallingEFIApp), []byte("kernel_cmdline: ro quiet\x00"),
				eventlogtest.UTF16("ro quiet\x00"), eventlogtest.Authority(untrusted)}
			if i := l.Index(func(e eventlogtest.Event) bool { return e.Type == evEFIBootApp && e.PCR == 4 }); i >= 0 {
				out = append(out, l.Events[i].Data) // an allowed boot application's data
			}
			return append(out, extra...)
		}
	}
	return []forbidden{
		{
			name: "unknown boot application", rule: RuleBootApp,
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				data := []byte("an unapproved boot loader")
				if i := l.Index(func(e eventlogtest.Event) bool { return e.Type == evEFIBootApp && e.PCR == 4 }); i >= 0 {
					data = l.Events[i].Data
				}
				return l.Event(4, evEFIBootApp, data, []byte("an unapproved boot loader's Authenticode image"))
			},
			covers: plain(),
		},
		{
			name: "untrusted signer", rule: RuleSigner,
			allowed: func(p *Policy) bool { return p.CodeIntegrity.AllowAnySigner },
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				d := eventlogtest.Authority(untrusted)
				return l.Event(7, evAuthority, d, d)
			},
			covers: plain([]byte("\x00\x00\x00\x00\x00\x00\x00\x00")),
		},
		{
			name: "UEFI Debug Mode", rule: RuleDebugMode,
			allowed: func(p *Policy) bool { return p.Debug.AllowUEFIDebugMode },
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				return l.Event(7, evEFIAction, []byte(eventlog.ActionDebugMode), []byte(eventlog.ActionDebugMode))
			},
			covers: plain([]byte("UEFI Debug Mode Off"), []byte("Exit Boot Services Invocation")),
		},
		{
			name: "DMA Protection Disabled", rule: RuleDMAProtection,
			allowed: func(p *Policy) bool { return p.Debug.AllowDMAProtectionDisabled },
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				return l.Event(7, evEFIAction, []byte(eventlog.ActionDMADisabled), []byte(eventlog.ActionDMADisabled))
			},
			covers: plain([]byte("DMA Protection Enabled")),
		},
		{
			name: "debugger switch, GRUB", rule: RuleCmdline,
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				return l.Event(8, evIPL, []byte("kernel_cmdline: "+debugger+"\x00"), []byte(debugger))
			},
			covers: plain([]byte("xernel_cmdline: "+debugger+"\x00"), []byte("kernel_cmdline:"+debugger+"\x00"), []byte(debugger[:8])),
		},
		{
			name: "debugger switch, RHEL GRUB", rule: RuleCmdline,
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				return l.Event(8, evIPL, []byte("grub_kernel_cmdline "+debugger+"\x00"), []byte(debugger))
			},
			covers: plain([]byte("grub_kernel_cmdline_" + debugger + "\x00")),
		},
		{
			name: "debugger switch, GRUB linux command", rule: RuleCmdline,
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				return l.Event(8, evIPL, []byte("grub_cmd: linux /vmlinuz "+debugger+"\x00"), []byte("linux /vmlinuz "+debugger))
			},
			covers: plain(),
		},
		{
			name: "debugger switch, systemd-boot", rule: RuleCmdline,
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				text := eventlogtest.UTF16(debugger)
				return l.Event(8, evIPL, text, append(text, 0, 0))
			},
			covers: plain(eventlogtest.UTF16("ro quiet")),
		},
		{
			name: "debugger switch, systemd-stub", rule: RuleCmdline,
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				text := append(eventlogtest.UTF16(debugger), 0, 0)
				return l.Event(12, evIPL, text, text)
			},
			covers: plain(),
		},
		{
			name: "debugger switch behind a NUL, systemd-boot", rule: RuleCmdline,
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				text := eventlogtest.UTF16("ro\x00kgdbwait")
				return l.Event(8, evIPL, text, append(text, 0, 0))
			},
			covers: plain(),
		},
		{
			name: "debugger switch in quotes, GRUB", rule: RuleCmdline,
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				return l.Event(8, evIPL, []byte("kernel_cmdline: ro \"kgdboc=ttyS0\"\x00"), []byte("ro \"kgdboc=ttyS0\""))
			},
			covers: plain(),
		},
		{
			name: "event of no known kind in PCR 7", rule: RuleLogUnverifiable,
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				return l.Event(7, evAuthority, []byte("a certificate, it says"), []byte("something else was measured"))
			},
			covers: plain(),
		},
		{
			name: "event of no known kind in a command-line PCR", rule: RuleLogUnverifiable,
			event: func(l *eventlogtest.Log) eventlogtest.Event {
				return l.Event(8, evIPL, []byte("kernel_cmdline: ro quiet\x00"), []byte(debugger+" (the data says otherwise)"))
			},
			covers: plain(),
		},
	}
}

// mutationBases are real logs with the options their learning needs.
var mutationBases = []struct {
	path string
	opts LearnOptions
}{
	{"../../testdata/eventlogs/rhel8-uefi.bin", LearnOptions{}},
	{"../../testdata/eventlogs/ubuntu-2104-no-dbx.bin", LearnOptions{}},
	{"../../testdata/eventlogs/arch-linux-workstation.bin", LearnOptions{}},
	{"../../testdata/eventlogs/cos-125-intel-tdx-secure-boot.bin", LearnOptions{}},
	{"../../testdata/interop/lenovo-t14-amd-R1BET56W.bin", LearnOptions{}},
	{"../../testdata/interop/fwupd-v2-uefi-debug-mode.bin", LearnOptions{AllowDebug: true}},
}

type base struct {
	name string
	log  *eventlogtest.Log
	pol  *Policy
}

func loadBases(t testing.TB) []base {
	var out []base
	for _, b := range mutationBases {
		raw, err := os.ReadFile(b.path)
		if err != nil {
			t.Fatal(err)
		}
		l, err := eventlogtest.Parse(raw)
		if err != nil {
			t.Fatalf("%s: %v", b.path, err)
		}
		st, err := judge(raw, raw)
		if err != nil {
			t.Fatalf("%s: %v", b.path, err)
		}
		pol, _, err := Learn(b.path, st, b.opts)
		if err != nil {
			t.Fatalf("%s: %v", b.path, err)
		}
		if f := pol.Evaluate(st); len(f) > 0 {
			t.Fatalf("%s fails its own policy: %v", b.path, f)
		}
		out = append(out, base{b.path, l, pol})
	}
	return out
}

// judge replays booted (what the TPM measured) and verifies sent against
// those PCR values, as the appliance does with a quote.
func judge(booted, sent []byte) (*eventlog.BootState, error) {
	bank, err := eventlog.Replay(booted)
	if err != nil {
		return nil, err
	}
	return eventlog.Verify(sent, bank)
}

func TestMutationsFailEveryDisguise(t *testing.T) {
	bases := loadBases(t)
	var checked int
	for _, m := range forbiddenMeasurements(t) {
		t.Run(m.name, func(t *testing.T) {
			for _, b := range bases {
				if m.allowed != nil && m.allowed(b.pol) {
					continue
				}
				booted, at := b.log.Insert(m.event(b.log))
				raw := booted.Bytes()
				st, err := judge(raw, raw)
				if err != nil {
					t.Fatalf("%s: the measured log does not verify: %v", b.name, err)
				}
				if f := b.pol.Evaluate(st); !hasFailure(f, m.rule) {
					t.Fatalf("%s: %s passes rule %s: %v", b.name, m.name, m.rule, f)
				}
				for _, typ := range disguiseTypes {
					for _, data := range append(m.covers(b.log), booted.Events[at].Data) {
						sent := booted.Clone()
						sent.Events[at].Type, sent.Events[at].Data = typ, data
						checked++
						st, err := judge(raw, sent.Bytes())
						if err != nil {
							continue // refused outright
						}
						if f := b.pol.Evaluate(st); len(f) == 0 {
							t.Errorf("%s: %s sent as type 0x%08x with data %q passes", b.name, m.name, typ, data)
						}
					}
				}
			}
		})
	}
	t.Logf("%d disguised logs checked", checked)
}

// A learned policy checked against its own log with one event added that
// bootgate cannot explain fails, in each PCR that the policy judges.
func TestLearnedPolicyRefusesAnAddedUnverifiableEvent(t *testing.T) {
	for _, b := range loadBases(t) {
		for _, pcr := range []uint32{4, 7, 8, 12} {
			booted, _ := b.log.Insert(b.log.Event(pcr, evIPL, []byte("nothing to see"), []byte("an unknown measurement")))
			raw := booted.Bytes()
			st, err := judge(raw, raw)
			if err != nil {
				t.Fatalf("%s: %v", b.name, err)
			}
			if f := b.pol.Evaluate(st); len(f) == 0 {
				t.Errorf("%s: an unexplained event in PCR %d passes", b.name, pcr)
			}
		}
	}
}

// FuzzDisguise mutates the type and data of any events of a log that holds
// a measurement its policy refuses; whatever the host sends, it never passes.
func FuzzDisguise(f *testing.F) {
	bases := loadBases(f)
	ms := forbiddenMeasurements(f)
	f.Add(uint8(0), uint8(0), uint16(0), uint32(evEFIAction), []byte("x"), uint32(evIPL), []byte{})
	f.Add(uint8(1), uint8(4), uint16(3), uint32(evSeparator), []byte{0, 0, 0, 0}, uint32(evEventTag), []byte("y"))
	f.Fuzz(func(t *testing.T, bi, mi uint8, other uint16, typ uint32, data []byte, typ2 uint32, data2 []byte) {
		b := bases[int(bi)%len(bases)]
		m := ms[int(mi)%len(ms)]
		if m.allowed != nil && m.allowed(b.pol) {
			return
		}
		booted, at := b.log.Insert(m.event(b.log))
		raw := booted.Bytes()
		sent := booted.Clone()
		sent.Events[at].Type, sent.Events[at].Data = typ, data
		// Another event, disguised too.
		j := int(other) % len(sent.Events)
		sent.Events[j].Type, sent.Events[j].Data = typ2, data2
		st, err := judge(raw, sent.Bytes())
		if err != nil {
			return
		}
		if fs := b.pol.Evaluate(st); len(fs) == 0 {
			t.Fatalf("%s: %s disguised passes", b.name, m.name)
		}
	})
}

func hasFailure(fs []Failure, rule string) bool {
	for _, f := range fs {
		if f.Rule == rule {
			return true
		}
	}
	return false
}

func selfSigned(t testing.TB, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
