package policy

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

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

// allowedOnPurpose reports, per rule, whether a learned policy allows the
// forbidden measurement on purpose (learned with an option that says so).
var allowedOnPurpose = map[string]func(*Policy) bool{
	RuleSigner:        func(p *Policy) bool { return p.CodeIntegrity.AllowAnySigner },
	RuleDebugMode:     func(p *Policy) bool { return p.Debug.AllowUEFIDebugMode },
	RuleDMAProtection: func(p *Policy) bool { return p.Debug.AllowDMAProtectionDisabled },
}

func forbiddenMeasurements(t testing.TB) []eventlogtest.Forbidden {
	return eventlogtest.ForbiddenMeasurements(eventlogtest.SelfSigned(t, "Untrusted Boot Loader Signer"))
}

func allowed(m eventlogtest.Forbidden, p *Policy) bool {
	f := allowedOnPurpose[m.Rule]
	return f != nil && f(p)
}

// mutationBases are real logs with the options their learning needs.
var mutationBases = []struct {
	path string
	opts LearnOptions
}{
	{"../../testdata/eventlogs/rhel8-uefi.bin", LearnOptions{}},
	{"../../testdata/eventlogs/ubuntu-2104-no-dbx.bin", LearnOptions{AllowSecureBootOff: true, AllowEmptyKeys: true}},
	{"../../testdata/eventlogs/arch-linux-workstation.bin", LearnOptions{AllowSecureBootOff: true}},
	{"../../testdata/eventlogs/cos-125-intel-tdx-secure-boot.bin", LearnOptions{}},
	{"../../testdata/interop/lenovo-t14-amd-R1BET56W.bin", LearnOptions{AllowSecureBootOff: true}},
	{"../../testdata/interop/fwupd-v2-uefi-debug-mode.bin", LearnOptions{AllowDebug: true}},
	// SHA-1 logs, with the firmware quirks they need.
	{"../../testdata/interop/sha1-goatt-linux_tpm12-lenovo-N1FET43W.bin", LearnOptions{AllowSHA1: true, AllowSecureBootOff: true}},
	{"../../testdata/interop/sha1-goatt-windows-gce-shielded-vm.bin", LearnOptions{AllowSHA1: true}},
	{"../../testdata/eventlogs/debian-10.bin", LearnOptions{AllowSHA1: true}},
}

type base struct {
	name string
	log  *eventlogtest.Log
	pol  *Policy
	// quirky is pol accepting every firmware quirk: a quirk must not let a
	// disguise pass either.
	quirky *Policy
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
		q := *pol
		q.Log.Quirks = nil
		for _, x := range eventlog.Quirks {
			q.Log.Quirks = append(q.Log.Quirks, x.Name)
		}
		src, err := q.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		quirky, err := Parse(src)
		if err != nil {
			t.Fatalf("%s with every quirk: %v", b.path, err)
		}
		out = append(out, base{b.path, l, pol, quirky})
	}
	return out
}

// rhel8 returns the RHEL 8 log of testdata for editing, and the policy
// learned from it.
func rhel8(t *testing.T) (*eventlogtest.Log, *Policy) {
	t.Helper()
	raw, err := os.ReadFile("../../testdata/eventlogs/rhel8-uefi.bin")
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlogtest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := judge(raw, raw)
	if err != nil {
		t.Fatal(err)
	}
	pol, _, err := Learn("rhel8", st, LearnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l, pol
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

// quirkTypes are the event types that firmware quirks (eventlog.Quirks)
// concern: EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_BOOT and
// EV_EFI_VARIABLE_AUTHORITY.
var quirkTypes = []uint32{0x80000001, 0x80000002, 0x800000e0}

func TestMutationsFailEveryDisguise(t *testing.T) {
	bases := loadBases(t)
	var checked int
	for _, m := range forbiddenMeasurements(t) {
		t.Run(m.Name, func(t *testing.T) {
			for _, b := range bases {
				if allowed(m, b.pol) {
					continue
				}
				booted, at := b.log.Insert(m.Event(b.log))
				raw := booted.Bytes()
				st, err := judge(raw, raw)
				if err != nil {
					t.Fatalf("%s: the measured log does not verify: %v", b.name, err)
				}
				if f := b.pol.Evaluate(st); !hasFailure(f, m.Rule) {
					t.Fatalf("%s: %s passes rule %s: %v", b.name, m.Name, m.Rule, f)
				}
				covers := append(m.Covers(b.log), booted.Events[at].Data)
				plain := len(covers)
				covers = append(covers, eventlogtest.QuirkEncodings(booted.Events[at].Data)...)
				for _, typ := range eventlogtest.DisguiseTypes {
					for i, data := range covers {
						// The quirks concern variable and authority events:
						// their encodings are tried as those types.
						if i >= plain && !slices.Contains(quirkTypes, typ) {
							continue
						}
						sent := booted.Clone()
						sent.Events[at].Type, sent.Events[at].Data = typ, data
						checked++
						st, err := judge(raw, sent.Bytes())
						if err != nil {
							continue // refused outright
						}
						if f := b.pol.Evaluate(st); len(f) == 0 {
							t.Errorf("%s: %s sent as type 0x%08x with data %q passes", b.name, m.Name, typ, data)
						}
						if f := b.quirky.Evaluate(st); len(f) == 0 {
							t.Errorf("%s: %s sent as type 0x%08x with data %q passes a policy that accepts every quirk", b.name, m.Name, typ, data)
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
			booted, _ := b.log.Insert(b.log.Event(pcr, eventlogtest.EvIPL, []byte("nothing to see"), []byte("an unknown measurement")))
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
	f.Add(uint8(0), uint8(0), uint16(0), uint32(eventlogtest.EvEFIAction), []byte("x"), uint32(eventlogtest.EvIPL), []byte{})
	f.Add(uint8(1), uint8(4), uint16(3), uint32(eventlogtest.EvSeparator), []byte{0, 0, 0, 0}, uint32(eventlogtest.EvEventTag), []byte("y"))
	f.Fuzz(func(t *testing.T, bi, mi uint8, other uint16, typ uint32, data []byte, typ2 uint32, data2 []byte) {
		b := bases[int(bi)%len(bases)]
		m := ms[int(mi)%len(ms)]
		if allowed(m, b.pol) {
			return
		}
		booted, at := b.log.Insert(m.Event(b.log))
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
			t.Fatalf("%s: %s disguised passes", b.name, m.Name)
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

// A pin may name its event type in hex; it matches the event all the same.
func TestPinByHexType(t *testing.T) {
	l, pol := rhel8(t)
	booted, _ := l.Insert(l.Event(7, eventlogtest.EvAuthority, []byte("not what was measured"), []byte("an unexplained PCR 7 measurement")))
	raw := booted.Bytes()
	st, err := judge(raw, raw)
	if err != nil || len(st.Unverifiable) != 1 {
		t.Fatalf("%v %+v", err, st.Unverifiable)
	}
	pin := fmt.Sprintf("log:\n  pinned_events:\n    - {pcr: 7, type: \"0x800000e0\", digest: %s}\n", st.Unverifiable[0].Digest)
	src := strings.Replace(string(pol.Source()), "log: {}\n", pin, 1)
	if src == string(pol.Source()) {
		t.Fatalf("no empty log section to pin in:\n%s", src)
	}
	pinned, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if f := pinned.Evaluate(st); len(f) != 0 {
		t.Fatalf("the hex pin does not match: %v", f)
	}
}
