package store

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/admission"
	"github.com/bootgate/bootgate/verifier/wire"
)

// noise returns n pseudo-random bytes from seed: incompressible, as a log
// of junk (or a compressed one) is.
func noise(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// hostSeed is a seed of host's own.
func hostSeed(host string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(host))
	return h.Sum64()
}

// storedBytes is the size of s's database: SQLite's pages in use, or the
// total size of PostgreSQL's tables in the store's schema (indexes and
// TOAST included).
func storedBytes(t testing.TB, s *DB) int64 {
	t.Helper()
	var n int64
	q := `SELECT (p.page_count - f.freelist_count) * s.page_size FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s`
	if s.d == postgresDialect {
		q = `SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = current_schema() AND c.relkind = 'r'`
	}
	if err := s.write.QueryRowContext(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// fullAttestation is an attestation of host at baseTime+n seconds with
// evidence of realistic sizes: log (shared or not, as the caller gives
// it), a 1 KiB EK certificate of the host's own, a 2000-byte boot state,
// sixteen SHA-256 PCRs, and the per-attestation quote, signature, nonce
// and AK.
func fullAttestation(host string, verdict string, n int, log []byte) *Attestation {
	a := attestation(host, verdict, n)
	pcrs := make([]wire.PCR, 16)
	for i := range pcrs {
		pcrs[i] = wire.PCR{Index: i, Digest: noise(uint64(i), 32)}
	}
	seed := uint64(n)<<32 ^ hostSeed(host)
	a.Evidence = Evidence{
		EKCert: noise(hostSeed(host), 1024), EKType: "rsa", EKPublic: noise(7, 310),
		AK:    wire.AKParams{Public: noise(seed+1, 90), CreateData: noise(seed+2, 60), CreateAttestation: noise(seed+3, 120), CreateSignature: noise(seed+4, 72)},
		Nonce: noise(seed+5, 32), Quote: noise(seed+6, 150), Signature: noise(seed+7, 72), PCRs: pcrs, EventLog: log,
	}
	a.BootState = make([]byte, 0, 2000)
	for len(a.BootState) < 2000 {
		a.BootState = append(a.BootState, `{"secure_boot":true}`...)
	}
	return a
}

// BenchmarkStormBytes is what the store keeps per admitted host in a boot
// storm of 1000 hosts booting one firmware (one 34 KiB event log): each
// host enrolls and passes once through the admission port, with a 1 KiB
// EK certificate of its own. It reports bytes/host, the database's growth
// (storedBytes) over the storm divided by the hosts.
func BenchmarkStormBytes(b *testing.B) {
	const hosts = 1000
	log := noise(1, 34<<10)
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			var perHost int64
			for b.Loop() {
				s := openAt(b, be.fresh(b))
				ctx := context.Background()
				before := storedBytes(b, s)
				for i := range hosts {
					host := fmt.Sprintf("host-%05d", i)
					st, err := s.AdmissionState(ctx, host)
					if err != nil {
						b.Fatal(err)
					}
					d := admission.Decide(admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, State: st})
					if _, err := s.Apply(ctx, d, st.Revision, fullAttestation(host, "", i, log), Host{EKType: "rsa"}); err != nil {
						b.Fatal(err)
					}
				}
				perHost = (storedBytes(b, s) - before) / hosts
			}
			b.ReportMetric(float64(perHost), "bytes/host")
		})
	}
}

// BenchmarkPrune is one retention batch: Prune deleting 1000 attestations
// past the retention (the older of two passes of 1000 hosts, each with a
// 4 KiB log of its own) and their logs, on each backend. Each iteration
// records the attestations again with the timer stopped.
func BenchmarkPrune(b *testing.B) {
	const hosts = 1000
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s := openAt(b, be.fresh(b))
			ctx := context.Background()
			n := 0
			for b.Loop() {
				b.StopTimer()
				for i := range hosts {
					for range 2 {
						n++
						a := fullAttestation(fmt.Sprintf("host-%05d", i), wire.VerdictPass, n, noise(uint64(n), 4096))
						if _, err := s.Record(ctx, a, Host{EKType: "rsa"}); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StartTimer()
				p, err := s.Prune(ctx, baseTime().Add(DefaultRetention.MaxAge+time.Duration(n+1)*time.Second), Retention{MaxAge: DefaultRetention.MaxAge, Batch: hosts})
				if err != nil || p.Attestations != hosts || p.Blobs != hosts {
					b.Fatalf("Prune = %+v, %v; want %d attestations and their logs", p, err, hosts)
				}
			}
		})
	}
}
