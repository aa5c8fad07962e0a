package eventlog

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bootgate/bootgate/internal/eventlogtest"
)

func readInterop(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile("../../testdata/interop/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// quirkEvents returns the events for which st used quirk q.
func quirkEvents(st *BootState, q string) []int {
	var out []int
	for _, u := range st.Quirks {
		if u.Quirk == q {
			out = append(out, u.Event)
		}
	}
	return out
}

// Every quirk names the real log that needs it, and that log uses it.
func TestEveryQuirkHasItsLog(t *testing.T) {
	for _, q := range Quirks {
		file, _, _ := strings.Cut(q.Seen, " ")
		raw, err := os.ReadFile("../../testdata/interop/" + file)
		if os.IsNotExist(err) {
			raw, err = os.ReadFile("../../testdata/eventlogs/" + file)
		}
		if err != nil {
			t.Fatalf("%s: %v", q.Name, err)
		}
		if st := offline(t, raw); len(quirkEvents(st, q.Name)) == 0 {
			t.Errorf("%s: %s does not use it (quirks %+v)", q.Name, file, st.Quirks)
		}
	}
}

// The ThinkPad's TPM 1.2 firmware measures the Secure Boot variables by
// their value only: the variables are read, named by their place, and the
// log has no anomaly and no false "never measured".
func TestQuirkVariableValueOnly(t *testing.T) {
	raw := readInterop(t, "sha1-goatt-linux_tpm12-lenovo-N1FET43W.bin")
	st := offline(t, raw)
	if got := quirkEvents(st, QuirkVariableValueOnly); !slices.Equal(got, []int{6, 7, 8, 9, 10}) {
		t.Fatalf("quirk used for events %v, want 6–10", got)
	}
	if len(st.Anomalies) > 0 || !st.SecureBoot.Measured || st.SecureBoot.Event != 6 || !st.PK.Present || !st.DB.Present || !st.DBX.Present {
		t.Fatalf("anomalies %v, secure boot %+v, PK %v db %v dbx %v", st.Anomalies, st.SecureBoot, st.PK.Present, st.DB.Present, st.DBX.Present)
	}

	// The digest does not cover the name; the place does. Two variables
	// with their names swapped (digests kept) are not explained.
	l, err := eventlogtest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	sb := l.Index(func(e eventlogtest.Event) bool { return e.PCR == 7 && e.Type == 0x80000001 })
	sent := l.Clone()
	value := func(i int) []byte { return sent.Events[i].Data[len(sent.Events[i].Data)-1:] }
	pk := sent.Events[sb+1].Data[32+2*2:]
	sent.Events[sb].Data = eventlogtest.VariableData(eventlogtest.EFIGlobalVariable, "PK", value(sb))
	sent.Events[sb+1].Data = eventlogtest.VariableData(eventlogtest.EFIGlobalVariable, "SecureBoot", pk)
	bank, err := Replay(raw)
	if err != nil {
		t.Fatal(err)
	}
	swapped, err := Verify(sent.Bytes(), bank)
	if err != nil {
		t.Fatal(err)
	}
	if got := quirkEvents(swapped, QuirkVariableValueOnly); slices.Contains(got, 6) || slices.Contains(got, 7) || len(swapped.Anomalies) < 2 || swapped.SecureBoot.Measured {
		t.Errorf("swapped names: quirk for %v, anomalies %v, secure boot %+v", got, swapped.Anomalies, swapped.SecureBoot)
	}
	// What they name is not said to be unmeasured: their events measured
	// something, which cannot be told.
	if sb := swapped.SecureBoot; !sb.Unverified || sb.Event != 7 || !swapped.PK.Unverified || swapped.PK.Event != 6 {
		t.Errorf("swapped names: secure boot %+v, PK event %d unverified %v", sb, swapped.PK.Event, swapped.PK.Unverified)
	}

	// Bytes after the value are not what was measured: not explained.
	padded := l.Clone()
	padded.Events[sb].Data = append(padded.Events[sb].Data, 0)
	st, err = Verify(padded.Bytes(), bank)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(quirkEvents(st, QuirkVariableValueOnly), 6) || len(st.Anomalies) == 0 {
		t.Errorf("value-only variable with a byte more: quirks %+v, anomalies %v", st.Quirks, st.Anomalies)
	}
}

// shim's authority events leave the last byte out of their digest: the
// certificate is read, and a change to any digested byte is not explained.
func TestQuirkShimAuthority(t *testing.T) {
	raw := readInterop(t, "fwupd-v2-uefi-debug-mode.bin")
	st := offline(t, raw)
	got := quirkEvents(st, QuirkShimAuthorityLastByte)
	if len(got) != 2 || len(st.Unverifiable) != 0 {
		t.Fatalf("quirk for events %v, unverifiable %+v", got, st.Unverifiable)
	}
	i := slices.IndexFunc(st.Authorities, func(a Authority) bool { return a.Event == got[0] })
	if i < 0 || st.Authorities[i].Variable != "Shim" || !strings.Contains(st.Authorities[i].Cert.Subject, "CN=") {
		t.Fatalf("authorities %+v", st.Authorities)
	}
	l, err := eventlogtest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	bank, err := Replay(raw)
	if err != nil {
		t.Fatal(err)
	}
	at := l.Index(func(e eventlogtest.Event) bool {
		return e.PCR == 7 && e.Type == 0x800000e0 && len(e.Data) > 16 && e.Data[0] == 0x50
	})
	for _, off := range []int{0, 40, len(l.Events[at].Data) - 2} { // GUID, certificate, last digested byte
		sent := l.Clone()
		sent.Events[at].Data[off] ^= 1
		st, err := Verify(sent.Bytes(), bank)
		if err != nil {
			t.Fatal(err)
		}
		if len(quirkEvents(st, QuirkShimAuthorityLastByte)) != 1 || len(st.Unverifiable) != 1 {
			t.Errorf("byte %d changed: quirks %+v, unverifiable %+v", off, st.Quirks, st.Unverifiable)
		}
	}
}

// Windows on a 2018 cloud vTPM: a separator in PCR 7 only. The quirk
// covers it; an event of PCRs 0–6 with a separator's digest, sent as
// another type, does not pass as this firmware's.
func TestQuirkSeparatorPCR7Only(t *testing.T) {
	raw := readInterop(t, "sha1-goatt-windows-gce-shielded-vm.bin")
	st := offline(t, raw)
	if len(st.Anomalies) != 0 || len(quirkEvents(st, QuirkSeparatorPCR7Only)) != 1 {
		t.Fatalf("anomalies %v, quirks %+v", st.Anomalies, st.Quirks)
	}
	l, err := eventlogtest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []uint32{eventlogtest.EvEFIAction, eventlogtest.EvEventTag, 0x80000006} {
		for _, sep := range [][]byte{{0, 0, 0, 0}, {1, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff}} {
			booted, at := l.Insert(l.Event(5, eventlogtest.EvSeparator, sep, sep))
			sent := booted.Clone()
			sent.Events[at].Type = typ
			bank, err := Replay(booted.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			st, err := Verify(sent.Bytes(), bank)
			if err != nil {
				continue
			}
			if len(quirkEvents(st, QuirkSeparatorPCR7Only)) != 0 || len(st.Anomalies) == 0 {
				t.Errorf("separator %x sent as 0x%08x: quirks %+v, anomalies %v", sep, typ, st.Quirks, st.Anomalies)
			}
		}
	}
}

// The command-line encodings are named in what extraction reads: GRUB's in
// the RHEL 8 log, systemd-boot's UTF-16 in the T14's.
func TestCmdlineEncodingsNamed(t *testing.T) {
	for _, tc := range []struct{ path, encoding string }{
		{"../../testdata/eventlogs/rhel8-uefi.bin", "grub"},
		{"../../testdata/interop/lenovo-t14-amd-R1BET56W.bin", "systemd-utf16"},
	} {
		raw, err := os.ReadFile(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		st := offline(t, raw)
		if len(st.Cmdlines) == 0 {
			t.Fatalf("%s: no command line read", tc.path)
		}
		for _, c := range st.Cmdlines {
			if c.Encoding != tc.encoding {
				t.Errorf("%s: event %d read as %q, want %q", tc.path, c.Event, c.Encoding, tc.encoding)
			}
		}
	}
}
