package attest_test

import (
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestQuoteBoundToLink: Verify accepts a quote only over
// wire.QualifyingData(nonce, MAC, IP) of the link the request names; a quote
// the TPM signed over other data (the bare nonce, another link) is a
// *LinkError, a quote whose bytes were changed stays an evidence failure.
func TestQuoteBoundToLink(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, "rhel8-uefi.bin")
	enr, ak, secret, act, nonce := activated(t, ca, tp)
	exp := attest.Expected{Secret: secret, Nonce: nonce, PCRs: server.DefaultPCRs, Unlogged: attest.DefaultUnlogged}
	vals, err := tp.PCRs(server.DefaultPCRs)
	if err != nil {
		t.Fatal(err)
	}
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	ip := netip.MustParseAddr("10.23.0.117")
	// quote is a request with the TPM's quote over data, naming the link
	// (mac, ip).
	quote := func(t *testing.T, data []byte, mac, ip string) *wire.QuoteRequest {
		t.Helper()
		q, sig, err := ak.Quote(data, server.DefaultPCRs)
		if err != nil {
			t.Fatal(err)
		}
		req := &wire.QuoteRequest{ActivationSecret: act, Quote: q, Signature: sig, EventLog: raw, MAC: mac, IP: ip}
		for _, i := range server.DefaultPCRs {
			req.PCRs = append(req.PCRs, wire.PCR{Index: i, Digest: vals[i]})
		}
		return req
	}
	qd := func(t *testing.T, nonce []byte, mac net.HardwareAddr, ip netip.Addr) []byte {
		t.Helper()
		b, err := wire.QualifyingData(nonce, mac, ip)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	otherNonce := slices.Clone(nonce)
	otherNonce[0] ^= 1

	cases := []struct {
		name string
		req  func(t *testing.T) *wire.QuoteRequest
		want error // nil, attest.ErrLinkMismatch, or an *attest.EvidenceError's check
	}{
		{"quote over nonce and link", func(t *testing.T) *wire.QuoteRequest {
			return quote(t, qd(t, nonce, mac, ip), mac.String(), ip.String())
		}, nil},
		{"MAC in another notation", func(t *testing.T) *wire.QuoteRequest {
			return quote(t, qd(t, nonce, mac, ip), "52-54-00-12-34-56", ip.String())
		}, nil},
		{"quote over the bare nonce", func(t *testing.T) *wire.QuoteRequest {
			return quote(t, nonce, mac.String(), ip.String())
		}, attest.ErrLinkMismatch},
		{"MAC changed after quoting", func(t *testing.T) *wire.QuoteRequest {
			return quote(t, qd(t, nonce, mac, ip), "52:54:00:12:34:57", ip.String())
		}, attest.ErrLinkMismatch},
		{"IP changed after quoting", func(t *testing.T) *wire.QuoteRequest {
			return quote(t, qd(t, nonce, mac, ip), mac.String(), "10.23.0.118")
		}, attest.ErrLinkMismatch},
		{"quote over another session's nonce", func(t *testing.T) *wire.QuoteRequest {
			return quote(t, qd(t, otherNonce, mac, ip), mac.String(), ip.String())
		}, attest.ErrLinkMismatch},
		{"no link named", func(t *testing.T) *wire.QuoteRequest {
			return quote(t, qd(t, nonce, mac, ip), "", "")
		}, attest.ErrLinkMismatch},
		{"8-byte MAC", func(t *testing.T) *wire.QuoteRequest {
			return quote(t, qd(t, nonce, mac, ip), "52:54:00:12:34:56:00:00", ip.String())
		}, attest.ErrLinkMismatch},
		{"IPv4-mapped IPv6 address", func(t *testing.T) *wire.QuoteRequest {
			return quote(t, qd(t, nonce, mac, ip), mac.String(), "::ffff:10.23.0.117")
		}, attest.ErrLinkMismatch},
		{"quote bytes changed", func(t *testing.T) *wire.QuoteRequest {
			r := quote(t, qd(t, nonce, mac, ip), mac.String(), ip.String())
			r.Quote[len(r.Quote)-1] ^= 1
			return r
		}, errors.New(attest.CheckQuote)},
		{"quote over the bare nonce, bytes changed", func(t *testing.T) *wire.QuoteRequest {
			r := quote(t, nonce, mac.String(), ip.String())
			r.Signature[len(r.Signature)-1] ^= 1
			return r
		}, errors.New(attest.CheckQuote)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := enr.Verify(exp, c.req(t), attest.DirectLogs)
			var evErr *attest.EvidenceError
			var linkErr *attest.LinkError
			switch {
			case c.want == nil:
				if err != nil || v == nil || v.HostID != enr.HostID {
					t.Fatalf("Verify = %+v, %v; want the verified state of host %s", v, err, enr.HostID)
				}
			case errors.Is(c.want, attest.ErrLinkMismatch):
				if !errors.Is(err, attest.ErrLinkMismatch) || !errors.As(err, &linkErr) || v != nil {
					t.Fatalf("Verify = %+v, %v; want a *LinkError", v, err)
				}
			default:
				if !errors.As(err, &evErr) || evErr.Check != c.want.Error() || errors.Is(err, attest.ErrLinkMismatch) || v != nil {
					t.Fatalf("Verify = %+v, %v; want an evidence failure %s", v, err, c.want)
				}
			}
		})
	}
}

// TestQualifyingData pins the format: SHA-256 over nonce, the 6 MAC bytes
// and the 4 IPv4 bytes, and refuses what is not a MAC and an IPv4 address.
func TestQualifyingData(t *testing.T) {
	nonce := []byte("0123456789abcdef0123456789abcdef")
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	got, err := wire.QualifyingData(nonce, mac, netip.MustParseAddr("10.23.0.117"))
	if err != nil {
		t.Fatal(err)
	}
	// printf '0123456789abcdef0123456789abcdef\x52\x54\x00\x12\x34\x56\x0a\x17\x00\x75' | sha256sum
	const want = "38c95842953e37bba975e290cc1ecceeff9be2dddfa51b34f97f3dccfdf44a99"
	if hex.EncodeToString(got) != want {
		t.Errorf("QualifyingData = %x, want %s", got, want)
	}
	for _, c := range []struct {
		name string
		mac  net.HardwareAddr
		ip   netip.Addr
	}{
		{"no MAC", nil, netip.MustParseAddr("10.23.0.117")},
		{"8-byte MAC", append(slices.Clone(mac), 0, 0), netip.MustParseAddr("10.23.0.117")},
		{"IPv6", mac, netip.MustParseAddr("fe80::1")},
		{"no address", mac, netip.Addr{}},
	} {
		if _, err := wire.QualifyingData(nonce, c.mac, c.ip); !errors.Is(err, wire.ErrBadLink) {
			t.Errorf("%s: QualifyingData error %v, want ErrBadLink", c.name, err)
		}
	}
}
