package router

import (
	"sync/atomic"
	"time"

	"github.com/clickagg/clickagg/persecond"
)

// Stats is what a router ingested since it started (RouterStatus): exact
// counts, not estimates. They start at zero with the process, so a total
// falls when a router restarts; rates come from AcceptedPerSecond.
type Stats struct {
	ID                           string
	Started                      time.Time
	Requests, Accepted, Rejected int64
	AppendFailures               int64
	AcceptedPerSecond            float64
}

// counters are the totals behind Stats, kept beside the metrics: the
// Prometheus counters are floats meant for scraping, these are read back
// exactly by RouterStatus.
type counters struct {
	requests, accepted, rejected, appendFailures atomic.Int64
	accepting                                    *persecond.Counter
}

// Stats returns what the router ingested since it was created.
func (r *Router) Stats() Stats {
	now := r.now()
	return Stats{
		ID:                r.id,
		Started:           r.started,
		Requests:          r.c.requests.Load(),
		Accepted:          r.c.accepted.Load(),
		Rejected:          r.c.rejected.Load(),
		AppendFailures:    r.c.appendFailures.Load(),
		AcceptedPerSecond: r.c.accepting.Rate(now),
	}
}
