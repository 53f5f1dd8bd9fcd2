package aggregator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// WithRedisProbe gives the aggregator a check that its Redis works (a
// small write). An aggregator that gave its partitions back
// (Member.Unhealthy) asks for them again only once the probe has passed
// for -aggregator.claim-timeout; it may hold no partition by then, so no
// take or read would tell.
func WithRedisProbe(probe func(ctx context.Context) error) Option {
	return func(a *Aggregator) { a.probe = probe }
}

// setUnhealthyTimeout bounds the etcd write of the Unhealthy flag.
const setUnhealthyTimeout = 5 * time.Second

// Serving returns nil when the aggregator is registered, watches its
// assignment, has not given its partitions back, and serves every
// partition the assignment gives it (or has released it for a handoff);
// else an error that says which of these fails. It is the aggregator's
// readiness.
func (a *Aggregator) Serving() error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	switch {
	case !a.ready:
		return errors.New("not registered, or no assignment received yet")
	case a.unhealthy:
		return errors.New("gave its partitions back: it could not take or read them within -aggregator.claim-timeout")
	}
	var unserved []int
	for _, p := range slices.Sorted(maps.Keys(a.wanted)) {
		pt, ok := a.parts[p]
		if !ok || pt.state != stateServing && pt.state != stateReleased {
			unserved = append(unserved, p)
		}
	}
	if len(unserved) > 0 {
		return fmt.Errorf("%d of its %d partitions not serving yet: %v", len(unserved), len(a.wanted), unserved[:min(len(unserved), 8)])
	}
	return nil
}

// setWanted records the partitions the assignment gives the current
// incarnation, for Serving.
func (a *Aggregator) setWanted(want map[int]uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.wanted = maps.Clone(want)
}

// trouble follows how long the consumer has failed to take its partitions
// or to read their logs, and gives the partitions back when that lasts
// -aggregator.claim-timeout: another aggregator, whose Redis works, can
// serve them. The flag is cleared once Redis has worked for as long again,
// so that a flapping Redis does not move partitions back and forth faster
// than that. Every partition move is fenced by its epoch, so giving back
// and taking again never counts a click twice or loses one.
//
//	healthy ──take or read failing for claim-timeout──▶ unhealthy (flag set)
//	unhealthy ──takes, reads and probe pass for claim-timeout──▶ healthy
type trouble struct {
	takeFailing time.Time // since when takes fail; zero while they pass
	readFailing time.Time // since when reads fail; zero while they pass
	unhealthy   bool      // the flag is set in etcd
	okSince     time.Time // while unhealthy: since when everything passed
	nextProbe   time.Time
}

// failingSince returns the earliest ongoing failure, zero when none.
func (t *trouble) failingSince() time.Time {
	switch {
	case t.takeFailing.IsZero():
		return t.readFailing
	case t.readFailing.IsZero() || t.takeFailing.Before(t.readFailing):
		return t.takeFailing
	}
	return t.readFailing
}

// since returns s if it is set, else now.
func since(s, now time.Time) time.Time {
	if s.IsZero() {
		return now
	}
	return s
}

// checkHealth sets or clears the Unhealthy flag as trouble says.
func (c *consumer) checkHealth(ctx context.Context) {
	a, t, now := c.a, &c.trouble, time.Now()
	bound := a.cfg.claimTimeout()
	failing := t.failingSince()
	if !t.unhealthy {
		if failing.IsZero() || now.Sub(failing) < bound {
			return
		}
		if c.setUnhealthy(ctx, true) {
			t.unhealthy, t.okSince = true, time.Time{}
			c.lg.Warn("giving partitions back: cannot take or read them", "failing_for", now.Sub(failing).Round(time.Millisecond), "claim_timeout", bound)
		}
		return
	}
	if !failing.IsZero() {
		t.okSince = time.Time{}
		return
	}
	if a.probe != nil && !now.Before(t.nextProbe) {
		t.nextProbe = now.Add(min(bound/4, time.Second))
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := a.probe(pctx)
		cancel()
		if err != nil {
			t.okSince = time.Time{}
			return
		}
		t.okSince = since(t.okSince, now)
	}
	if a.probe == nil {
		t.okSince = since(t.okSince, now)
	}
	if t.okSince.IsZero() || now.Sub(t.okSince) < bound {
		return
	}
	if c.setUnhealthy(ctx, false) {
		t.unhealthy = false
		c.lg.Info("asking for partitions again: redis works", "for", now.Sub(t.okSince).Round(time.Millisecond))
	}
}

// setUnhealthy writes the flag to the member key and reports whether it
// was written; a failure is retried at the next check.
func (c *consumer) setUnhealthy(ctx context.Context, v bool) bool {
	sctx, cancel := context.WithTimeout(ctx, setUnhealthyTimeout)
	defer cancel()
	if err := c.reg.SetUnhealthy(sctx, v); err != nil {
		c.lg.Warn("set unhealthy", "unhealthy", v, "err", err)
		return false
	}
	a := c.a
	a.mu.Lock()
	a.unhealthy = v
	a.mu.Unlock()
	return true
}
