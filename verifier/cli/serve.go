package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/bootgate/bootgate/verifier/admin"
	"github.com/bootgate/bootgate/verifier/alert"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/bootfiles"
	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/connlimit"
	"github.com/bootgate/bootgate/verifier/dhcpgate"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/gateway"
	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
)

func (e *env) serveCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Run the appliance's attestation API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.serve(cmd.Context(), cfgPath)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "appliance configuration (YAML)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func (e *env) serve(ctx context.Context, cfgPath string) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return &ExitError{Code: ExitBadInput, Err: err}
	}
	soft, hard, err := raiseFileLimit()
	if err != nil {
		e.logger.Warn("file descriptor limit", "err", err)
	}
	budget, err := planFiles(cfg, soft)
	if err != nil {
		return &ExitError{Code: ExitBadInput, Err: err}
	}
	e.logger.Info("file descriptors", "limit", soft, "hard_limit", hard, "caps_need", budget.Need())
	apiConns, err := connlimit.NewCounter(budget.API)
	if err != nil {
		return &ExitError{Code: ExitBadInput, Err: err}
	}
	var adminConns *connlimit.Counter
	if cfg.Admin != nil {
		if adminConns, err = connlimit.NewCounter(budget.Admin); err != nil {
			return &ExitError{Code: ExitBadInput, Err: err}
		}
	}
	var files *bootfiles.Files
	if cfg.BootFiles != nil {
		if files, err = bootfiles.New(cfg.BootFiles.Dir, *budget.Boot, e.logger.With("component", "bootfiles")); err != nil {
			return err
		}
		defer files.Close()
	}
	pol, err := policy.Load(cfg.Policy)
	if err != nil {
		return &ExitError{Code: ExitBadInput, Err: err}
	}
	quoted := cfg.PCRs
	if len(quoted) == 0 {
		quoted = server.DefaultPCRs
	}
	if err := config.CheckQuotedPCRs(quoted, pol.PCRs()); err != nil {
		return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("%s: %w", cfgPath, err)}
	}
	roots, err := attest.LoadRoots(cfg.EK.Roots, cfg.EK.Allow)
	if err != nil {
		return &ExitError{Code: ExitBadInput, Err: err}
	}
	if cfg.EK.AllowSHA1 {
		roots.AllowSHA1()
		e.logger.Warn("accepting EK certificates signed with SHA-1 (ek.allow_sha1)")
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("load TLS certificate: %w", err)}
	}
	st, err := store.OpenSQLite(cfg.Store)
	if err != nil {
		return err
	}
	defer st.Close()

	var logs attest.LogVerifier = attest.DirectLogs
	if cfg.LogCache >= 0 {
		n := cfg.LogCache
		if n == 0 {
			n = 1024
		}
		logs = eventlog.NewCache(n)
	}
	var boot *server.BootOS
	if cfg.Boot != nil {
		boot = &server.BootOS{Kernel: cfg.Boot.Kernel, Initrd: cfg.Boot.Initrd, Cmdline: cfg.Boot.Cmdline, Signer: cfg.Boot.Signer}
	}
	var gate *dhcpGate
	var recorded func(context.Context, string, server.Link)
	var leases server.LinkLeases
	if cfg.DHCP != nil {
		if gate, err = startDHCP(cfg.DHCP, cfg.Store, st, e.logger); err != nil {
			return err
		}
		defer gate.leases.Close()
		recorded, leases = gate.recorded(e.logger, st), gate.leases
	}
	if cfg.AttestBehindNAT {
		e.logger.Warn("attest_behind_nat: connections' source addresses are not compared with the quoted links")
	}
	var ca *pki.CA
	if cfg.PKI != nil {
		if err := pki.InitCA(cfg.PKI.Dir, 5*365*24*time.Hour); err != nil {
			return err
		}
		if ca, err = pki.LoadCA(cfg.PKI.Dir); err != nil {
			return err
		}
	}
	var notifier *alert.Notifier
	if cfg.Webhook != nil {
		notifier = &alert.Notifier{URL: cfg.Webhook.URL, HTTP: &http.Client{Timeout: 10 * time.Second}, Outbox: st, Logger: e.logger}
		go notifier.Run(ctx)
		e.logger.Info("posting incident alerts", "url", cfg.Webhook.URL)
	}
	var metrics *server.Metrics
	if cfg.MetricsListen != "" {
		reg := prometheus.NewRegistry()
		metrics = server.NewMetrics(reg)
		reg.MustRegister(newStateCollector(st, gate))
		registerShed(reg, "attestation_api", apiConns.Shed)
		if adminConns != nil {
			registerShed(reg, "admin_api", adminConns.Shed)
		}
		if files != nil {
			registerShed(reg, "boot_http", files.HTTPShed)
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "bootgate_tftp_requests_shed_total", Help: "TFTP read requests dropped for the transfer caps.",
			}, func() float64 { return float64(files.TFTPStats().Shed) }))
		}
		if notifier != nil {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "bootgate_webhook_failures_total", Help: "Failed webhook delivery attempts.",
			}, func() float64 { return float64(notifier.Failures.Load()) }))
		}
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mConns, err := connlimit.NewCounter(metricsConns)
		if err != nil {
			return err
		}
		ms := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
			ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
		go ms.Serve(connlimit.NewListener(mln, mConns, "metrics", e.logger))
		context.AfterFunc(ctx, func() { ms.Close() })
		e.logger.Info("serving metrics", "addr", mln.Addr().String())
	}
	srv, err := server.New(server.Options{
		Roots: roots, Policy: pol, Store: st, Logs: logs, Logger: e.logger,
		PCRs: cfg.PCRs, SessionTTL: cfg.SessionTTL, Boot: boot, Recorded: recorded,
		Leases: leases, BehindNAT: cfg.AttestBehindNAT, Refusals: st,
		CA: ca, IdentityTTL: identityTTL(cfg), IdentityMaxAge: identityMaxAge(cfg), Metrics: metrics,
	})
	if err != nil {
		return err
	}
	rawLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Capped below TLS, so that a shed connection costs no handshake.
	ln := connlimit.NewListener(rawLn, apiConns, "attestation-api", e.logger)
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	srv.ConfigureTLS(tlsConfig)
	hs := &http.Server{
		Handler:           srv.Handler(),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go srv.Run(ctx)
	if cfg.Admin != nil {
		if err := serveAdmin(ctx, cfg, adminConns, cert, st, pol, gate, e.logger); err != nil {
			return err
		}
	}
	if cfg.Gateway != nil {
		gw, err := gateway.New(cfg.Gateway.Interface, -1, gatewayTimeout(cfg.Gateway.Sync))
		if err != nil {
			return err
		}
		go reconcile(ctx, gw, gate.leases, st, cfg.Gateway.Sync, e.logger)
		e.logger.Info("admission at the gateway", "interface", cfg.Gateway.Interface,
			"sync", syncInterval(cfg.Gateway.Sync), "fail_closed_within", gw.Timeout())
	}
	if files != nil {
		if err := serveBootFiles(ctx, cfg.BootFiles, files, e.logger); err != nil {
			return err
		}
	}
	dhcpDone := make(chan error, 1)
	if gate != nil {
		go func() { dhcpDone <- gate.server.Serve(ctx, gate.conn) }()
		e.logger.Info("serving DHCP", "interface", cfg.DHCP.Interface, "server_ip", cfg.DHCP.ServerIP)
	} else {
		close(dhcpDone)
	}
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = hs.Shutdown(sctx)
	}()
	e.logger.Info("serving attestation API", "addr", ln.Addr().String(), "policy", pol.Name, "policy_digest", pol.Digest(), "store", cfg.Store)
	if err := hs.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	cancel()
	return <-dhcpDone
}

