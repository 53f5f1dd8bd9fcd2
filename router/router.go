package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/breakage"
	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/persecond"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
)

// Log is the partition log as the router needs it. *partlog.Log satisfies it.
type Log interface {
	// Append appends every item and returns only after the log answered for
	// all of them; an error means none may be treated as appended.
	Append(ctx context.Context, items []partlog.Append) ([]string, error)
}

// Splits is the router's copy of the hot-key split table;
// *hotkey.Follower satisfies it.
type Splits interface {
	// Table returns the table to route with, or an error when the copy may
	// be stale (hotkey.ErrStale): routing with an old table could send a
	// retried click to another partition than its first copy.
	Table() (*hotkey.Table, error)
}

// Errors that fail a whole request. The gRPC adapter maps them to status
// codes.
var (
	ErrNoEvents       = errors.New("router: request has no events")
	ErrTooManyEvents  = errors.New("router: request has too many events")
	ErrLogUnavailable = errors.New("router: partition log unavailable, retry the request")
	// ErrLogFull: Redis refuses appends for lack of memory. The client
	// retries later, as for ErrLogUnavailable; operators must free memory
	// (see clickagg_router_log_full).
	ErrLogFull = errors.New("router: partition log store is full (Redis out of memory), retry later")
	// ErrSplitsUnavailable: the router's split table may be stale, so it
	// routes nothing; the client retries, here or at another router.
	ErrSplitsUnavailable = errors.New("router: split table unavailable, retry the request")
)

// Option configures a Router beyond its Config.
type Option func(*Router)

// WithSplits makes the router route split ads by the table of s
// (hotkey.Table.Route) and refuse every request while s fails. Without it,
// every click goes to its ad's partition: right only for a cluster that
// never splits (tests).
func WithSplits(s Splits) Option {
	return func(r *Router) { r.splits = s }
}

// Router validates click events and appends them to their partitions' logs.
type Router struct {
	cfg Config
	// id is written into every log entry so that an entry can be traced
	// back to the router that appended it.
	id    string
	parts *ring.Partitioner
	log   Log
	lg    *slog.Logger
	now   func() time.Time
	// splits is nil when the router has no split table (WithSplits).
	splits Splits
	// batches appends the events of concurrent requests together.
	batches *batcher

	// maxAccepted is the largest click_time_ms appended so far. It is
	// raised only after the append succeeded, so that a tick never carries
	// an event time whose event might not be in the log.
	maxAccepted atomic.Int64

	reg prometheus.Registerer // nil without WithMetrics
	m   *metrics
	// started and c are what Stats reports (RouterStatus).
	started time.Time
	c       *counters
	// full tracks whether the log store refuses appends for memory.
	full *logFull
	// mem is the store whose memory bounds ingest (WithMemoryBound), and
	// bound the state of that bound; both nil without the option.
	mem   Memory
	bound *memoryBound
}

// logFull tracks whether Redis refuses appends for lack of memory, from
// the outcome of every append (batches and ticks), and says so once per
// change: in the gauge, and in one log line, not one per request.
type logFull struct {
	full  atomic.Bool
	gauge prometheus.Gauge
	lg    *slog.Logger
}

// note records the outcome of an append. Errors other than a full store
// (Redis down, a timeout) say nothing about memory and change nothing.
func (f *logFull) note(err error) {
	switch {
	case err == nil:
		if f.full.CompareAndSwap(true, false) {
			f.gauge.Set(0)
			f.lg.Info("partition log store accepts appends again")
		}
	case errors.Is(err, partlog.ErrFull):
		if f.full.CompareAndSwap(false, true) {
			f.gauge.Set(1)
			f.lg.Error("partition log store is full: Redis refuses appends (maxmemory reached); ingest fails with UNAVAILABLE until memory is freed", "err", err)
		}
	}
}

