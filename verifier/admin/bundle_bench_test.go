package admin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"
)

// peakHeap samples the heap in use until stop is called, and returns the
// highest value seen.
func peakHeap() (stop func() uint64) {
	var (
		mu   sync.Mutex
		peak uint64
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	sample := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		mu.Lock()
		peak = max(peak, m.HeapInuse)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				sample()
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		sample()
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// BenchmarkIncidentBundleHeap is the attack of an incident whose every
// failed attestation carries a log of 1 MiB, exported whole: it reports
// the bundle's size and the heap in use at its highest while the appliance
// writes it (sampled with runtime.MemStats every 2 ms; the client reads
// the answer into io.Discard). A bundle built in memory holds every
// attestation at once; a streamed one, one at a time.
//
//	go test -run '^$' -bench BenchmarkIncidentBundleHeap -benchmem ./verifier/admin/
func BenchmarkIncidentBundleHeap(b *testing.B) {
	f := newFixture(b)
	ev := loadEvidence(b, badLog, f.pol)
	ev.log = bytes.Repeat([]byte{0xab}, 1<<20) // junk the host sent, stored as received
	var inc int64
	for range MaxBundleAttestations {
		_, inc = record(b, f.st, "junk-logger", time.Now(), ev, f.pol)
	}
	url := fmt.Sprintf("%s/api/v1/incidents/%d/bundle", f.url, inc)
	var size int64
	var peak uint64
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	b.ResetTimer()
	for b.Loop() {
		stop := peakHeap()
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
		resp, err := f.client.http.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("bundle: %d, %v", resp.StatusCode, err)
		}
		size = n
		peak = max(peak, stop())
		runtime.GC()
	}
	b.ReportMetric(float64(size)/(1<<20), "bundle-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(peak-min(peak, base.HeapInuse))/(1<<20), "peak-heap-over-idle-MiB")
}