// serveAdmin starts the operators' API and dashboard on their own listener,
// with conns capping its connections.
func serveAdmin(ctx context.Context, cfg *config.Config, conns *connlimit.Counter, cert tls.Certificate, st *store.SQLite, pol *policy.Policy, gate *dhcpGate, logger *slog.Logger) error {
	if err := pki.InitOperators(cfg.Admin.Operators, 5*365*24*time.Hour); err != nil {
		return err
	}
	ops, err := pki.LoadOperators(cfg.Admin.Operators, false)
	if err != nil {
		return err
	}
	opt := admin.Options{Store: st, Operators: ops, Policy: pol, Logger: logger}
	if cfg.PolicyReference != "" {
		ref, err := offlineState(cfg.PolicyReference)
		if err != nil {
			return fmt.Errorf("policy_reference: %w", err)
		}
		opt.Reference, opt.ReferenceName = ref, filepath.Base(cfg.PolicyReference)
	}
	if gate != nil {
		opt.Leases = adminLeases{gate.leases}
	}
	api, err := admin.New(opt)
	if err != nil {
		return err
	}
	raw, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	// Capped below TLS: the admin API reads the operator's certificate from
	// the *tls.Conn, which a wrapper above it would hide.
	ln := tls.NewListener(connlimit.NewListener(raw, conns, "admin-api", logger), admin.TLSConfig(cert))
	go func() {
		if err := api.Serve(ctx, ln); err != nil {
			logger.Error("admin API stopped", "err", err)
		}
	}()
	logger.Info("serving the admin API and dashboard to operators", "addr", ln.Addr().String(), "url", cfg.Admin.URL)
	return nil
}

// registerShed exports the number of connections a listener shed.
func registerShed(reg *prometheus.Registry, listener string, shed func() uint64) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "bootgate_connections_shed_total",
		Help:        "Connections closed as soon as accepted because the listener's caps were full.",
		ConstLabels: prometheus.Labels{"listener": listener},
	}, func() float64 { return float64(shed()) }))
}

