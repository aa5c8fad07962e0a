package admin

import (
	"context"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/store"
)

// BenchmarkFleet measures the admin API as the CLI and the dashboard use it,
// over loopback TLS with an operator certificate, on a store with 10 000
// hosts and 1 000 open incidents (each with a real failing log and the
// host's real passing log before it).
func BenchmarkFleet(b *testing.B) {
	f := newFixture(b)
	start := time.Now()
	f.seed(b, 10000, 1000, 0)
	b.Logf("seeded 10000 hosts and 1000 incidents in %.1f s", time.Since(start).Seconds())
	ctx := context.Background()
	c := f.client
	run := func(name string, op func() error) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := op(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("whoami", func() error { _, err := c.WhoAmI(ctx); return err }) // the round trip alone
	run("summary", func() error { _, err := c.Summary(ctx); return err })
	run("hosts-first-page", func() error {
		p, err := c.Hosts(ctx, store.HostQuery{Limit: 100})
		if err == nil && len(p.Hosts) != 100 {
			b.Fatalf("%d hosts", len(p.Hosts))
		}
		return err
	})
	run("hosts-page-9000", func() error { _, err := c.Hosts(ctx, store.HostQuery{After: hostName(9000), Limit: 100}); return err })
	run("hosts-quarantined-page", func() error {
		_, err := c.Hosts(ctx, store.HostQuery{State: store.HostQuarantined, Limit: 100})
		return err
	})
	run("hosts-by-prefix", func() error {
		p, err := c.Hosts(ctx, store.HostQuery{Prefix: hostName(7777), Limit: 100})
		if err == nil && len(p.Hosts) != 1 {
			b.Fatalf("%d hosts", len(p.Hosts))
		}
		return err
	})
	run("hosts-all-10000", func() error {
		n, q := 0, store.HostQuery{Limit: MaxLimit}
		for {
			p, err := c.Hosts(ctx, q)
			if err != nil {
				return err
			}
			n += len(p.Hosts)
			if p.Next == "" {
				break
			}
			q.After = p.Next
		}
		if n != 10000 {
			b.Fatalf("%d hosts", n)
		}
		return nil
	})
	run("incidents-unresolved-page", func() error {
		_, err := c.Incidents(ctx, store.IncidentQuery{State: store.Unresolved, Limit: 100})
		return err
	})
	run("incident-open", func() error {
		d, err := c.Incident(ctx, 500)
		if err == nil && d.Diff.Against != "last_pass" {
			b.Fatalf("diff %+v", d.Diff)
		}
		return err
	})
	run("incident-bundle", func() error { _, err := c.Bundle(ctx, 500); return err })
}
