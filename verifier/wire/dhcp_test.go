package wire_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bootgate/bootgate/verifier/wire"
)

func TestVendorRoundTrip(t *testing.T) {
	fp := sha256.Sum256([]byte("appliance CA"))
	for _, tc := range []struct {
		name string
		v    wire.Vendor
	}{
		{"empty", wire.Vendor{}},
		{"endpoint", wire.Vendor{Endpoint: "https://10.24.0.1:8443"}},
		{"fingerprint", wire.Vendor{CAFingerprint: fp[:]}},
		{"both", wire.Vendor{Endpoint: "https://10.24.0.1:8443", CAFingerprint: fp[:]}},
		{"longest endpoint", wire.Vendor{Endpoint: "https://" + strings.Repeat("a", 247), CAFingerprint: fp[:]}},
		{"alternates", wire.Vendor{Endpoint: "https://10.24.0.1:8443", CAFingerprint: fp[:], Alternates: []string{"https://10.24.0.2:8443", "https://10.24.0.3:8443"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.v.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := wire.ParseVendor(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.v, got, cmp.Comparer(bytes.Equal)); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVendorMarshalRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    wire.Vendor
	}{
		{"endpoint too long", wire.Vendor{Endpoint: strings.Repeat("a", 256)}},
		{"short fingerprint", wire.Vendor{CAFingerprint: make([]byte, 31)}},
		{"empty alternate", wire.Vendor{Endpoint: "https://a", Alternates: []string{""}}},
		{"too many alternates", wire.Vendor{Endpoint: "https://a", Alternates: slices.Repeat([]string{"https://b"}, wire.MaxVendorAlternates+1)}},
		{"alternates past one option", wire.Vendor{Endpoint: "https://" + strings.Repeat("a", 200), Alternates: []string{"https://" + strings.Repeat("b", 60)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.v.Marshal(); !errors.Is(err, wire.ErrBadVendor) {
				t.Errorf("Marshal: %v, want ErrBadVendor", err)
			}
		})
	}
}

func TestParseVendor(t *testing.T) {
	fp := bytes.Repeat([]byte{0xab}, 32)
	for _, tc := range []struct {
		name string
		in   []byte
		want wire.Vendor
		bad  bool
	}{
		{"nothing", nil, wire.Vendor{}, false},
		{"unknown sub-option skipped", []byte{9, 2, 'x', 'y', 1, 1, 'h'}, wire.Vendor{Endpoint: "h"}, false},
		{"last wins", []byte{1, 1, 'a', 1, 1, 'b'}, wire.Vendor{Endpoint: "b"}, false},
		{"alternates add up", []byte{3, 1, 'x', 1, 1, 'a', 3, 0, 3, 1, 'y'}, wire.Vendor{Endpoint: "a", Alternates: []string{"x", "y"}}, false},
		{"alternates bounded", bytes.Repeat([]byte{3, 1, 'x'}, wire.MaxVendorAlternates+3), wire.Vendor{Alternates: slices.Repeat([]string{"x"}, wire.MaxVendorAlternates)}, false},
		{"truncated keeps the earlier", []byte{1, 1, 'a', 2, 32, 0}, wire.Vendor{Endpoint: "a"}, true},
		{"lone type byte", []byte{1}, wire.Vendor{}, true},
		{"short fingerprint left out", []byte{2, 3, 1, 2, 3, 1, 1, 'a'}, wire.Vendor{Endpoint: "a"}, true},
		{"fingerprint", append([]byte{2, 32}, fp...), wire.Vendor{CAFingerprint: fp}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wire.ParseVendor(tc.in)
			if bad := errors.Is(err, wire.ErrBadVendor); bad != tc.bad || (err != nil && !bad) {
				t.Errorf("error %v, want ErrBadVendor: %v", err, tc.bad)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(bytes.Equal)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParseVendor: garbled options never panic, allocate no more than they
// hold, and a clean parse survives a second encoding.
func FuzzParseVendor(f *testing.F) {
	good, _ := wire.Vendor{Endpoint: "https://10.24.0.1:8443", CAFingerprint: make([]byte, 32)}.Marshal()
	f.Add(good)
	f.Add([]byte{1})
	f.Add([]byte{2, 31})
	f.Add([]byte{1, 255, 'a'})
	f.Add([]byte{3, 1, 'x', 3, 1, 'y'})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := wire.ParseVendor(b)
		if err != nil && !errors.Is(err, wire.ErrBadVendor) {
			t.Fatalf("error %v does not wrap ErrBadVendor", err)
		}
		n := len(v.Endpoint) + len(v.CAFingerprint)
		for _, a := range v.Alternates {
			n += len(a)
		}
		if n > len(b) {
			t.Fatalf("parsed %d bytes out of %d", n, len(b))
		}
		// An option's data is at most 255 bytes; only such data need
		// survive a second encoding.
		if err != nil || len(b) > 255 {
			return
		}
		again, err := v.Marshal()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", v, err)
		}
		w, err := wire.ParseVendor(again)
		if err != nil || w.Endpoint != v.Endpoint || !bytes.Equal(w.CAFingerprint, v.CAFingerprint) || !slices.Equal(w.Alternates, v.Alternates) {
			t.Fatalf("re-parse: %+v, %v; want %+v", w, err, v)
		}
	})
}
