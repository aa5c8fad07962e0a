// Package appliance runs the verifier appliance as one process lifecycle:
// it opens the store, binds every listener, then serves the attestation
// API, the admin API, metrics, DHCP, boot files, the gateway's
// reconciliation, webhook alerts and session sweeping in one errgroup until
// its context ends or one of them fails, and closes the store last.
package appliance

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/bootgate/bootgate/verifier/admin"
	"github.com/bootgate/bootgate/verifier/alert"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/bootfiles"
	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/connlimit"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/gateway"
	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
)

// DefaultDrain is how long in-flight HTTP requests may take to finish once
// the appliance stops, unless Options.Drain says otherwise.
const DefaultDrain = 5 * time.Second

// Options are the appliance's process-level inputs, apart from its
// configuration.
type Options struct {
	// Logger receives the appliance's log (default: discarded).
	Logger *slog.Logger
	// Drain bounds, per HTTP listener, the wait for in-flight requests
	// once the appliance stops; connections still open after it are
	// closed (default DefaultDrain). The admin API's live event streams
	// end only then, so an open dashboard delays the stop by Drain. A
	// handler still running after its connection was closed may find the
	// store closed under it, and fails.
	Drain time.Duration
	// Reload, when it delivers, has the appliance read its policy file and
	// policy reference again (SIGHUP, systemctl reload): a policy that does
	// not load, or whose PCRs the quote does not cover, is refused and the
	// one in force stays.
	Reload <-chan struct{}
}

