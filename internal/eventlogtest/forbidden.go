package eventlogtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"testing"
	"time"
)

// Event types, as numbers, that tests use.
const (
	EvNoAction   = 0x00000003
	EvSeparator  = 0x00000004
	EvEventTag   = 0x00000006
	EvIPL        = 0x0000000d
	EvEFIBootApp = 0x80000003
	EvEFIAction  = 0x80000007
	EvAuthority  = 0x800000e0
)

// DisguiseTypes are event types to send a measurement as: every type the
// PC Client PFP defines, and a few it does not.
var DisguiseTypes = []uint32{
	0x00000000, 0x00000001, 0x00000002, 0x00000003, 0x00000004, 0x00000005, 0x00000006,
	0x00000007, 0x00000008, 0x00000009, 0x0000000a, 0x0000000b, 0x0000000c, 0x0000000d,
	0x0000000e, 0x0000000f, 0x00000010, 0x00000011, 0x00000012, 0x00000013,
	0x80000001, 0x80000002, 0x80000003, 0x80000004, 0x80000005, 0x80000006, 0x80000007,
	0x80000008, 0x80000009, 0x8000000a, 0x8000000b, 0x8000000c, 0x80000010, 0x800000e0,
	0x800000e1, 0x800000e2, 0x10000000, 0xdeadbeef,
}

// Forbidden is a measurement that a policy learned from a good boot must
// refuse, named with the rule (policy.Rule*) that refuses it.
type Forbidden struct {
	Name  string
	Rule  string
	Event func(l *Log) Event
	// Covers is data a host could send instead, hoping to hide it.
	Covers func(l *Log) [][]byte
}

// Debugger is a kernel command line that enables a kernel debugger.
const Debugger = "ro quiet kgdboc=ttyS0,115200 kgdbwait"

