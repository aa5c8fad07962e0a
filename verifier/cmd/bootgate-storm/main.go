// Command bootgate-storm loads appliances with a boot storm of simulated
// hosts (internal/storm) and prints one table row of figures; its last line
// is
//
//	storm: N hosts in S s, p99 P ms, errors E
//
// Usage:
//
//	bootgate-storm manufacture --dir DIR
//	bootgate-storm run --manufacturer DIR --ca CA.pem --url URL[,URL] \
//	    --eventlog LOG --hosts N [--concurrency C] [--pid PID[,PID]] [--label TEXT]
//
// manufacture makes a test TPM manufacturer (its root, manufacturer.pem,
// goes into the appliance's ek.roots). run makes N software TPMs certified
// by it, with PCRs replayed from LOG (a log the appliance's policy admits),
// then plays them against the URLs (host i to URL i mod the count) and
// prints hosts admitted per second, p50 and p99 per host, errors, retries
// (429/503 with Retry-After), and the CPU seconds per admitted host of the
// appliance processes PID (read from /proc) and of the generator itself.
// scripts/bench-storm.sh (make bench-storm) runs it against appliances it
// starts.
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bootgate/bootgate/internal/softtpm"
	"github.com/bootgate/bootgate/internal/storm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bootgate-storm:", err)
		os.Exit(1)
	}
}

const usage = "usage: bootgate-storm manufacture --dir DIR | run --manufacturer DIR --ca FILE --url URL --eventlog FILE --hosts N [flags]"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "manufacture":
		fs := flag.NewFlagSet("manufacture", flag.ContinueOnError)
		fs.SetOutput(stderr)
		dir := fs.String("dir", "", "directory to write manufacturer.pem and manufacturer-key.pem into")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *dir == "" {
			return errors.New("manufacture: --dir is required")
		}
		m, err := softtpm.NewManufacturer("bootgate-storm test TPM manufacturer")
		if err != nil {
			return err
		}
		return m.Save(*dir)
	case "run":
		return runStorm(ctx, args[1:], stdout, stderr)
	}
	return errors.New(usage)
}

func runStorm(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mdir := fs.String("manufacturer", "", "directory `manufacture` wrote")
	caFile := fs.String("ca", "", "CA (PEM) the appliances' TLS certificates chain to")
	urls := fs.String("url", "", "appliances' attestation API URLs, comma-separated")
	logFile := fs.String("eventlog", "", "firmware event log every host booted with")
	hosts := fs.Int("hosts", 1000, "simulated hosts")
	conc := fs.Int("concurrency", 32, "hosts in flight at once")
	timeout := fs.Duration("timeout", 60*time.Second, "bound on one host's exchange, retries included")
	pids := fs.String("pid", "", "appliance process IDs whose CPU time is counted, comma-separated")
	label := fs.String("label", "", "first column of the table row (e.g. the store and replicas)")
	header := fs.Bool("header", true, "print the table header")
	cpuProfile := fs.String("cpuprofile", "", "write the generator's CPU profile (pprof) during the storm to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *mdir == "" || *caFile == "" || *urls == "" || *logFile == "" || *hosts <= 0 || *conc <= 0 {
		return errors.New("run: --manufacturer, --ca, --url, --eventlog and positive --hosts and --concurrency are required")
	}
	m, err := softtpm.LoadManufacturer(*mdir)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s: no CA certificate", *caFile)
	}
	raw, err := os.ReadFile(*logFile)
	if err != nil {
		return err
	}
	var procs []int
	for _, p := range strings.FieldsFunc(*pids, func(r rune) bool { return r == ',' }) {
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("--pid %q: %w", p, err)
		}
		procs = append(procs, n)
	}

	// The generator shares the CPU with the appliances it measures: its
	// heap is small and short-lived (per-host TLS and JSON buffers), so it
	// collects less often to leave them more of the CPU.
	debug.SetGCPercent(400)
	t0 := time.Now()
	hs, err := storm.Manufacture(m, raw, *hosts, runtime.GOMAXPROCS(0), storm.DefaultFirstSource)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "manufactured %d software TPMs in %.2f s\n", len(hs), time.Since(t0).Seconds())

	cpu0, err := procCPU(procs)
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	res, err := storm.Run(ctx, storm.Config{URLs: strings.Split(*urls, ","), Roots: roots, Concurrency: *conc, Timeout: *timeout}, hs)
	if err != nil {
		return err
	}
	pprof.StopCPUProfile()
	cpu1, err := procCPU(procs)
	if err != nil {
		return err
	}
	s := res.Summarize()
	msgs := make([]string, 0, len(s.FirstErrors))
	for msg := range s.FirstErrors {
		msgs = append(msgs, msg)
	}
	sort.Strings(msgs)
	for _, msg := range msgs {
		fmt.Fprintf(stderr, "error ×%d: %s\n", s.FirstErrors[msg], msg)
	}
	perHost := func(d time.Duration) string {
		if s.Admitted == 0 {
			return "-"
		}
		return fmt.Sprintf("%.5f", d.Seconds()/float64(s.Admitted))
	}
	applianceCPU := "-"
	if len(procs) > 0 {
		applianceCPU = perHost(cpu1 - cpu0)
	}
	if *header {
		fmt.Fprintf(stdout, "%-14s %7s %8s %6s %7s %8s %9s %7s %7s %16s %16s\n",
			"appliances", "hosts", "admitted", "errors", "retries", "seconds", "hosts/s", "p50 ms", "p99 ms", "appl. CPU s/host", "gen. CPU s/host")
	}
	fmt.Fprintf(stdout, "%-14s %7d %8d %6d %7d %8.2f %9.1f %7.1f %7.1f %16s %16s\n",
		*label, s.Hosts, s.Admitted, s.Errors, s.Retries, s.Elapsed.Seconds(), s.Rate,
		ms(s.P50), ms(s.P99), applianceCPU, perHost(s.GeneratorCPU))
	fmt.Fprintf(stdout, "storm: %d hosts in %.2f s, p99 %.0f ms, errors %d\n", s.Hosts, s.Elapsed.Seconds(), ms(s.P99), s.Errors)
	if s.Errors > 0 {
		return fmt.Errorf("%d of %d hosts were not admitted", s.Errors, s.Hosts)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procCPU sums the user and system CPU time of the processes pids, from
// /proc/PID/stat (fields 14 and 15, in clock ticks).
func procCPU(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("appliance CPU time: %w", err)
		}
		// The command name (field 2) may hold spaces: fields count from
		// after its closing parenthesis.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			return 0, fmt.Errorf("appliance CPU time: /proc/%d/stat unreadable", pid)
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("appliance CPU time: /proc/%d/stat unreadable", pid)
		}
		for _, s := range f[11:13] { // utime, stime
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("appliance CPU time: /proc/%d/stat: %w", pid, err)
			}
			total += time.Duration(n) * time.Second / clockTicks
		}
	}
	return total, nil
}
