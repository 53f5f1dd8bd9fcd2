package test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// logWatcher reads every partition's log as it grows, from the start, and
// keeps each entry: the ground truth of what the log held before the
// aggregators trimmed it. It reads far more often than a trim can happen
// (snapshots every 2s, and never below what is archived).
type logWatcher struct {
	mu      sync.Mutex
	entries map[int][]partlog.Entry
	err     error
	stop    context.CancelFunc
	done    chan struct{}
}

func watchLogs(rdb redis.UniversalClient, partitions int) *logWatcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &logWatcher{entries: map[int][]partlog.Entry{}, stop: cancel, done: make(chan struct{})}
	log := partlog.New(rdb, "clickagg")
	go func() {
		defer close(w.done)
		after := map[int]string{}
		for ctx.Err() == nil {
			for p := range partitions {
				got, err := log.Range(ctx, p, after[p], 10_000)
				if err != nil {
					if ctx.Err() == nil {
						w.mu.Lock()
						w.err = err
						w.mu.Unlock()
					}
					return
				}
				if len(got) == 0 {
					continue
				}
				// The watcher must never miss an entry: the first one it
				// reads after another must follow it in the stream.
				w.mu.Lock()
				w.entries[p] = append(w.entries[p], got...)
				w.mu.Unlock()
				after[p] = got[len(got)-1].ID
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return w
}

func (w *logWatcher) close() (map[int][]partlog.Entry, error) {
	w.stop()
	<-w.done
	return w.entries, w.err
}

// TestRawArchiveExactlyOnce runs a cluster whose aggregators archive their
// logs every 2s, SIGKILLs one of them while clicks flow, and checks against
// the log as a watcher saw it before any trim: every entry with events or
// a tick is in the archive exactly once, by partition and offset, with the
// same content; every acknowledged click is in it; and the logs in Redis
// were trimmed as far as the archive allowed.
func TestRawArchiveExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of a cluster archiving")
	}
	testRawArchiveExactlyOnce(t, filepath.Join(t.TempDir(), "archive"))
}

// TestRawArchiveExactlyOnceS3 is TestRawArchiveExactlyOnce with the
// archive in S3: a SeaweedFS server on loopback.
func TestRawArchiveExactlyOnceS3(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of a cluster archiving")
	}
	testRawArchiveExactlyOnce(t, testserver.S3Bucket(t))
}

func testRawArchiveExactlyOnce(t *testing.T, bucketURL string) {
	const partitions = 8
	c := newTestCluster(t, clusterSpec{
		partitions: partitions, coordinators: 1, routers: 2, aggregators: 2,
		aggregatorFlags: []string{"-aggregator.snapshot-interval=2s", "-archive.bucket=" + bucketURL, "-archive.interval=2s"},
		routerFlags:     []string{"-router.idle-watermark-lag=1h"},
	})
	rdb := c.redisClient()
	watcher := watchLogs(rdb, partitions)
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)

	start := time.Now().Truncate(time.Minute).Add(-10 * time.Minute)
	w := newWorkload(20261207, 60_000, 2_000, 8, start, 0.05, 0.02, 0, 200)
	ingest(t, w, c.ingestClients(), killAt(t, c.aggregators[0], len(w.batches)/2, 8))
	waitCaughtUp(t, cc, partitions, 2*time.Minute)

	// The routers' ticks close the last chunks.
	waitDataArchived(t, rdb, watcher, 2*time.Minute)
	seen, err := watcher.close()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	keys, checked := checkArchive(t, bucketURL, seen, w.unique)
	// The logs get trimmed: Redis lets go of what is archived and
	// snapshotted, at the next snapshot after the archive moved.
	testserver.Eventually(t, 30*time.Second, func() error {
		for p := range partitions {
			first, err := rdb.XRangeN(ctx, fmt.Sprintf("clickagg:{p%d}:log", p), "-", "+", 1).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			if len(first) > 0 && partlog.CompareIDs(first[0].ID, seen[p][0].ID) <= 0 {
				return fmt.Errorf("partition %d: log not trimmed yet", p)
			}
		}
		return nil
	})
	t.Logf("%d files; %d log entries archived exactly once; all %d acknowledged clicks in the archive; %s ... %s",
		len(keys), checked, len(w.unique), keys[0], keys[len(keys)-1])
}