// ForbiddenMeasurements is the catalog: untrusted is a DER certificate that
// no policy trusts.
func ForbiddenMeasurements(untrusted []byte) []Forbidden {
	zero4 := []byte{0, 0, 0, 0}
	firstBootApp := func(l *Log) []byte {
		if i := l.Index(func(e Event) bool { return e.Type == EvEFIBootApp && e.PCR == 4 }); i >= 0 {
			return l.Events[i].Data
		}
		return nil
	}
	plain := func(extra ...[]byte) func(*Log) [][]byte {
		return func(l *Log) [][]byte {
			out := [][]byte{nil, zero4, []byte("Calling EFI Application from Boot Option"), []byte("kernel_cmdline: ro quiet\x00"),
				UTF16("ro quiet\x00"), Authority(untrusted)}
			if d := firstBootApp(l); d != nil {
				out = append(out, d) // an allowed boot application's data
			}
			return append(out, extra...)
		}
	}
	grub := func(data, measured string) func(*Log) Event {
		return func(l *Log) Event { return l.Event(8, EvIPL, []byte(data), []byte(measured)) }
	}
	return []Forbidden{
		{
			Name: "unknown boot application", Rule: "code_integrity.boot_app",
			Event: func(l *Log) Event {
				data := firstBootApp(l)
				if data == nil {
					data = []byte("an unapproved boot loader")
				}
				return l.Event(4, EvEFIBootApp, data, []byte("an unapproved boot loader's Authenticode image"))
			},
			Covers: plain(),
		},
		{
			Name: "untrusted signer", Rule: "code_integrity.signer",
			Event: func(l *Log) Event {
				d := Authority(untrusted)
				return l.Event(7, EvAuthority, d, d)
			},
			Covers: plain([]byte("\x00\x00\x00\x00\x00\x00\x00\x00")),
		},
		{
			// shim's own authority event for a certificate no policy trusts;
			// sent with a byte more, the shim quirk explains its digest and
			// the certificate is still the untrusted one.
			Name: "untrusted signer, shim", Rule: "code_integrity.signer",
			Event: func(l *Log) Event {
				d := VariableData(ShimLock, "Shim", untrusted)
				return l.Event(7, EvAuthority, d, d)
			},
			Covers: func(l *Log) [][]byte {
				d := VariableData(ShimLock, "Shim", untrusted)
				return append(plain()(l), append(slices.Clone(d), 0), append(slices.Clone(d), 0xff))
			},
		},
		{
			Name: "UEFI Debug Mode", Rule: "debug.uefi_debug_mode",
			Event: func(l *Log) Event {
				return l.Event(7, EvEFIAction, []byte("UEFI Debug Mode"), []byte("UEFI Debug Mode"))
			},
			Covers: plain([]byte("UEFI Debug Mode Off"), []byte("Exit Boot Services Invocation")),
		},
		{
			Name: "DMA Protection Disabled", Rule: "debug.dma_protection",
			Event: func(l *Log) Event {
				return l.Event(7, EvEFIAction, []byte("DMA Protection Disabled"), []byte("DMA Protection Disabled"))
			},
			Covers: plain([]byte("DMA Protection Enabled")),
		},
		{
			Name: "debugger switch, GRUB", Rule: "debug.cmdline",
			Event:  grub("kernel_cmdline: "+Debugger+"\x00", Debugger),
			Covers: plain([]byte("xernel_cmdline: "+Debugger+"\x00"), []byte("kernel_cmdline:"+Debugger+"\x00"), []byte(Debugger[:8])),
		},
		{
			Name: "debugger switch, RHEL GRUB", Rule: "debug.cmdline",
			Event:  grub("grub_kernel_cmdline "+Debugger+"\x00", Debugger),
			Covers: plain([]byte("grub_kernel_cmdline_" + Debugger + "\x00")),
		},
		{
			Name: "debugger switch, GRUB linux command", Rule: "debug.cmdline",
			Event:  grub("grub_cmd: linux /vmlinuz "+Debugger+"\x00", "linux /vmlinuz "+Debugger),
			Covers: plain(),
		},
		{
			Name: "debugger switch in quotes, GRUB", Rule: "debug.cmdline",
			Event:  grub("kernel_cmdline: ro \"kgdboc=ttyS0\"\x00", "ro \"kgdboc=ttyS0\""),
			Covers: plain(),
		},
		{
			Name: "debugger switch, systemd-boot", Rule: "debug.cmdline",
			Event: func(l *Log) Event {
				text := UTF16(Debugger)
				return l.Event(8, EvIPL, text, append(text, 0, 0))
			},
			Covers: plain(UTF16("ro quiet")),
		},
		{
			// The kernel stops at a NUL; a loader does not measure one inside
			// the text. Such a text is no command line: unverifiable.
			Name: "debugger switch behind a NUL, systemd-boot", Rule: "log.unverifiable_events",
			Event: func(l *Log) Event {
				text := UTF16("ro\x00kgdbwait")
				return l.Event(8, EvIPL, text, append(text, 0, 0))
			},
			Covers: plain(),
		},
		{
			Name: "debugger switch, systemd-stub", Rule: "debug.cmdline",
			Event: func(l *Log) Event {
				text := append(UTF16(Debugger), 0, 0)
				return l.Event(12, EvIPL, text, text)
			},
			Covers: plain(),
		},
		{
			Name: "event of no known kind in PCR 7", Rule: "log.unverifiable_events",
			Event: func(l *Log) Event {
				return l.Event(7, EvAuthority, []byte("a certificate, it says"), []byte("something else was measured"))
			},
			Covers: plain(),
		},
		{
			Name: "event of no known kind in a command-line PCR", Rule: "log.unverifiable_events",
			Event:  grub("kernel_cmdline: ro quiet\x00", Debugger+" (the data says otherwise)"),
			Covers: plain(),
		},
	}
}

// SelfSigned makes a self-signed DER certificate named cn: a signer no
// policy trusts.
func SelfSigned(tb testing.TB, cn string) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}
