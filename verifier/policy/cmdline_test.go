package policy

import (
	"testing"

	"github.com/bootgate/bootgate/internal/eventlogtest"
)

// Kernel command lines that enable a kernel debugger as Linux parses them,
// measured as text by GRUB (PCR 8) or systemd-stub (PCR 12), honestly:
// the host sends the log exactly as measured. Each must fail debug.cmdline.
func TestDebuggerSpellingsTheKernelAccepts(t *testing.T) {
	l, pol := rhel8(t)
	grub := func(text string) eventlogtest.Event {
		return l.Event(8, eventlogtest.EvIPL, []byte("kernel_cmdline: "+text+"\x00"), []byte(text))
	}
	stub := func(text string) eventlogtest.Event {
		d := append(eventlogtest.UTF16(text), 0, 0)
		return l.Event(12, eventlogtest.EvIPL, d, d)
	}
	for _, tc := range []struct {
		name string
		ev   eventlogtest.Event
	}{
		// drivers/tty/serial/kgdboc.c: kgdboc is also a module parameter,
		// "kgdboc.kgdboc=..." on the kernel command line (param_set_kgdboc_var).
		{"module-param spelling, GRUB", grub("ro kgdboc.kgdboc=ttyS0,115200")},
		{"module-param spelling, systemd-stub", stub("ro kgdboc.kgdboc=ttyS0,115200")},
		// drivers/tty/serial/kgdboc.c: early_param("kgdboc_earlycon", ...), Linux 5.8+.
		{"kgdboc_earlycon, GRUB", grub("ro earlycon=uart8250,io,0x3f8 kgdboc_earlycon")},
		// lib/ctype.c: byte 0xA0 is a space to the kernel's isspace(), which
		// next_arg() splits parameters at.
		{"0xA0 separator, GRUB", grub("ro\xa0kgdboc=ttyS0 quiet")},
		{"UTF-8 a-grave (C3 A0) before the switch, GRUB", grub("ro \xc3\xa0kgdboc=ttyS0")},
		// The EFI stub converts UTF-16 load options to UTF-8: U+00E0 becomes C3 A0.
		{"U+00E0 before the switch, systemd-stub", stub("ro \u00e0kgdboc=ttyS0")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			booted, _ := l.Insert(tc.ev)
			b := booted.Bytes()
			st, err := judge(b, b)
			if err != nil {
				t.Fatal(err)
			}
			if f := pol.Evaluate(st); !hasFailure(f, RuleCmdline) {
				t.Errorf("a debugger switch passes debug.cmdline: %q (failures %v)", st.Cmdlines[len(st.Cmdlines)-1].Text, f)
			}
		})
	}
}
