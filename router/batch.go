package router

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/clickagg/clickagg/partlog"
)

// batcher appends the events of concurrent requests together (group
// commit): a request adds its events, by partition, to the open batch and
// waits until that batch has been appended. Up to concurrency requests at a
// time append a batch on behalf of all that joined it, one log entry per
// partition, in one pipelined Log.Append. Under light load a batch holds
// one request and is appended at once; under heavy load batches fill while
// the appends before them are in flight, so that log entries grow with the
// load and the per-entry costs (Redis commands, entry decoding in the
// aggregators) do not. A waiting request that gets a free slot starts the
// append of the oldest batch, so a batch is never left behind without a
// request waiting for it.
//
// A request waits at most timeout for its batch, however the append goes:
// a Redis that refuses connections makes the client retry its dials for
// seconds, and a hung one (stopped, or stalled on a disk) answers nothing
// until the client's own read timeout; neither honours the context's
// deadline. So the append runs in a goroutine of its own that keeps its
// slot until the client returns, while the requests fail with
// errAppendTimeout when their time is up. Their events may still be
// appended: like any failed append, the client retries them and the
// aggregators count each event id once.
type batcher struct {
	log      Log
	routerID string
	// maxEvents seals a batch: later requests open the next one, so that
	// no log entry grows without bound.
	maxEvents int
	// timeout bounds each Append, which runs detached from the context of
	// the request that starts it, and the wait of each request.
	timeout time.Duration
	// slots holds a token per append in flight.
	slots chan struct{}
	// inflight counts the appends running, which may outlive the requests
	// that started them.
	inflight sync.WaitGroup
	m        *metrics
	c        *counters
	full     *logFull

	mu sync.Mutex
	// queue holds the batches not taken by an appender yet, oldest first;
	// the last one is open while it has room.
	queue []*batch
}

// batch is the events of one or more requests, appended together.
type batch struct {
	// entries holds each partition's encoded events: the events field of
	// its LogEntry, concatenated (see logEvent.appendTo).
	entries  map[int][]byte
	counts   map[int]int // events by partition
	events   int
	requests int
	taken    bool // an appender has it; guarded by batcher.mu
	done     chan struct{}
	err      error // set before done is closed
}

func newBatcher(log Log, routerID string, concurrency, maxEvents int, timeout time.Duration) *batcher {
	return &batcher{log: log, routerID: routerID, maxEvents: maxEvents, timeout: timeout, slots: make(chan struct{}, concurrency)}
}

// add puts one request's events (by partition) into the open batch, or a
// new one when the open batch would grow past maxEvents.
func (b *batcher) add(byPart map[int][]byte, counts map[int]int, n int) *batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	var bt *batch
	if k := len(b.queue); k > 0 && b.queue[k-1].events+n <= b.maxEvents {
		bt = b.queue[k-1]
	} else {
		bt = &batch{entries: make(map[int][]byte, len(byPart)), counts: make(map[int]int, len(byPart)), done: make(chan struct{})}
		b.queue = append(b.queue, bt)
	}
	for p, evs := range byPart {
		if bt.entries[p] == nil {
			// The entry starts with its router_id; the events follow.
			bt.entries[p] = appendRouterID(make([]byte, 0, len(b.routerID)+2+len(evs)), b.routerID)
		}
		bt.entries[p] = append(bt.entries[p], evs...)
		bt.counts[p] += counts[p]
	}
	bt.events += n
	bt.requests++
	return bt
}

// errAppendTimeout fails the requests whose batch was not appended within
// the timeout. It does not wrap context.DeadlineExceeded: the caller's
// deadline did not pass, the log did not answer, which is UNAVAILABLE.
type errAppendTimeout time.Duration

func (e errAppendTimeout) Error() string {
	return fmt.Sprintf("the partition log did not answer within -router.append-timeout=%v", time.Duration(e))
}

// wait returns once bt has been appended (nil) or failed, starting the
// append of bt and batches before it when an append slot is free. It
// returns errAppendTimeout when bt is not appended within the timeout, and
// ctx's error early if the caller gives up; in both cases the events may
// still be appended.
func (b *batcher) wait(ctx context.Context, bt *batch) error {
	timer := time.NewTimer(b.timeout)
	defer timer.Stop()
	for {
		// Once bt is taken, only its append is waited for: a nil channel
		// disables the case that takes a slot.
		slots := b.slots
		b.mu.Lock()
		if bt.taken {
			slots = nil
		}
		b.mu.Unlock()
		select {
		case <-bt.done:
			return bt.err
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return errAppendTimeout(b.timeout)
		case slots <- struct{}{}:
			if next := b.takeNext(); next != nil {
				b.inflight.Add(1)
				go b.appendBatch(next)
			} else {
				<-b.slots
			}
		}
	}
}

// takeNext takes the oldest batch nobody has taken, if any.
func (b *batcher) takeNext() *batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		return nil
	}
	bt := b.queue[0]
	b.queue[0] = nil
	b.queue = b.queue[1:]
	bt.taken = true
	return bt
}

// appendBatch appends bt, reports the outcome to its requests and frees
// the slot its caller took.
func (b *batcher) appendBatch(bt *batch) {
	defer b.inflight.Done()
	defer func() { <-b.slots }()
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	err := b.append(ctx, bt)
	if err != nil && ctx.Err() != nil {
		// Our own deadline, not a caller's.
		err = fmt.Errorf("append %d events of %d requests: %w", bt.events, bt.requests, errAppendTimeout(b.timeout))
	}
	bt.err = err
	close(bt.done)
}

func (b *batcher) append(ctx context.Context, bt *batch) error {
	items := make([]partlog.Append, 0, len(bt.entries))
	parts := make([]int, 0, len(bt.entries))
	for p := range bt.entries {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	for _, p := range parts {
		items = append(items, partlog.Append{Partition: p, Data: bt.entries[p]})
	}
	start := time.Now()
	_, err := b.log.Append(ctx, items)
	b.m.appendDuration.Observe(time.Since(start).Seconds())
	b.full.note(err)
	if err != nil {
		b.m.appendFailures.Inc()
		b.c.appendFailures.Add(1)
		return fmt.Errorf("append %d events of %d requests to %d partitions: %w", bt.events, bt.requests, len(items), err)
	}
	b.m.appends.Add(float64(len(items)))
	for _, p := range parts {
		b.m.entryEvents.Observe(float64(bt.counts[p]))
	}
	return nil
}