// serveBootFiles serves the network-boot files until ctx ends.
func serveBootFiles(ctx context.Context, c *config.BootFiles, files *bootfiles.Files, log *slog.Logger) error {
	lim := files.Limits()
	if c.TFTP != "" {
		conn, err := net.ListenPacket("udp4", c.TFTP)
		if err != nil {
			return fmt.Errorf("tftp: %w", err)
		}
		go func() {
			if err := files.ServeTFTP(ctx, conn); err != nil && ctx.Err() == nil {
				log.Error("tftp", "err", err)
			}
		}()
		log.Info("serving boot files over TFTP", "addr", c.TFTP, "dir", c.Dir,
			"max_transfers", lim.TFTPTransfers.Total, "max_transfers_per_source", lim.TFTPTransfers.PerSource)
	}
	if c.HTTP != "" {
		ln, err := net.Listen("tcp", c.HTTP)
		if err != nil {
			return fmt.Errorf("boot files over HTTP: %w", err)
		}
		go func() {
			if err := files.ServeHTTPOn(ctx, ln); err != nil {
				log.Error("boot files over HTTP", "err", err)
			}
		}()
		log.Info("serving boot files over HTTP", "addr", c.HTTP, "dir", c.Dir,
			"max_conns", lim.HTTPConns.Total, "max_conns_per_source", lim.HTTPConns.PerSource)
	}
	return nil
}

// defaultIdentityMaxAge bounds renewals when the configuration does not: a
// host that never reboots stops getting identities after 30 days.
const defaultIdentityMaxAge = 30 * 24 * time.Hour

func identityMaxAge(cfg *config.Config) time.Duration {
	if cfg.PKI == nil {
		return 0
	}
	if cfg.PKI.MaxAge == 0 {
		return defaultIdentityMaxAge
	}
	return cfg.PKI.MaxAge
}

func identityTTL(cfg *config.Config) time.Duration {
	if cfg.PKI == nil {
		return 0
	}
	return cfg.PKI.IdentityTTL
}

// stateCollector exports the store's state at each scrape: hosts by state,
// unresolved incidents (one query each) and, with the DHCP gate, bound
// leases by pool (from memory) and dropped packets.
type stateCollector struct {
	st                                        *store.SQLite
	gate                                      *dhcpGate
	hosts, incidents, leases, drop, withdrawn *prometheus.Desc
	refused, unknownRelay                     *prometheus.Desc
}

func newStateCollector(st *store.SQLite, gate *dhcpGate) *stateCollector {
	return &stateCollector{st: st, gate: gate,
		hosts:     prometheus.NewDesc("bootgate_hosts", "Hosts by state.", []string{"state"}, nil),
		incidents: prometheus.NewDesc("bootgate_incidents_unresolved", "Incidents that are not closed.", nil, nil),
		leases:    prometheus.NewDesc("bootgate_dhcp_leases", "Bound DHCP leases by pool.", []string{"pool"}, nil),
		drop:      prometheus.NewDesc("bootgate_dhcp_dropped_total", "DHCP packets dropped because the queue was full.", nil, nil),
		withdrawn: prometheus.NewDesc("bootgate_dhcp_offers_withdrawn_total", "DHCP offers withdrawn to make room in a full pool (a DISCOVER flood, or too small a pool).", nil, nil),
		refused: prometheus.NewDesc("bootgate_dhcp_refused_total",
			"DHCP RELEASEs and DECLINEs that did not count: from a client that does not hold the address, outside every pool, or over the limits.", nil, nil),
		unknownRelay: prometheus.NewDesc("bootgate_dhcp_unknown_relay_total",
			"DHCP requests dropped because they name (or come from) a relay agent that is not configured, or carry a malformed option 82.", nil, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.hosts
	ch <- c.incidents
	if c.gate != nil {
		ch <- c.leases
		ch <- c.drop
		ch <- c.withdrawn
		ch <- c.refused
		ch <- c.unknownRelay
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if sum, err := c.st.Summarize(context.Background()); err == nil {
		for _, state := range []string{store.HostAdmitted, store.HostQuarantined} {
			ch <- prometheus.MustNewConstMetric(c.hosts, prometheus.GaugeValue, float64(sum.Hosts[state]), state)
		}
		ch <- prometheus.MustNewConstMetric(c.incidents, prometheus.GaugeValue, float64(sum.Unresolved()))
	}
	if c.gate == nil {
		return
	}
	counts := c.gate.leases.CountByPool(time.Now())
	for _, pool := range []string{dhcpgate.PoolQuarantine, dhcpgate.PoolProduction} {
		ch <- prometheus.MustNewConstMetric(c.leases, prometheus.GaugeValue, float64(counts[pool]), pool)
	}
	ch <- prometheus.MustNewConstMetric(c.drop, prometheus.CounterValue, float64(c.gate.server.Stats.Dropped.Load()))
	ch <- prometheus.MustNewConstMetric(c.withdrawn, prometheus.CounterValue, float64(c.gate.leases.Withdrawn.Load()))
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(c.gate.server.Stats.Refused.Load()))
	ch <- prometheus.MustNewConstMetric(c.unknownRelay, prometheus.CounterValue, float64(c.gate.server.Stats.UnknownRelay.Load()))
}