// Run runs the appliance configured by cfg until ctx ends or one of its
// components fails.
//
// Start-up, in order: the descriptor budget (RLIMIT_NOFILE raised to its
// hard limit; caps that do not fit are an error wrapping errFileBudget),
// boot files, EK roots, the TLS certificate, the store (created if
// missing), the DHCP gate's leases and socket, the attestation CA, then
// every listener is bound. An error in any of these closes what was opened
// and is returned; a configuration refused before the store leaves no
// store file behind. Once every listener is bound, Run tells systemd
// READY=1 (when NOTIFY_SOCKET is set).
//
// Shutdown, on ctx's end or the first component's error: STOPPING=1 is
// sent, listeners stop accepting, in-flight HTTP requests get
// Options.Drain to finish, the loops (DHCP, TFTP, gateway reconciliation,
// which empties the gateway's admitted sets, webhook delivery, session
// sweeping) return, and only then are the lease table and the store closed.
// Run returns nil after ctx's end, or the first component's error, wrapped
// with the component's name ("metrics: …", "admin API: …",
// "attestation API: …", "tftp: …", "boot files over HTTP: …", "dhcp gate: …").
func Run(ctx context.Context, cfg *config.Appliance, opt Options) (err error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opt.Drain <= 0 {
		opt.Drain = DefaultDrain
	}
	soft, hard, lerr := raiseFileLimit()
	if lerr != nil {
		log.Warn("file descriptor limit", "err", lerr)
	}
	budget, err := planFiles(cfg.Config, soft)
	if err != nil {
		return err
	}
	log.Info("file descriptors", "limit", soft, "hard_limit", hard, "caps_need", budget.Need())
	apiConns, err := connlimit.NewCounter(budget.API)
	if err != nil {
		return err
	}
	var adminConns *connlimit.Counter
	if cfg.Admin != nil {
		if adminConns, err = connlimit.NewCounter(budget.Admin); err != nil {
			return err
		}
	}
	var files *bootfiles.Files
	if cfg.BootFiles != nil {
		if files, err = bootfiles.New(cfg.BootFiles.Dir, *budget.Boot, log.With("component", "bootfiles")); err != nil {
			return err
		}
		defer files.Close()
	}
	pol := cfg.Policy
	roots, err := attest.LoadRoots(cfg.EK.Roots, cfg.EK.Allow)
	if err != nil {
		return err
	}
	if cfg.EK.AllowSHA1 {
		roots.AllowSHA1()
		log.Warn("accepting EK certificates signed with SHA-1 (ek.allow_sha1)")
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}

	sessionKey, err := loadSessionKey(cfg.SessionKey)
	if err != nil {
		return err
	}
	if sessionKey == nil && strings.Contains(cfg.Store, "://") {
		log.Warn("no session_key: a quote that reaches another replica than its enrollment is refused, and the agent enrolls again; give replicas one session_key file")
	}
	// The store is closed last: every deferred close below runs before
	// this one, and all of them after the errgroup has returned.
	st, err := store.Open(ctx, cfg.Store)
	if err != nil {
		return err
	}
	if why := store.UnverifiedTransport(cfg.Store); why != "" {
		// Warned, not refused: the link may be protected in a way the
		// appliance cannot see (a private network, a tunnel).
		log.Warn("the store's PostgreSQL connection can be read or changed on the network: set sslmode=verify-full (or verify-ca) with sslrootcert",
			"store", store.Redacted(cfg.Store), "reason", why)
	}
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store: %w", cerr)
		}
	}()
	retention, limits, pruneEvery := storeBounds(cfg.Retention)
	if err := st.SetLimits(limits); err != nil {
		return err
	}

	var logs attest.LogVerifier = attest.DirectLogs
	if cfg.LogCache >= 0 {
		n := cfg.LogCache
		if n == 0 {
			n = 1024
		}
		logs = eventlog.NewCache(n, eventlog.DefaultCacheBytes)
	}
	var boot *server.BootOS
	if cfg.Boot != nil {
		boot = &server.BootOS{Kernel: cfg.Boot.Kernel, Initrd: cfg.Boot.Initrd, Cmdline: cfg.Boot.Cmdline, Signer: cfg.Boot.Signer}
	}
	// closers release what is bound before serving starts, if start-up
	// fails; once serving, each component closes its own.
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	var gate *dhcpGate
	var recorded func(context.Context, string, server.Link)
	var leases server.LinkLeases
	if cfg.DHCP != nil {
		if gate, err = startDHCP(cfg.DHCP, st, log); err != nil {
			return err
		}
		defer gate.leases.Close()
		closers = append(closers, func() { gate.conn.Close() })
		recorded, leases = gate.recorded(log, st), gate.leases
	}
	if cfg.AttestBehindNAT {
		log.Warn("attest_behind_nat: connections' source addresses are not compared with the quoted links")
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
		notifier = &alert.Notifier{URL: cfg.Webhook.URL, HTTP: &http.Client{Timeout: 10 * time.Second}, Outbox: st, Logger: log}
	}

	// Bind every listener before serving any: readiness means all of them
	// accept connections.
	var metrics *server.Metrics
	var metricsSrv *http.Server
	var metricsLn net.Listener
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
		mConns, err := connlimit.NewCounter(metricsConns)
		if err != nil {
			return err
		}
		raw, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		closers = append(closers, func() { raw.Close() })
		metricsLn = connlimit.NewListener(raw, mConns, "metrics", log)
		metricsSrv = &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
			ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
	}
	srv, err := server.New(server.Options{
		Roots: roots, Policy: pol, Store: st, Logs: logs, Logger: log,
		PCRs: cfg.PCRs, SessionTTL: cfg.SessionTTL, SessionKey: sessionKey, Boot: boot, Recorded: recorded,
		Leases: leases, BehindNAT: cfg.AttestBehindNAT, Refusals: st, Work: connlimit.Limits{Total: cfg.Work.Max, PerSource: cfg.Work.PerSource},
		CA: ca, IdentityTTL: identityTTL(cfg.Config), IdentityMaxAge: identityMaxAge(cfg.Config), Metrics: metrics,
	})
	if err != nil {
		return err
	}
	rawLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	closers = append(closers, func() { rawLn.Close() })
	// Capped below TLS, so that a shed connection costs no handshake.
	apiLn := connlimit.NewListener(rawLn, apiConns, "attestation-api", log)
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	srv.ConfigureTLS(tlsConfig)
	apiSrv := &http.Server{
		Handler:           srv.Handler(),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	var adminSrv *http.Server
	var adminLn net.Listener
	var adminAPI *admin.API
	if cfg.Admin != nil {
		api, err := newAdmin(cfg, st, gate, log)
		if err != nil {
			return err
		}
		adminAPI = api
		raw, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
		closers = append(closers, func() { raw.Close() })
		// Capped below TLS: the admin API reads the operator's certificate
		// from the *tls.Conn, which a wrapper above it would hide.
		adminLn = tls.NewListener(connlimit.NewListener(raw, adminConns, "admin-api", log), admin.TLSConfig(cert))
		adminSrv = api.Server()
	}
	var gw *gateway.Gateway
	if cfg.Gateway != nil {
		if gw, err = gateway.New(cfg.Gateway.Interface, -1, gatewayTimeout(cfg.Gateway.Sync)); err != nil {
			return err
		}
		closers = append(closers, func() { gw.Close() })
	}
	var tftpConn net.PacketConn
	var bootLn net.Listener
	if files != nil {
		if c := cfg.BootFiles.TFTP; c != "" {
			if tftpConn, err = net.ListenPacket("udp4", c); err != nil {
				return fmt.Errorf("tftp: %w", err)
			}
			closers = append(closers, func() { tftpConn.Close() })
		}
		if c := cfg.BootFiles.HTTP; c != "" {
			if bootLn, err = net.Listen("tcp", c); err != nil {
				return fmt.Errorf("boot files over HTTP: %w", err)
			}
			closers = append(closers, func() { bootLn.Close() })
		}
	}

	// Serve. From here on each component closes what it bound.
	closers = nil
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-gctx.Done()
		if err := notify("STOPPING=1"); err != nil {
			log.Warn("notify systemd", "err", err)
		}
		return nil
	})
	if notifier != nil {
		g.Go(func() error { notifier.Run(gctx); return nil })
		log.Info("posting incident alerts", "url", cfg.Webhook.URL)
	}
	if metricsSrv != nil {
		g.Go(func() error { return named("metrics", serveHTTP(gctx, metricsSrv, metricsLn, false, opt.Drain)) })
		log.Info("serving metrics", "addr", metricsLn.Addr().String())
	}
	if adminSrv != nil {
		g.Go(func() error { return named("admin API", serveHTTP(gctx, adminSrv, adminLn, false, opt.Drain)) })
		log.Info("serving the admin API and dashboard to operators", "addr", adminLn.Addr().String(), "url", cfg.Admin.URL)
	}
	g.Go(func() error { prune(gctx, st, retention, pruneEvery, log.With("component", "retention")); return nil })
	log.Info("pruning the store", "max_age", retention.MaxAge, "every", pruneEvery, "batch", retention.Batch,
		"stored_failures", limits.StoredFailures, "failure_window", limits.FailureWindow, "incident_failures", limits.IncidentFailures)
	if gw != nil {
		g.Go(func() error { reconcile(gctx, gw, gate.leases, st, cfg.Gateway.Sync, log); return nil })
		log.Info("admission at the gateway", "interface", cfg.Gateway.Interface,
			"sync", syncInterval(cfg.Gateway.Sync), "fail_closed_within", gw.Timeout())
	}
	if files != nil {
		lim := files.Limits()
		if tftpConn != nil {
			g.Go(func() error { return named("tftp", files.ServeTFTP(gctx, tftpConn)) })
			log.Info("serving boot files over TFTP", "addr", cfg.BootFiles.TFTP, "dir", cfg.BootFiles.Dir,
				"max_transfers", lim.TFTPTransfers.Total, "max_transfers_per_source", lim.TFTPTransfers.PerSource)
		}
		if bootLn != nil {
			g.Go(func() error { return named("boot files over HTTP", files.ServeHTTPOn(gctx, bootLn)) })
			log.Info("serving boot files over HTTP", "addr", cfg.BootFiles.HTTP, "dir", cfg.BootFiles.Dir,
				"max_conns", lim.HTTPConns.Total, "max_conns_per_source", lim.HTTPConns.PerSource)
		}
	}
	if gate != nil {
		g.Go(func() error { return gate.server.Serve(gctx, gate.conn) })
		log.Info("serving DHCP", "interface", cfg.DHCP.Interface, "server_ip", cfg.DHCP.ServerIP)
	}
	g.Go(func() error { return named("attestation API", serveHTTP(gctx, apiSrv, apiLn, true, opt.Drain)) })
	log.Info("serving attestation API", "addr", apiLn.Addr().String(), "policy", pol.Name, "policy_digest", pol.Digest(), "store", store.Redacted(cfg.Store))
	if err := notify("READY=1"); err != nil {
		log.Warn("notify systemd", "err", err)
	}
	if opt.Reload != nil {
		g.Go(func() error {
			for {
				select {
				case <-gctx.Done():
					return nil
				case <-opt.Reload:
					if gctx.Err() == nil {
						reload(cfg, srv, adminAPI, log)
					}
				}
			}
		})
	}
	err = g.Wait()
	if err != nil {
		log.Error("appliance stopped", "err", err)
	} else {
		log.Info("appliance stopped")
	}
	return err
}

