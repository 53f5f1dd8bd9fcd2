package coordinator

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// WithClock sets the clock that the watermark delays of the status
// summary are measured against (default time.Now): tests inject theirs.
func WithClock(now func() time.Time) Option {
	return func(c *Coordinator) { c.now = now }
}

// Summary is a ClusterStatus rolled up per aggregator and for the whole
// cluster: what an operator reads first, a few lines whatever the
// partition count (GetClusterStatus with summary, clickagg status).
type Summary struct {
	ClusterStatus
	// Owners are the live aggregators and any other member the assignment
	// names, by ID.
	Owners []OwnerSummary
	Totals Totals
}

// OwnerSummary sums the reports of one aggregator's partitions.
type OwnerSummary struct {
	Member string
	// Partitions are assigned to it, reported or not; Serving and
	// Restoring count the reported ones by state, Unavailable the others.
	Partitions, Serving, Restoring, Unavailable int
	Rollup
	// MinWatermark is the smallest watermark of its partitions; zero
	// unless every partition assigned to it reported one.
	MinWatermark time.Time
	// Draining: an operator drains it, or it is shutting down (leaving).
	Draining bool
}

// Totals sums the reports of every partition.
type Totals struct {
	// Serving and Restoring count the reported partitions by state,
	// Unavailable those without an owner or a report.
	Serving, Restoring, Unavailable int
	Rollup
	// HandoffsInProgress counts the handoffs to the current owners that
	// have not finished: the new owner does not serve yet.
	HandoffsInProgress int
	// Splits counts the open splits.
	Splits int
	// IngestAccepted, IngestRejected and IngestPerSecond sum the answers
	// of the routers (ClusterStatus.Routers): each counts since its
	// router started. RoutersUnavailable counts the live routers missing
	// from those sums.
	IngestAccepted, IngestRejected int64
	IngestPerSecond                float64
	RoutersUnavailable             int
}

// Rollup is what sums (or maxes) over a set of partition reports.
type Rollup struct {
	Lag                           int64
	MaxLagSeconds                 float64
	EventsPerSecond               float64
	EventsApplied                 int64
	DuplicatesDropped, LateEvents int64
}

func (r *Rollup) add(ps *clickaggv1.PartitionStatus) {
	r.Lag += ps.GetLag()
	r.MaxLagSeconds = max(r.MaxLagSeconds, ps.GetLagSeconds())
	r.EventsPerSecond += ps.GetEventsPerSecond()
	r.EventsApplied += ps.GetEventsApplied()
	r.DuplicatesDropped += ps.GetDuplicatesDropped()
	r.LateEvents += ps.GetLateEvents()
}

// Summary is Status rolled up, with the drains, the handoffs in progress
// and the number of open splits read from etcd.
func (c *Coordinator) Summary(ctx context.Context) (Summary, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return Summary{}, err
	}
	draining, err := c.cl.Draining(ctx)
	if err != nil {
		return Summary{}, err
	}
	handoffs, err := c.cl.Handoffs(ctx)
	if err != nil {
		return Summary{}, err
	}
	var splits []hotkey.Interval
	if c.hk != nil {
		t, _, err := c.hk.store.Load(ctx)
		if err != nil {
			return Summary{}, err
		}
		splits = t.Splits()
	}
	return summarize(st, draining, handoffs, splits), nil
}

// summarize rolls st up. It is pure, so that the arithmetic is tested on
// exact numbers; the watermark delays are left to the caller, who owns
// the clock.
func summarize(st ClusterStatus, draining map[string]time.Time, handoffs []cluster.Handoff, splits []hotkey.Interval) Summary {
	out := Summary{ClusterStatus: st}
	reported := make(map[int]*clickaggv1.PartitionStatus, len(st.Reports))
	for _, ps := range st.Reports {
		reported[int(ps.GetPartition())] = ps
	}
	byMember := map[string]*OwnerSummary{}
	owner := func(id string) *OwnerSummary {
		o := byMember[id]
		if o == nil {
			_, d := draining[id]
			o = &OwnerSummary{Member: id, Draining: d}
			byMember[id] = o
		}
		return o
	}
	for _, m := range st.Members {
		if m.Role != cluster.RoleAggregator {
			continue
		}
		if o := owner(m.ID); m.Leaving {
			o.Draining = true
		}
	}
	// missingWatermark: members with a partition that has no watermark.
	missingWatermark := map[string]bool{}
	for p := range st.Partitions {
		var id string
		if p < len(st.Owners) {
			id = st.Owners[p].Member
		}
		ps := reported[p]
		if ps == nil {
			out.Totals.Unavailable++
		}
		if id == "" {
			continue
		}
		o := owner(id)
		o.Partitions++
		if ps == nil {
			o.Unavailable++
			missingWatermark[id] = true
			continue
		}
		switch ps.GetState() {
		case "serving":
			o.Serving++
			out.Totals.Serving++
		case "restoring":
			o.Restoring++
			out.Totals.Restoring++
		}
		o.add(ps)
		out.Totals.add(ps)
		if ps.GetWatermark() == nil {
			missingWatermark[id] = true
			continue
		}
		if w := ps.GetWatermark().AsTime(); o.MinWatermark.IsZero() || w.Before(o.MinWatermark) {
			o.MinWatermark = w
		}
	}
	for id, o := range byMember {
		if missingWatermark[id] {
			o.MinWatermark = time.Time{}
		}
		out.Owners = append(out.Owners, *o)
	}
	slices.SortFunc(out.Owners, func(x, y OwnerSummary) int { return cmp.Compare(x.Member, y.Member) })
	for _, h := range handoffs {
		// A record of an earlier epoch that never finished was
		// superseded by a later move of its partition, not in progress.
		if h.Serving.IsZero() && h.Partition < len(st.Owners) && st.Owners[h.Partition].Epoch == h.Epoch {
			out.Totals.HandoffsInProgress++
		}
	}
	for _, iv := range splits {
		if iv.Open() {
			out.Totals.Splits++
		}
	}
	for _, rs := range st.Routers {
		out.Totals.IngestAccepted += rs.GetAccepted()
		out.Totals.IngestRejected += rs.GetRejected()
		out.Totals.IngestPerSecond += rs.GetAcceptedPerSecond()
	}
	out.Totals.RoutersUnavailable = len(st.UnavailableRouters)
	return out
}
