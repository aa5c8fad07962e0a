package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// testConsumeSession: a session is consumed once; another is not affected.
func testConsumeSession(t *testing.T, open opener) {
	s := open(t)
	s.now = func() time.Time { return sessionTime }
	ctx := context.Background()
	exp := sessionTime.Add(time.Minute)
	if err := s.ConsumeSession(ctx, []byte("session-1"), exp); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := s.ConsumeSession(ctx, []byte("session-1"), exp); !errors.Is(err, ErrSessionUsed) {
		t.Fatalf("second use: %v, want ErrSessionUsed", err)
	}
	if err := s.ConsumeSession(ctx, []byte("session-2"), exp); err != nil {
		t.Fatalf("another session: %v", err)
	}
	// IDs are bytes: a prefix, or the same text with a NUL, is another ID.
	if err := s.ConsumeSession(ctx, []byte("session-1\x00"), exp); err != nil {
		t.Fatalf("an ID with a trailing NUL: %v", err)
	}
}

// testSessionsExpire: once the clock passes a session's expiry by
// SessionSweepMargin, the next consumption deletes its row, so the table
// holds live and recently expired sessions only.
func testSessionsExpire(t *testing.T, open opener) {
	s := open(t)
	now := sessionTime
	s.now = func() time.Time { return now }
	ctx := context.Background()
	for i := range 5 {
		if err := s.ConsumeSession(ctx, fmt.Appendf(nil, "old-%d", i), now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ConsumeSession(ctx, []byte("late"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute + SessionSweepMargin - time.Second)
	if err := s.ConsumeSession(ctx, []byte("recent"), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM used_sessions`).Scan(&n); err != nil || n != 7 {
		t.Errorf("rows just within the sweep margin = %d, %v; want 7", n, err)
	}
	now = now.Add(time.Second)
	if err := s.ConsumeSession(ctx, []byte("new"), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM used_sessions`).Scan(&n); err != nil || n != 3 {
		t.Errorf("rows after expiry = %d, %v; want 3 (late, recent, new)", n, err)
	}
	if err := s.ConsumeSession(ctx, []byte("late"), now.Add(time.Hour)); !errors.Is(err, ErrSessionUsed) {
		t.Errorf("a live session after the sweep: %v, want ErrSessionUsed", err)
	}
}

// testConsumeSessionInvalid: bad input is refused and stores nothing.
func testConsumeSessionInvalid(t *testing.T, open opener) {
	s := open(t)
	s.now = func() time.Time { return sessionTime }
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		id      []byte
		expires time.Time
	}{
		{"empty ID", nil, sessionTime.Add(time.Minute)},
		{"long ID", make([]byte, MaxSessionIDLen+1), sessionTime.Add(time.Minute)},
		{"expired", []byte("x"), sessionTime},
		{"too far", []byte("x"), sessionTime.Add(MaxSessionLife + time.Second)},
	} {
		if err := s.ConsumeSession(ctx, tc.id, tc.expires); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM used_sessions`).Scan(&n); err != nil || n != 0 {
		t.Errorf("rows after refused input = %d, %v; want 0", n, err)
	}
	if err := s.ConsumeSession(ctx, make([]byte, MaxSessionIDLen), sessionTime.Add(MaxSessionLife)); err != nil {
		t.Errorf("the largest valid input: %v", err)
	}
}

// testConsumeSessionTwoHandles: two appliances race to consume the same
// sessions; each session is consumed exactly once.
func testConsumeSessionTwoHandles(t *testing.T, loc string) {
	a := openAt(t, loc)
	b := openAt(t, loc)
	ctx := context.Background()
	const sessions, tries = 50, 4 // each session tried twice on each handle
	exp := time.Now().Add(time.Hour)
	var (
		mu       sync.Mutex
		consumed = map[string]int{}
		wg       sync.WaitGroup
		errs     = make(chan error, sessions*tries)
	)
	for w := range tries {
		st := []*DB{a, b}[w%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range sessions {
				id := fmt.Sprintf("s%d", i)
				switch err := st.ConsumeSession(ctx, []byte(id), exp); {
				case err == nil:
					mu.Lock()
					consumed[id]++
					mu.Unlock()
				case !errors.Is(err, ErrSessionUsed):
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("ConsumeSession: %v", err)
	}
	for i := range sessions {
		if id := fmt.Sprintf("s%d", i); consumed[id] != 1 {
			t.Errorf("session %s consumed %d times, want 1", id, consumed[id])
		}
	}
}

// testConsumeSessionClockSkew is the attack of a token replayed at an
// appliance whose clock lags another's by 90 s: B consumes X, A (ahead)
// consumes Y and sweeps, B sees X still live by its clock. X's row must
// have outlived A's sweep, so the replay is refused.
func testConsumeSessionClockSkew(t *testing.T, loc string) {
	a := openAt(t, loc)
	b := openAt(t, loc)
	a.now = func() time.Time { return sessionTime.Add(90 * time.Second) }
	b.now = func() time.Time { return sessionTime }
	ctx := context.Background()
	x := sessionTime.Add(time.Minute) // live at B, expired at A
	if err := b.ConsumeSession(ctx, []byte("X"), x); err != nil {
		t.Fatalf("B consumes X: %v", err)
	}
	if err := a.ConsumeSession(ctx, []byte("Y"), a.now().Add(time.Minute)); err != nil {
		t.Fatalf("A consumes Y: %v", err)
	}
	if err := b.ConsumeSession(ctx, []byte("X"), x); !errors.Is(err, ErrSessionUsed) {
		t.Fatalf("B consumes X again after A's sweep: %v, want ErrSessionUsed", err)
	}
}
