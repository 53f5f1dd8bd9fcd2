package health

import "github.com/prometheus/client_golang/prometheus"

var checkPassingDesc = prometheus.NewDesc("clickagg_health_check_passing",
	"1 if the readiness check passed in the last round (every -health.check-interval), 0 if it failed, by check: etcd (a read of the cluster's configuration), redis (a write, or a PING where the role only reads), redis identity, split table, partitions, owners.",
	[]string{"check"}, nil)

// Describe implements prometheus.Collector: the checker exports the
// outcome of each check of its last round, so that an alert can tell etcd
// or Redis being unreachable from the process being down, which /readyz
// alone cannot (a scrape only sees 503).
func (c *Checker) Describe(ch chan<- *prometheus.Desc) { ch <- checkPassingDesc }

// Collect implements prometheus.Collector. Before the first round there is
// nothing to report: a check not run yet has neither passed nor failed.
func (c *Checker) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	passed := c.passed
	c.mu.Unlock()
	for i, ok := range passed {
		v := 0.0
		if ok {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(checkPassingDesc, prometheus.GaugeValue, v, c.checks[i].name)
	}
}
