package server

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/wire"
)

// testEnrollment enrolls a simulated TPM's EK and AK.
func testEnrollment(t *testing.T) *attest.Enrollment {
	t.Helper()
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	eks, err := tp.EKs()
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.NewAK(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ak.Close() })
	enr, err := ca.Roots().Enroll(&wire.EnrollRequest{EKCert: eks[0].Cert, EKPublic: eks[0].Public, AK: ak.Params()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return enr
}

func TestSessionTokens(t *testing.T) {
	enr := testEnrollment(t)
	now := time.Now()
	key := bytes.Repeat([]byte{1}, SessionKeySize)
	sealer, err := newSessionSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	in := &session{
		enrollment: enr,
		expected:   attest.Expected{Secret: []byte("secret"), Nonce: []byte("nonce"), PCRs: []int{0, 7}, Fresh: []int{15}},
		nonce:      []byte("nonce"),
		expires:    now.Add(time.Minute),
		id:         []byte("0123456789abcdef"),
	}
	token, err := sealer.seal(rand.Reader, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(token) > wire.MaxSessionBytes/2 {
		t.Errorf("token of %d bytes, want well under the %d-byte bound", len(token), wire.MaxSessionBytes)
	}
	for _, secret := range [][]byte{in.expected.Secret, in.nonce, []byte(enr.HostID)} {
		if strings.Contains(token, string(secret)) {
			t.Errorf("token shows %q in clear", secret)
		}
	}

	out, err := sealer.open(token, now)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if out.enrollment.HostID != enr.HostID || !bytes.Equal(out.enrollment.EKCert, enr.EKCert) ||
		!bytes.Equal(out.expected.Secret, in.expected.Secret) || !bytes.Equal(out.id, in.id) ||
		!out.expires.Equal(in.expires) || len(out.expected.PCRs) != 2 || len(out.expected.Fresh) != 1 {
		t.Errorf("opened session differs: %+v", out)
	}
	// The resumed enrollment makes credentials for the same AK name: a
	// challenge works the same (it needs the parsed EK and AK name).
	if _, _, _, err := out.enrollment.Challenge(rand.Reader); err != nil {
		t.Errorf("challenge from the resumed enrollment: %v", err)
	}

	if _, err := sealer.open(token, now.Add(time.Minute)); !errors.Is(err, errExpired) {
		t.Errorf("at expiry: %v, want errExpired", err)
	}

	other, _ := newSessionSealer(bytes.Repeat([]byte{2}, SessionKeySize))
	raw, _ := base64.RawURLEncoding.DecodeString(token[len(sessionTokenPrefix):])
	flipped := func(i int) string {
		b := bytes.Clone(raw)
		b[i] ^= 0x01
		return sessionTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	}
	for name, tok := range map[string]string{
		"another key's":    mustSeal(t, other, in),
		"nonce altered":    flipped(0),
		"sealed altered":   flipped(len(raw) / 2),
		"tag altered":      flipped(len(raw) - 1),
		"truncated":        token[:len(token)-10],
		"no prefix":        token[len(sessionTokenPrefix):],
		"not base64":       sessionTokenPrefix + "!!!!",
		"empty":            "",
		"prefix only":      sessionTokenPrefix,
		"oversized":        token + strings.Repeat("A", wire.MaxSessionBytes),
		"old hex table ID": "00112233445566778899aabbccddeeff",
	} {
		if _, err := sealer.open(tok, now); !errors.Is(err, errUnknownSession) {
			t.Errorf("%s token: %v, want errUnknownSession", name, err)
		}
	}
}

func mustSeal(t *testing.T, s *sessionSealer, in *session) string {
	t.Helper()
	tok, err := s.seal(rand.Reader, in)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSessionKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := newSessionSealer(make([]byte, n)); err == nil {
			t.Errorf("a %d-byte key was taken", n)
		}
	}
}
