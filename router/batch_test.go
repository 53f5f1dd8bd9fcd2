package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// gatedLog holds the first Append until the gate opens, then passes every
// Append to the real log, or fails it with failWith.
type gatedLog struct {
	log  *partlog.Log
	gate chan struct{}
	// entered, if not nil, is closed when the first append is held.
	entered  chan struct{}
	once     sync.Once
	failWith error
}

func (g *gatedLog) Append(ctx context.Context, items []partlog.Append) ([]string, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		if g.entered != nil {
			close(g.entered)
		}
		<-g.gate
		return g.log.Append(ctx, items)
	}
	if g.failWith != nil {
		return nil, g.failWith
	}
	return g.log.Append(ctx, items)
}

// queued returns the requests in the batches not taken yet.
func (b *batcher) queued() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []int
	for _, bt := range b.queue {
		out = append(out, bt.requests)
	}
	return out
}

// TestGroupCommit: while one append is in flight (and the only slot is
// busy), concurrent requests join one batch, appended as one log entry per
// partition once the slot frees; a batch is sealed at MaxBatchEvents; and
// every acknowledged event is in the log exactly once.
func TestGroupCommit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		maxBatch  int
		wantQueue []int
		fail      bool
	}{
		{"one-batch", 1000, []int{20}, false},
		{"sealed-at-max", 25, []int{2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, false},
		{"failed-batch", 1000, []int{20}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := testserver.RedisClient(t)
			prefix := "gc-" + tc.name
			parts := partitioner(t, 4)
			gl := &gatedLog{log: partlog.New(rdb, prefix), gate: make(chan struct{})}
			if tc.fail {
				gl.failWith = errors.New("injected failure")
			}
			cfg := testConfig(t)
			cfg.AppendConcurrency = 1
			cfg.MaxEvents = 10
			cfg.MaxBatchEvents = tc.maxBatch
			r := New(cfg, testID, parts, gl, nil, fixedClock(t0))

			// The first request takes the only slot and blocks in Append.
			type result struct {
				accepted int64
				err      error
			}
			first := make(chan result, 1)
			go func() {
				n, _, err := r.Ingest(context.Background(), []*clickaggv1.ClickEvent{click("first", "ad-0", t0)})
				first <- result{n, err}
			}()
			testserver.Eventually(t, 10*time.Second, func() error {
				if q := r.batches.queued(); len(q) != 0 || len(r.batches.slots) != 1 {
					return fmt.Errorf("first request not appending yet: queue %v", q)
				}
				return nil
			})
			// 20 requests of 10 events over two ads (two partitions at most).
			results := make(chan result, 20)
			for i := range 20 {
				go func() {
					var evs []*clickaggv1.ClickEvent
					for j := range 10 {
						evs = append(evs, click(fmt.Sprintf("r%d-%d", i, j), "ad-"+strconv.Itoa(j%2), t0))
					}
					n, _, err := r.Ingest(context.Background(), evs)
					results <- result{n, err}
				}()
			}
			testserver.Eventually(t, 10*time.Second, func() error {
				q := r.batches.queued()
				sum := 0
				for _, n := range q {
					sum += n
				}
				if sum != 20 {
					return fmt.Errorf("batches %v hold %d requests, want 20", q, sum)
				}
				return nil
			})
			if got := r.batches.queued(); fmt.Sprint(got) != fmt.Sprint(tc.wantQueue) {
				t.Fatalf("requests per batch %v, want %v", got, tc.wantQueue)
			}
			close(gl.gate)
			if res := <-first; res.err != nil || res.accepted != 1 {
				t.Fatalf("first request: %+v", res)
			}
			for range 20 {
				res := <-results
				if tc.fail {
					if !errors.Is(res.err, ErrLogUnavailable) || res.accepted != 0 {
						t.Fatalf("request of a failed batch: %+v, want %v", res, ErrLogUnavailable)
					}
				} else if res.err != nil || res.accepted != 10 {
					t.Fatalf("request: %+v", res)
				}
			}
			// What the log holds: every event of every acknowledged request
			// once, in one entry per partition per batch.
			seen := map[string]int{}
			entries := 0
			for p := range parts.Partitions() {
				es, err := rdb.XRange(context.Background(), partlog.Key(prefix, p), "-", "+").Result()
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range es {
					var le clickaggv1.LogEntry
					if err := proto.Unmarshal([]byte(e.Values["d"].(string)), &le); err != nil {
						t.Fatal(err)
					}
					entries++
					for _, ev := range le.Events {
						seen[ev.EventId]++
					}
				}
			}
			wantEvents := 201
			if tc.fail {
				wantEvents = 1
			}
			if len(seen) != wantEvents {
				t.Errorf("log holds %d distinct events, want %d", len(seen), wantEvents)
			}
			for id, n := range seen {
				if n != 1 {
					t.Errorf("event %s appended %d times", id, n)
				}
			}
			adParts := map[int]bool{parts.Partition("ad-0"): true, parts.Partition("ad-1"): true}
			wantEntries := 1
			if !tc.fail {
				wantEntries += len(tc.wantQueue) * len(adParts)
			}
			if entries != wantEntries {
				t.Errorf("log holds %d entries, want %d (1 + batches × partitions)", entries, wantEntries)
			}
		})
	}
}

// TestStreamRequestsAppendTogether: requests in flight on one IngestStream
// are ingested at once: while the first one's append is held, the next
// ones wait in one batch; the responses come back in request order.
func TestStreamRequestsAppendTogether(t *testing.T) {
	rdb := testserver.RedisClient(t)
	parts := partitioner(t, 4)
	gl := &gatedLog{log: partlog.New(rdb, "gc-stream"), gate: make(chan struct{}), entered: make(chan struct{})}
	cfg := testConfig(t)
	cfg.AppendConcurrency = 1
	r := New(cfg, testID, parts, gl, nil, fixedClock(t0))
	c := startGRPC(t, r)
	stream, err := c.IngestStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{1, 2, 3, 4}
	for i, n := range sizes {
		var evs []*clickaggv1.ClickEvent
		for j := range n {
			evs = append(evs, click(fmt.Sprintf("s%d-%d", i, j), "ad-1", t0))
		}
		if err := stream.Send(&clickaggv1.IngestStreamRequest{Events: evs}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// The stream ingests its requests concurrently: only once
			// the first one's append is held can the others not join
			// its batch.
			<-gl.entered
		}
	}
	testserver.Eventually(t, 10*time.Second, func() error {
		if q := r.batches.queued(); fmt.Sprint(q) != "[3]" {
			return fmt.Errorf("batches waiting %v, want one of the 3 requests after the first", q)
		}
		return nil
	})
	close(gl.gate)
	for i, n := range sizes {
		resp, err := stream.Recv()
		if err != nil || resp.Accepted != int64(n) {
			t.Fatalf("response %d: %v, %v; want %d accepted", i, resp, err, n)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("after the last response: %v, want EOF", err)
	}
}
