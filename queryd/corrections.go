package queryd

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/tally"
)

// corrections queues the minutes that a recount (clickagg recalc -apply)
// corrected, for the publisher to publish again: their lists were
// published from the counts the recount replaced. They may be far older
// than the republish horizon, so the revision sums that find late clicks
// do not cover them.
type corrections struct {
	mu      sync.Mutex
	seen    int  // the latest applied revision queued
	started bool // the applied revisions were read once
	queue   []correction
}

// correction is a range of minutes [from, to) and the revision that
// corrected it: a list computed from an answer of an older revision is
// not the corrected one yet.
type correction struct {
	from, to int64
	revision int
}

// applied queues the minutes of the revisions in a not queued yet. On the
// first call every applied revision counts: a queryd that starts after an
// apply still republishes what it corrected; publishing compares with what
// the store holds, so nothing is published twice.
func (c *corrections) applied(a history.Applied) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range a.Revisions {
		if r.Revision > c.seen || !c.started {
			c.queue = append(c.queue, correction{from: r.From, to: r.To, revision: r.Revision})
		}
	}
	c.seen, c.started = max(c.seen, a.Version()), true
}

// take returns up to n queued minutes from oldest on, each with the
// revision that corrected it, dropping minutes before oldest (whose
// published lists expired).
func (c *corrections) take(n int, oldest int64) []correction {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []correction
	for len(c.queue) > 0 && len(out) < n {
		q := &c.queue[0]
		q.from = max(q.from, oldest)
		if q.from >= q.to {
			c.queue = c.queue[1:]
			continue
		}
		out = append(out, correction{from: q.from, to: q.from + 1, revision: q.revision})
		q.from++
	}
	return out
}

// requeue puts minutes back at the front, to be tried again.
func (c *corrections) requeue(cs []correction) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue = append(slices.Clone(cs), c.queue...)
}

// setApplied is the watch callback of the applied history revisions.
func (q *Queryd) setApplied(data []byte) error {
	a, err := history.DecodeApplied(data)
	if err != nil {
		return err
	}
	q.corr.applied(a)
	return nil
}

// republishCorrected publishes again the published lists of up to
// maxFixesPerPoll corrected minutes that differ from what the store holds.
// A minute the store does not hold (never published, or expired) stays so.
func (q *Queryd) republishCorrected(ctx context.Context) error {
	oldest := tally.MinuteOf(q.now().Add(-q.cfg.PublishTTL).UnixMilli())
	cs := q.corr.take(maxFixesPerPoll, oldest)
	if len(cs) == 0 {
		return nil
	}
	minutes := make([]int64, len(cs))
	for i, c := range cs {
		minutes[i] = c.from
	}
	stored, err := q.pubs.Load(ctx, minutes)
	if err != nil {
		q.corr.requeue(cs)
		return fmt.Errorf("read corrected minutes: %w", err)
	}
	for i, c := range cs {
		old, had := decodeStored(stored[i])
		if !had {
			continue
		}
		ads, _, rev, err := q.topRev(ctx, c.from, c.from+1, q.cfg.PublishCount, Filter{})
		if err == nil && rev < int64(c.revision) {
			err = fmt.Errorf("owners still answer from history revision %d", rev)
		}
		if err != nil {
			q.corr.requeue(cs[i:])
			return fmt.Errorf("top of corrected minute %d (revision %d): %w", c.from, c.revision, err)
		}
		if slices.Equal(old, ads) && !q.unannounced[c.from] {
			continue
		}
		if err := q.publishMinute(ctx, c.from, ads); err != nil {
			q.corr.requeue(cs[i:])
			return err
		}
		q.m.published.Inc()
		q.lg.Info("published top list", "minute", c.from, "ads", len(ads), "correction", true, "history_revision", c.revision)
	}
	return nil
}
