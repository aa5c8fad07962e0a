package server

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/wire"
)

var (
	errUnknownSession = errors.New("unknown session, or its nonce was already used")
	errExpired        = errors.New("the session's nonce expired")
)

// SessionKeySize is the size in bytes of the key that seals session tokens
// (AES-256-GCM).
const SessionKeySize = 32

// sessionTokenPrefix names the token format, so that a later format can be
// told apart.
const sessionTokenPrefix = "s1."

// sessionAD is the AEAD's additional data: a token sealed for anything else
// under the same key does not open as a session.
var sessionAD = []byte("bootgate enrollment session v1")

// session is one enrollment waiting for its quote. It lives in no table: it
// is sealed into the token the agent returns with its quote (sealSession),
// so that any replica sharing the key can take the quote, and nothing a
// flood of enrollments sends is kept. The store's ConsumeSession makes each
// token usable once.
type session struct {
	enrollment *attest.Enrollment
	expected   attest.Expected
	nonce      []byte
	expires    time.Time
	id         []byte // 16 random bytes: the single-use key
}

// sessionState is a session as sealed: JSON, inside AES-256-GCM.
type sessionState struct {
	ID         []byte          `json:"id"`
	Expires    int64           `json:"exp"` // Unix nanoseconds
	Secret     []byte          `json:"secret"`
	Nonce      []byte          `json:"nonce"`
	PCRs       []int           `json:"pcrs"`
	Bank       crypto.Hash     `json:"bank,omitempty"` // crypto.SHA256 (also 0) or crypto.SHA1
	Fresh      []int           `json:"fresh,omitempty"`
	Enrollment json.RawMessage `json:"enrollment"`
}

// sessionSealer seals sessions into tokens and opens them, under one key that
// every replica serving the same agents shares.
type sessionSealer struct{ aead cipher.AEAD }

func newSessionSealer(key []byte) (*sessionSealer, error) {
	if len(key) != SessionKeySize {
		return nil, fmt.Errorf("session key: %d bytes, want %d", len(key), SessionKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sessionSealer{aead: aead}, nil
}

// seal returns the token for s: the format prefix, then base64url of a random
// 96-bit GCM nonce and the sealed state. Random nonces keep GCM's bound of
// 2^32 tokens per key (NIST SP 800-38D §8.3); rotate the key before that.
func (t *sessionSealer) seal(rand io.Reader, s *session) (string, error) {
	enr, err := s.enrollment.MarshalBinary()
	if err != nil {
		return "", err
	}
	plain, err := json.Marshal(sessionState{
		ID: s.id, Expires: s.expires.UnixNano(), Secret: s.expected.Secret, Nonce: s.nonce,
		PCRs: s.expected.PCRs, Bank: s.expected.Bank, Fresh: s.expected.Fresh, Enrollment: enr,
	})
	if err != nil {
		return "", err
	}
	nonce := make([]byte, t.aead.NonceSize(), t.aead.NonceSize()+len(plain)+t.aead.Overhead())
	if _, err := io.ReadFull(rand, nonce); err != nil {
		return "", err
	}
	sealed := t.aead.Seal(nonce, nonce, plain, sessionAD)
	token := sessionTokenPrefix + base64.RawURLEncoding.EncodeToString(sealed)
	if len(token) > wire.MaxSessionBytes {
		// Only an EK certificate with unusually long text could get here;
		// the agent could not return the token.
		return "", fmt.Errorf("session token of %d bytes, over the %d-byte limit", len(token), wire.MaxSessionBytes)
	}
	return token, nil
}

// open returns the session sealed in token, or errUnknownSession for a token
// this key did not seal (altered, truncated, oversized, another key's) and
// errExpired for one whose time has passed at now. It does not check single
// use: that is the store's (ConsumeSession).
func (t *sessionSealer) open(token string, now time.Time) (*session, error) {
	if len(token) > wire.MaxSessionBytes || !strings.HasPrefix(token, sessionTokenPrefix) {
		return nil, errUnknownSession
	}
	sealed, err := base64.RawURLEncoding.DecodeString(token[len(sessionTokenPrefix):])
	if err != nil || len(sealed) < t.aead.NonceSize() {
		return nil, errUnknownSession
	}
	n := t.aead.NonceSize()
	plain, err := t.aead.Open(nil, sealed[:n], sealed[n:], sessionAD)
	if err != nil {
		return nil, errUnknownSession
	}
	var st sessionState
	if err := json.Unmarshal(plain, &st); err != nil {
		return nil, fmt.Errorf("sealed session: %w", err)
	}
	if st.Bank != 0 && st.Bank != crypto.SHA256 && st.Bank != crypto.SHA1 {
		return nil, fmt.Errorf("sealed session: PCR bank %v", st.Bank)
	}
	expires := time.Unix(0, st.Expires)
	if !now.Before(expires) {
		return nil, errExpired
	}
	enr, err := attest.ResumeEnrollment(st.Enrollment)
	if err != nil {
		return nil, err
	}
	return &session{
		enrollment: enr,
		expected:   attest.Expected{Secret: st.Secret, Nonce: st.Nonce, PCRs: st.PCRs, Bank: st.Bank, Unlogged: attest.DefaultUnlogged, Fresh: st.Fresh},
		nonce:      st.Nonce,
		expires:    expires,
		id:         st.ID,
	}, nil
}
