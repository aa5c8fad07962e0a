package bootflow

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 2 * time.Second, Max: 60 * time.Second}
	r := rand.New(rand.NewPCG(1, 2))
	for n, want := range map[int]time.Duration{1: 2 * time.Second, 2: 4 * time.Second, 3: 8 * time.Second, 6: 60 * time.Second, 50: 60 * time.Second} {
		for range 100 {
			d := b.Delay(n, r)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", n, d, want/2, want)
			}
		}
	}
}

// TestBackoffHonoursRetryAfter: a verifier's Retry-After lengthens the
// wait (with jitter of up to half of it, so that refused hosts spread
// out), never beyond Max; a shorter one changes nothing.
func TestBackoffHonoursRetryAfter(t *testing.T) {
	b := Backoff{Min: 2 * time.Second, Max: 60 * time.Second}
	r := rand.New(rand.NewPCG(1, 2))
	for _, tt := range []struct {
		n      int
		hint   time.Duration
		lo, hi time.Duration
	}{
		{1, 0, time.Second, 2 * time.Second},
		{1, 500 * time.Millisecond, time.Second, 2 * time.Second},
		{1, 10 * time.Second, 10 * time.Second, 15 * time.Second},
		{3, 10 * time.Second, 10 * time.Second, 15 * time.Second},
		{1, 50 * time.Second, 50 * time.Second, 60 * time.Second},
		{1, time.Hour, 60 * time.Second, 60 * time.Second},
	} {
		var spread bool
		first := b.Wait(tt.n, tt.hint, r)
		for range 100 {
			d := b.Wait(tt.n, tt.hint, r)
			if d < tt.lo || d > tt.hi {
				t.Fatalf("attempt %d, Retry-After %v: wait %v outside [%v, %v]", tt.n, tt.hint, d, tt.lo, tt.hi)
			}
			spread = spread || d != first
		}
		if !spread && tt.lo != tt.hi {
			t.Errorf("attempt %d, Retry-After %v: every wait is %v", tt.n, tt.hint, first)
		}
	}
}
