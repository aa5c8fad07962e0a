package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/bootgate/bootgate/verifier/admission"
)

// BenchmarkApply is the admission port's cost per attestation: read the
// host's admission state, decide, and apply a pass for a new host (a boot
// storm's first attestations), one at a time and from parallel callers,
// on each backend. On PostgreSQL the cluster's fsync follows $PGTEST_FSYNC
// (off unless "on"); SQLite syncs every commit (synchronous=FULL).
func BenchmarkApply(b *testing.B) {
	for _, be := range backends {
		for _, parallel := range []bool{false, true} {
			name := be.name + "/serial"
			if parallel {
				name = be.name + "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				s := openAt(b, be.fresh(b))
				ctx := context.Background()
				var n atomic.Int64
				apply := func() error {
					host := fmt.Sprintf("host-%d", n.Add(1))
					for {
						st, err := s.AdmissionState(ctx, host)
						if err != nil {
							return err
						}
						d := admission.Decide(admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, State: st})
						a := attestation(host, "", 0)
						_, err = s.Apply(ctx, d, st.Revision, a, Host{EKType: "rsa"})
						if !errors.Is(err, admission.ErrConflict) {
							return err
						}
					}
				}
				b.ResetTimer()
				if !parallel {
					for b.Loop() {
						if err := apply(); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := apply(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