// New returns a router named id that appends to log. now is the clock (nil
// means time.Now); lg nil discards logs. cfg must have passed Validate, and
// id ValidateID; an empty id becomes hostname-pid.
func New(cfg Config, id string, parts *ring.Partitioner, log Log, lg *slog.Logger, now func() time.Time, opts ...Option) *Router {
	if id == "" {
		id = defaultID()
	}
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	// Zero values (a Config built in code, not from flags) mean the
	// defaults.
	if cfg.AppendConcurrency == 0 {
		cfg.AppendConcurrency = DefaultAppendConcurrency
	}
	if cfg.MaxBatchEvents == 0 {
		cfg.MaxBatchEvents = max(DefaultMaxBatchEvents, cfg.MaxEvents)
	}
	if cfg.AppendTimeout == 0 {
		cfg.AppendTimeout = DefaultAppendTimeout
	}
	if cfg.StreamWindow == 0 {
		cfg.StreamWindow = DefaultStreamWindow
	}
	r := &Router{cfg: cfg, id: id, parts: parts, log: log, lg: lg.With("router", id), now: now, m: newMetrics(), started: now()}
	r.c = &counters{accepting: persecond.New(r.started)}
	r.full = &logFull{gauge: r.m.logFull, lg: r.lg}
	r.batches = newBatcher(log, id, cfg.AppendConcurrency, cfg.MaxBatchEvents, cfg.AppendTimeout)
	r.batches.m = r.m
	r.batches.c = r.c
	r.batches.full = r.full
	for _, o := range opts {
		o(r)
	}
	if r.mem != nil {
		interval := cfg.MemoryCheckInterval
		if interval == 0 {
			interval = DefaultMemoryCheckInterval
		}
		r.bound = &memoryBound{mem: r.mem, fraction: cfg.MaxRedisMemoryFraction, interval: interval, lg: r.lg, m: r.m}
	}
	if r.reg != nil {
		if err := register(r.reg, r.m.collectors()); err != nil {
			r.lg.Warn("register metrics", "err", err)
		}
	}
	return r
}

// Ingest validates events, appends the valid ones and returns how many were
// appended and why each other one was refused. A non-nil error fails the
// whole request and means nothing was acknowledged: the caller retries it,
// and the aggregators' dedup by (ad_id, event_id) absorbs what was
// appended anyway.
func (r *Router) Ingest(ctx context.Context, events []*clickaggv1.ClickEvent) (accepted int64, rejected []*clickaggv1.Rejection, err error) {
	r.m.requests.Inc()
	r.c.requests.Add(1)
	if len(events) == 0 {
		return 0, nil, ErrNoEvents
	}
	if len(events) > r.cfg.MaxEvents {
		return 0, nil, fmt.Errorf("%w: %d events, at most %d allowed", ErrTooManyEvents, len(events), r.cfg.MaxEvents)
	}
	// Before any work: the client retries the whole request later.
	if err := r.bound.refusal(); err != nil {
		return 0, nil, err
	}
	// One clock reading per request: every event of it is judged against
	// the same bounds.
	now := r.now()
	// The table is read after the clock, so that it is at least as fresh
	// as the moment the clicks are judged at: a copy confirmed within
	// -hotkey.max-staleness of now holds every change that can apply to a
	// click accepted now (see package hotkey).
	var splits *hotkey.Table
	if r.splits != nil {
		var err error
		if splits, err = r.splits.Table(); err != nil {
			return 0, nil, fmt.Errorf("%w: %w", ErrSplitsUnavailable, err)
		}
	}
	byPart := make(map[int][]byte)
	counts := make(map[int]int)
	maxMs := int64(0)
	for i, e := range events {
		ev, reason := r.validate(e, now)
		if reason != "" {
			rej := &clickaggv1.Rejection{Index: int32(i), Reason: reason}
			if idProblem("event_id", e.GetEventId(), r.cfg.MaxIDLength) == "" {
				rej.EventId = e.GetEventId()
			}
			rejected = append(rejected, rej)
			r.m.rejected[rejectReason(reason)].Inc()
			r.c.rejected.Add(1)
			continue
		}
		p := splits.Route(r.parts, ev.adID, ev.eventID, ev.ms)
		buf := byPart[p]
		if buf == nil {
			// Room for about twice a partition's share of the request, at
			// a typical 64 bytes per event, so that appends rarely grow it.
			buf = make([]byte, 0, 64*max(4, 2*len(events)/r.parts.Partitions()))
		}
		byPart[p] = ev.appendTo(buf)
		counts[p]++
		accepted++
		maxMs = max(maxMs, ev.ms)
	}
	if accepted == 0 {
		return 0, rejected, nil
	}
	err = ctx.Err()
	switch {
	case err != nil:
		// A caller already gone adds nothing to a batch.
	case breakage.On(breakage.AckBeforeRedis):
		// Broken on purpose: an acknowledged click is in the log
		// (docs/architecture.md, invariant 1). The append goes on in
		// the background and its failure is dropped, so a click
		// acknowledged while Redis is down, or just before the router
		// dies, is lost.
		bt := r.batches.add(byPart, counts, int(accepted))
		go func() { _ = r.batches.wait(context.Background(), bt) }()
	default:
		err = r.batches.wait(ctx, r.batches.add(byPart, counts, int(accepted)))
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			// The caller gave up; the log may be fine.
			return 0, nil, fmt.Errorf("append %d events to %d partitions: %w", accepted, len(byPart), ctxErr)
		}
		if errors.Is(err, partlog.ErrFull) {
			// Logged once, when the log store became full (logFull).
			return 0, nil, fmt.Errorf("%w: %w", ErrLogFull, err)
		}
		r.lg.Warn("append events", "events", accepted, "partitions", len(byPart), "err", err)
		return 0, nil, fmt.Errorf("%w: %w", ErrLogUnavailable, err)
	}
	r.raiseFrontier(maxMs)
	r.m.accepted.Add(float64(accepted))
	r.c.accepted.Add(accepted)
	r.c.accepting.Add(r.now(), accepted)
	return accepted, rejected, nil
}

