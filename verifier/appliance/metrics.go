package appliance

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bootgate/bootgate/verifier/dhcpgate"
	"github.com/bootgate/bootgate/verifier/store"
)

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
