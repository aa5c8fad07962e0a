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