// named prefixes a component's error with its name; nil stays nil.
func named(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", name, err)
}

// serveHTTP serves hs on ln (over TLS with hs.TLSConfig when useTLS) until
// ctx ends, then stops accepting, gives in-flight requests drain to finish
// and closes the connections left. It returns nil after ctx's end, or the
// error that stopped serving before it.
func serveHTTP(ctx context.Context, hs *http.Server, ln net.Listener, useTLS bool, drain time.Duration) error {
	served := make(chan error, 1)
	go func() {
		if useTLS {
			served <- hs.ServeTLS(ln, "", "")
		} else {
			served <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-served:
		ln.Close()
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	<-served
	return nil
}

// reload puts cfg's policy file and reference, read again, in force in srv
// and api (nil without an admin API), or logs why it cannot and keeps the
// policy in force.
func reload(cfg *config.Appliance, srv *server.Server, api *admin.API, log *slog.Logger) {
	_ = notify("RELOADING=1")
	defer func() { _ = notify("READY=1") }()
	pol, ref, err := cfg.ReloadPolicy()
	if err != nil {
		old := srv.Policy()
		log.Error("policy reload refused; the policy in force stays", "err", err, "policy", old.Name, "policy_digest", old.Digest())
		return
	}
	srv.SetPolicy(pol)
	if api != nil {
		api.SetPolicy(pol, ref, filepath.Base(cfg.PolicyReference))
	}
	log.Info("policy reloaded", "policy", pol.Name, "policy_digest", pol.Digest())
}

// newAdmin makes the operators' API: the operator CA (created on first
// start) and, with the DHCP gate, its leases.
func newAdmin(cfg *config.Appliance, st *store.SQLite, gate *dhcpGate, log *slog.Logger) (*admin.API, error) {
	if err := pki.InitOperators(cfg.Admin.Operators, 5*365*24*time.Hour); err != nil {
		return nil, err
	}
	ops, err := pki.LoadOperators(cfg.Admin.Operators, false)
	if err != nil {
		return nil, err
	}
	opt := admin.Options{Store: st, Operators: ops, Policy: cfg.Policy, Logger: log}
	if cfg.Reference != nil {
		opt.Reference, opt.ReferenceName = cfg.Reference, filepath.Base(cfg.PolicyReference)
	}
	if gate != nil {
		opt.Leases = adminLeases{gate.leases}
	}
	return admin.New(opt)
}

// registerShed exports the number of connections a listener shed.
func registerShed(reg *prometheus.Registry, listener string, shed func() uint64) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "bootgate_connections_shed_total",
		Help:        "Connections closed as soon as accepted because the listener's caps were full.",
		ConstLabels: prometheus.Labels{"listener": listener},
	}, func() float64 { return float64(shed()) }))
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
