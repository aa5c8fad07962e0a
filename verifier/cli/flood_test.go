package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/wire"
)

// floodChildEnv names the configuration a re-executed test binary serves,
// as `bootgate serve` under a lowered RLIMIT_NOFILE.
const floodChildEnv = "BOOTGATE_FLOOD_CHILD_CONFIG"

// childFiles is the child's RLIMIT_NOFILE (soft and hard): far fewer than
// the flood's connections.
const childFiles = 1024

// Flood sizes: each is well above childFiles, so only the caps keep the
// child's descriptors free.
const (
	floodHTTPSources = 500
	floodHTTPPerSrc  = 6 // above the per-source cap of 4
	floodHTTPWaves   = 3
	floodTFTPSockets = 500
	floodTFTPRounds  = 20 // 10 000 read requests
	probeEvery       = 10 * time.Millisecond
	probeBound       = time.Second // liveness bound, not a performance target
)

// TestServeUnderBootNetworkFlood runs `bootgate serve` (attestation API,
// boot files over HTTP and TFTP, metrics) in a child process limited to
// 1024 file descriptors, floods the boot-file servers from the loopback
// network (3 waves of 3000 idle keep-alive HTTP connections from 500
// addresses, then 10 000 TFTP read requests in 5 s from 500 sockets that
// never acknowledge), and probes the attestation API throughout with a fresh TLS connection every
// 10 ms. Every probe must be answered within a second; the flood's
// connections must be shed at the caps. The probes' latency percentiles are
// logged per phase (go test -v -run TestServeUnderBootNetworkFlood).
func TestServeUnderBootNetworkFlood(t *testing.T) {
	if cfg := os.Getenv(floodChildEnv); cfg != "" {
		floodChild(t, cfg)
		return
	}
	if testing.Short() {
		t.Skip("floods loopback for about 15 s")
	}
	dir := t.TempDir()
	if code, _, errOut := run(t, "tls", "init", "--dir", filepath.Join(dir, "tls"), "--host", "127.0.0.1"); code != 0 {
		t.Fatal(errOut)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "tls", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"roots", "boot/bootgate"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "roots", "ca.pem"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "boot", "bootgate", "agent.efi"), bytes.Repeat([]byte("UKI!"), 16<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	apiAddr, httpAddr, metricsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	tftpAddr := freeUDPAddr(t)
	// Caps that fit childFiles: 256 reserved + 256 API + 3 + 2×128 HTTP + 2×32 TFTP = 835.
	cfg := filepath.Join(dir, "appliance.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: %q
tls: {cert: tls/server.pem, key: tls/server-key.pem}
policy: %q
store: bootgate.db
ek: {roots: roots}
conns: {max: 256, per_source: 64}
metrics_listen: %q
bootfiles:
  dir: boot
  http: %q
  tftp: %q
  http_conns: {max: 128, per_source: 4}
  tftp_transfers: {max: 32, per_source: 2}
  http_idle_timeout: 60s
  tftp_timeout: 1s
  tftp_retries: 1
`, apiAddr, learn(t, "rhel8-uefi.bin"), metricsAddr, httpAddr, tftpAddr)), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestServeUnderBootNetworkFlood$")
	child.Env = append(os.Environ(), floodChildEnv+"="+cfg)
	var childLog syncBuffer
	child.Stdout, child.Stderr = &childLog, &childLog
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close() // the child stops serving when its stdin ends
		if err := child.Wait(); err != nil {
			t.Errorf("child: %v", err)
		}
		if t.Failed() {
			t.Logf("child output:\n%s", childLog.String())
		}
	}()

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	probe := &http.Client{Timeout: probeBound, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true}}
	// The probe: an enrollment with nothing in it, refused by the real
	// handler (403, no endorsement key) without touching the store.
	probeURL := "https://" + apiAddr + wire.PathEnroll
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := probePost(probe, probeURL)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the attestation API did not come up: %v\n%s", err, childLog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	baseline := probeDuring(t, probe, probeURL, func() { time.Sleep(time.Second) })
	logLatency(t, "no flood", baseline)

	var held []net.Conn
	var shed int
	httpProbes := probeDuring(t, probe, probeURL, func() {
		for wave := 0; wave < floodHTTPWaves; wave++ { // the first wave's connections stay open
			h, s := floodHTTP(t, httpAddr)
			held, shed = append(held, h...), shed+s
			time.Sleep(1500 * time.Millisecond)
		}
	})
	logLatency(t, "idle HTTP connection flood", httpProbes)
	total := floodHTTPWaves * floodHTTPSources * floodHTTPPerSrc
	t.Logf("HTTP flood: %d connections, %d held open, %d shed", total, len(held), shed)
	if len(held) > 128 || len(held)+shed != total {
		t.Errorf("HTTP flood: %d held, %d shed; want at most the cap of 128 held and the rest shed", len(held), shed)
	}
	for _, c := range held {
		c.Close()
	}

	var tf tftpFlood
	tftpProbes := probeDuring(t, probe, probeURL, func() { tf = floodTFTP(t, tftpAddr) })
	logLatency(t, "TFTP read-request flood", tftpProbes)
	t.Logf("TFTP flood: %d read requests in %v, %d transfers answered, %d datagrams back (at most %d per transfer)",
		tf.sent, tf.took.Round(time.Millisecond), tf.transfers, tf.datagrams, tf.maxPerTransfer)
	// 32 transfers at a time, each over within 3 s (2 copies of block 1, 1 s apart, then an error).
	if maxTransfers := 32 * (int(tf.took/(2*time.Second)) + 2); tf.transfers == 0 || tf.transfers > maxTransfers {
		t.Errorf("TFTP flood: %d transfers answered, want between 1 and %d", tf.transfers, maxTransfers)
	}
	if tf.maxPerTransfer > 3 {
		t.Errorf("TFTP flood: a transfer sent %d datagrams, want at most 2 copies of block 1 and an error", tf.maxPerTransfer)
	}

	metrics := scrape(t, "http://"+metricsAddr+"/metrics")
	t.Logf("child metrics: boot_http shed %v, TFTP requests shed %v, attestation_api shed %v",
		metrics[`bootgate_connections_shed_total{listener="boot_http"}`], metrics["bootgate_tftp_requests_shed_total"],
		metrics[`bootgate_connections_shed_total{listener="attestation_api"}`])
	if got := metrics[`bootgate_connections_shed_total{listener="boot_http"}`]; int(got) != shed {
		t.Errorf("the child counted %v shed HTTP connections, the flood saw %d", got, shed)
	}
	if got := metrics[`bootgate_connections_shed_total{listener="attestation_api"}`]; got != 0 {
		t.Errorf("%v probes were shed", got)
	}

	for name, lat := range map[string][]time.Duration{"baseline": baseline, "HTTP flood": httpProbes, "TFTP flood": tftpProbes} {
		for _, d := range lat {
			if d < 0 || d > probeBound {
				t.Errorf("%s: a probe was not answered within %v (%v)", name, probeBound, d)
				break
			}
		}
	}
}

// floodChild serves cfg with RLIMIT_NOFILE lowered to childFiles until its
// stdin ends.
func floodChild(t *testing.T, cfg string) {
	lim := syscall.Rlimit{Cur: childFiles, Max: childFiles}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	if code := Run(ctx, []string{"serve", "--config", cfg}, os.Stderr, os.Stderr); code != 0 {
		t.Fatalf("serve exited with %d", code)
	}
}

// probeDuring runs flood while probing url every probeEvery with a new
// connection, and returns each probe's latency (-1 for no answer).
func probeDuring(t *testing.T, c *http.Client, url string, flood func()) []time.Duration {
	t.Helper()
	done := make(chan struct{})
	out := make(chan []time.Duration)
	go func() {
		var lat []time.Duration
		tick := time.NewTicker(probeEvery)
		defer tick.Stop()
		for i := 0; i < 10000; i++ { // bounded: 100 s at most
			select {
			case <-done:
				out <- lat
				return
			case <-tick.C:
			}
			start := time.Now()
			resp, err := probePost(c, url)
			if err != nil {
				t.Logf("probe: %v", err)
				lat = append(lat, -1)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			lat = append(lat, time.Since(start))
		}
		<-done
		out <- lat
	}()
	flood()
	close(done)
	return <-out
}

func probePost(c *http.Client, url string) (*http.Response, error) {
	resp, err := c.Post(url, "application/json", strings.NewReader("{}"))
	if err == nil && resp.StatusCode != http.StatusForbidden {
		resp.Body.Close()
		return nil, fmt.Errorf("probe: %s, want 403", resp.Status)
	}
	return resp, err
}

func logLatency(t *testing.T, phase string, lat []time.Duration) {
	t.Helper()
	var s []time.Duration
	for _, d := range lat {
		if d >= 0 {
			s = append(s, d)
		}
	}
	if len(s) == 0 {
		t.Errorf("%s: no probe answered (%d sent)", phase, len(lat))
		return
	}
	slices.Sort(s)
	pct := func(p float64) time.Duration {
		return s[min(len(s)-1, int(p*float64(len(s))))].Round(10 * time.Microsecond)
	}
	t.Logf("attestation API probes during %s: %d sent, %d unanswered; answered in p50=%v p99=%v max=%v",
		phase, len(lat), len(lat)-len(s), pct(0.50), pct(0.99), s[len(s)-1].Round(10*time.Microsecond))
}

// floodHTTP opens floodHTTPPerSrc keep-alive connections from each of
// floodHTTPSources loopback addresses, makes one request on each and leaves
// it idle. It returns the connections the server kept and the number it
// closed at once.
func floodHTTP(t *testing.T, addr string) (held []net.Conn, shed int) {
	t.Helper()
	var mu sync.Mutex
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				src := net.IPv4(127, 1, byte(i/250), byte(i%250+1))
				c, ok := idleConn(src, addr)
				mu.Lock()
				if ok {
					held = append(held, c)
				} else {
					shed++
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < floodHTTPSources; i++ {
		for j := 0; j < floodHTTPPerSrc; j++ {
			jobs <- i
		}
	}
	close(jobs)
	wg.Wait()
	return held, shed
}

// idleConn connects from src, makes one request and returns the connection
// if the server answered and kept it open.
func idleConn(src net.IP, addr string) (net.Conn, bool) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, false
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET /nothing HTTP/1.1\r\nHost: boot\r\n\r\n"); err != nil {
		c.Close()
		return nil, false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, false
	}
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return c, true
}

type tftpFlood struct {
	sent, transfers, datagrams, maxPerTransfer int
	took                                       time.Duration
}

// floodTFTP sends floodTFTPRounds read requests from each of
// floodTFTPSockets sockets (on 100 loopback addresses), never acknowledges
// anything, and counts what comes back until the server has been quiet
// for 3 s.
func floodTFTP(t *testing.T, addr string) tftpFlood {
	t.Helper()
	srv, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	req := append([]byte{0, 1}, "bootgate/agent.efi\x00octet\x00"...)
	var socks []*net.UDPConn
	for i := 0; i < floodTFTPSockets; i++ {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 2, 0, byte(i%100+1))})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		socks = append(socks, c)
	}
	var res tftpFlood
	var mu sync.Mutex
	perTransfer := map[string]int{} // by client socket and server port
	var wg sync.WaitGroup
	for _, c := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for i := 0; i < 1000; i++ { // bounded; ends when quiet
				c.SetReadDeadline(time.Now().Add(3 * time.Second))
				n, from, err := c.ReadFromUDP(buf)
				if err != nil {
					return
				}
				if n < 4 {
					continue
				}
				key := c.LocalAddr().String() + ">" + strconv.Itoa(from.Port)
				mu.Lock()
				res.datagrams++
				perTransfer[key]++
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	for r := 0; r < floodTFTPRounds; r++ {
		for _, c := range socks {
			if _, err := c.WriteToUDP(req, srv); err == nil {
				res.sent++
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	res.took = time.Since(start)
	wg.Wait()
	res.transfers = len(perTransfer)
	for _, n := range perTransfer {
		res.maxPerTransfer = max(res.maxPerTransfer, n)
	}
	return res
}

var metricLine = regexp.MustCompile(`(?m)^(bootgate_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+]+)$`)

// scrape returns the bootgate_ metrics at url by name and labels.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		out[m[1]] = v
	}
	return out
}

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// syncBuffer is a bytes.Buffer safe for the child's two output streams.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
