package server

import (
	"errors"
	"slices"
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

// perHost bounds the pending sessions of one EK. An EK certificate is public,
// and an AK made in software enrolls (only activation stops it), so without
// this bound a copy of one certificate could fill the whole table; with it, an
// attacker needs a trusted certificate for every perHost sessions.
const perHost = 4

// sessions holds outstanding sessions, at most max of them, so that a flood of
// enrollments cannot exhaust memory.
type sessions struct {
	mu     sync.Mutex
	max    int
	m      map[string]*session
	byHost map[string][]string // session IDs by host, oldest first
}

func newSessions(max int) *sessions {
	return &sessions{max: max, m: map[string]*session{}, byHost: map[string][]string{}}
}

// add stores s under id, evicting the host's oldest pending session beyond
// perHost, or reports false when the table is full even after dropping
// expired sessions.
func (t *sessions) add(id string, s *session, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	host := s.enrollment.HostID
	if ids := t.byHost[host]; len(ids) >= perHost {
		t.removeLocked(ids[0])
	}
	if len(t.m) >= t.max {
		t.sweepLocked(now)
		if len(t.m) >= t.max {
			return false
		}
	}
	t.m[id] = s
	t.byHost[host] = append(t.byHost[host], id)
	return true
}

func (t *sessions) removeLocked(id string) {
	s, ok := t.m[id]
	if !ok {
		return
	}
	delete(t.m, id)
	host := s.enrollment.HostID
	ids := slices.DeleteFunc(t.byHost[host], func(x string) bool { return x == id })
	if len(ids) == 0 {
		delete(t.byHost, host)
	} else {
		t.byHost[host] = ids
	}
}

// take removes and returns the session: a session is used at most once.
func (t *sessions) take(id string, now time.Time) (*session, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.m[id]
	if !ok {
		return nil, errUnknownSession
	}
	t.removeLocked(id)
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
			t.removeLocked(id)
		}
	}
}