// raiseFrontier makes maxAccepted at least ms. Many Ingest calls race here.
func (r *Router) raiseFrontier(ms int64) {
	for {
		cur := r.maxAccepted.Load()
		if ms <= cur || r.maxAccepted.CompareAndSwap(cur, ms) {
			return
		}
	}
}

// Run appends a tick to every partition now and then every TickInterval
// until ctx ends, and returns nil then. With WithMemoryBound it also reads
// the log store's memory every MemoryCheckInterval. A failed tick is logged and the next
// one is tried on schedule: ticks only move watermarks, so a missed one
// delays minutes and loses nothing.
//
// It returns only after the appends that Ingest started have ended: they
// may outlive their requests (see batcher).
func (r *Router) Run(ctx context.Context) error {
	defer r.batches.inflight.Wait()
	if r.bound != nil {
		var wg sync.WaitGroup
		wg.Go(func() { r.bound.run(ctx) })
		defer wg.Wait()
	}
	t := time.NewTicker(r.cfg.TickInterval)
	defer t.Stop()
	var last int64
	failed := 0
	for {
		var err error
		last, err = r.tick(ctx, last)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			failed++
			r.m.tickFailures.Inc()
			if !errors.Is(err, partlog.ErrFull) { // logged once by logFull
				r.lg.Warn("append tick", "tick_ms", last, "consecutive_failures", failed, "err", err)
			}
		case failed > 0:
			r.lg.Info("append tick recovered", "tick_ms", last, "failed_ticks", failed)
			failed = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// tick appends one tick to every partition and returns its frontier, which
// becomes last even if the append failed: some partitions may have received
// it, and a later tick must not go below it there.
func (r *Router) tick(ctx context.Context, last int64) (int64, error) {
	f := frontier(r.maxAccepted.Load(), r.now(), r.cfg.IdleLag, r.cfg.MaxSkew, last)
	if f <= 0 {
		// A zero tick_ms means "no tick" in the log format, and nothing
		// before 1970 is worth saying: a huge IdleLag right after start.
		return last, nil
	}
	data, err := proto.Marshal(&clickaggv1.LogEntry{RouterId: r.id, TickMs: f})
	if err != nil {
		return last, fmt.Errorf("encode tick: %w", err)
	}
	items := make([]partlog.Append, r.parts.Partitions())
	for p := range items {
		items[p] = partlog.Append{Partition: p, Data: data}
	}
	_, err = r.log.Append(ctx, items)
	r.full.note(err)
	if err != nil {
		return f, fmt.Errorf("append tick to %d partitions: %w", len(items), err)
	}
	return f, nil
}

// frontier is the event time a tick carries: the newest accepted click, or
// now-idleLag when that is later, never more than now+maxSkew, and never
// less than the last tick.
func frontier(maxAccepted int64, now time.Time, idleLag, maxSkew time.Duration, last int64) int64 {
	f := max(maxAccepted, now.Add(-idleLag).UnixMilli())
	f = min(f, now.Add(maxSkew).UnixMilli())
	return max(f, last)
}
