package server

import (
	"errors"
	"sync"
	"time"

	"github.com/bootgate/bootgate/verifier/attest"
)

var (
	errUnknownSession = errors.New("unknown session, or its nonce was already used")
	errExpired        = errors.New("the session's nonce expired")
)

// session is one enrollment waiting for its quote.
type session struct {
	enrollment *attest.Enrollment
	expected   attest.Expected
	nonce      []byte
	expires    time.Time
}

// sessions holds outstanding sessions, at most max of them, so that a flood of
// enrollments cannot exhaust memory.
type sessions struct {
	mu  sync.Mutex
	max int
	m   map[string]*session
}

func newSessions(max int) *sessions {
	return &sessions{max: max, m: map[string]*session{}}
}

// add stores s under id, or reports false when the table is full even after
// dropping expired sessions.
func (t *sessions) add(id string, s *session, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= t.max {
		t.sweepLocked(now)
		if len(t.m) >= t.max {
			return false
		}
	}
	t.m[id] = s
	return true
}

// take removes and returns the session: a session is used at most once.
func (t *sessions) take(id string, now time.Time) (*session, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.m[id]
	if !ok {
		return nil, errUnknownSession
	}
	delete(t.m, id)
	if !now.Before(s.expires) {
		return nil, errExpired
	}
	return s, nil
}

func (t *sessions) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
}

func (t *sessions) sweepLocked(now time.Time) {
	for id, s := range t.m {
		if !now.Before(s.expires) {
			delete(t.m, id)
		}
	}
}