// waitDataArchived waits until the archived offset of every partition has
// reached the last entry with clicks that the watcher has seen so far.
func waitDataArchived(t *testing.T, rdb redis.UniversalClient, watcher *logWatcher, timeout time.Duration) {
	t.Helper()
	lastData := map[int]string{}
	watcher.mu.Lock()
	for p, es := range watcher.entries {
		for _, e := range es {
			var le clickaggv1.LogEntry
			if err := proto.Unmarshal(e.Data, &le); err != nil {
				t.Fatal(err)
			}
			if len(le.Events) > 0 {
				lastData[p] = e.ID
			}
		}
	}
	watcher.mu.Unlock()
	waitArchived(t, rdb, lastData, timeout)
}

// waitArchived waits until the archived offset of each partition of last
// has reached the entry ID last holds for it.
func waitArchived(t *testing.T, rdb redis.UniversalClient, last map[int]string, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	testserver.Eventually(t, timeout, func() error {
		for p, id := range last {
			got, err := rdb.Get(ctx, fmt.Sprintf("clickagg:{p%d}:archived", p)).Result()
			if err != nil {
				return fmt.Errorf("partition %d: archived offset: %w", p, err)
			}
			if partlog.CompareIDs(got, id) < 0 {
				return fmt.Errorf("partition %d archived to %s, want %s", p, got, id)
			}
		}
		return nil
	})
}

// checkArchive checks the archive in bucket (a directory or URL) against the log as a
// watcher saw it (seen): every entry with events or a tick, up to each
// partition's last archived one, is in the archive exactly once, by
// partition and offset, with the same content; nothing else is; and every
// click of unique is in it. It returns the files, sorted, and the number
// of entries checked.
func checkArchive(t *testing.T, bucketURL string, seen map[int][]partlog.Entry, unique []click) (keys []string, checked int) {
	t.Helper()
	type loc struct {
		p  int
		id string
	}
	archived := map[loc]partlog.Entry{}
	last := map[int]string{}
	events := map[string]int{}
	keys = eachFile(t, bucketURL, "raw/", archive.ReadChunk, func(ch archive.Chunk) {
		es, err := ch.LogEntries()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			l := loc{ch.Partition, e.ID}
			if _, dup := archived[l]; dup {
				t.Fatalf("partition %d entry %s archived twice (again in %s)", l.p, l.id, ch.Key)
			}
			archived[l] = e
		}
		for _, r := range ch.Rows {
			events[r.EventID]++
		}
		if partlog.CompareIDs(ch.Last, last[ch.Partition]) > 0 {
			last[ch.Partition] = ch.Last
		}
	})
	// Every entry the log held up to each partition's last archived one
	// is in the archive, with the same events and tick; nothing else is.
	for p, es := range seen {
		for _, e := range es {
			// The last chunk may still be open.
			if partlog.CompareIDs(e.ID, last[p]) > 0 {
				break
			}
			var want clickaggv1.LogEntry
			if err := proto.Unmarshal(e.Data, &want); err != nil {
				t.Fatal(err)
			}
			if len(want.Events) == 0 && want.TickMs == 0 {
				continue
			}
			got, ok := archived[loc{p, e.ID}]
			if !ok {
				t.Fatalf("partition %d entry %s is missing from the archive", p, e.ID)
			}
			var g clickaggv1.LogEntry
			if err := proto.Unmarshal(got.Data, &g); err != nil {
				t.Fatal(err)
			}
			want.RouterId = ""
			if !proto.Equal(&g, &want) {
				t.Fatalf("partition %d entry %s differs in the archive", p, e.ID)
			}
			delete(archived, loc{p, e.ID})
			checked++
		}
	}
	for l := range archived {
		// Archiving went on after the watcher stopped, and the routers'
		// first ticks may have been archived and trimmed before it
		// started (before any click was sent): only entries between the
		// first and the last one it saw can be checked.
		es := seen[l.p]
		if partlog.CompareIDs(l.id, es[0].ID) >= 0 && partlog.CompareIDs(l.id, es[len(es)-1].ID) <= 0 {
			t.Fatalf("partition %d entry %s is archived but was never in the log", l.p, l.id)
		}
	}
	for _, cl := range unique {
		if events[cl.ev.EventId] == 0 {
			t.Fatalf("acknowledged click %s is not in the archive", cl.ev.EventId)
		}
	}
	slices.Sort(keys)
	return keys, checked
}
