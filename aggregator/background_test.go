package aggregator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/snapshot"
)

// slowStore is the real store with every Save delayed by up to 30ms, so
// that background snapshot writes overlap applying, and each other. It
// records what the aggregator must never do: two writes of one partition
// at once, or a snapshot stored after a newer one of the same partition.
type slowStore struct {
	SnapshotStore
	mu       sync.Mutex
	busy     map[int]bool
	stored   map[int]string // partition → offset of the newest stored snapshot
	overlaps int
	backward []string
	saves    int
}

func (s *slowStore) Save(ctx context.Context, p int, w snapshot.Write) error {
	s.mu.Lock()
	if s.busy[p] {
		s.overlaps++
	}
	s.busy[p] = true
	s.mu.Unlock()
	time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
	err := s.SnapshotStore.Save(ctx, p, w)
	off := metaOffset(w.Meta)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy[p] = false
	if err == nil {
		s.saves++
		if prev, ok := s.stored[p]; ok && partlog.CompareIDs(off, prev) < 0 {
			s.backward = append(s.backward, fmt.Sprintf("partition %d: stored %s after %s", p, off, prev))
		}
		s.stored[p] = off
	}
	return err
}

// TestSnapshotsInBackground applies while snapshots of the same partitions
// are being written, then checks that every answer is exact, that a
// partition's writes never overlap nor go back in time, that the final
// snapshots hold everything applied, and that a new owner restoring them
// answers exactly.
func TestSnapshotsInBackground(t *testing.T) {
	const parts = 6
	e := newEnv(t, parts)
	cfg := testConfig("agg-0")
	cfg.SnapshotInterval = 5 * time.Millisecond
	cfg.ApplyParallelism = 3
	slow := &slowStore{busy: make(map[int]bool), stored: make(map[int]string)}
	a := e.start(cfg, e.cl, nil, func(a *Aggregator) {
		slow.SnapshotStore = a.store
		a.store = slow
	})
	m1 := member(t, e.cl, "agg-0", 0)
	e.assign(owners(parts, m1, 1))

	w := newWorkload(e)
	for i := range 40 {
		w.fresh(30, int64(i/8), int64(i/8)+2)
		if i%5 == 4 {
			w.retry(10)
			w.tickAt(int64(i/8) + 3)
		}
		time.Sleep(3 * time.Millisecond)
	}
	w.tickAt(7)
	a.waitServing(e.last)
	w.check(t, a, allParts(parts))
	a.stop()

	slow.mu.Lock()
	t.Logf("%d snapshots stored", slow.saves)
	if slow.overlaps > 0 || len(slow.backward) > 0 {
		t.Errorf("%d overlapping writes of one partition; snapshots stored out of order: %v", slow.overlaps, slow.backward)
	}
	slow.mu.Unlock()
	for p := range parts {
		if m, _ := e.storedMeta(p); m.GetOffset() != e.last[p] {
			t.Errorf("partition %d: final snapshot at %q, want %q", p, m.GetOffset(), e.last[p])
		}
	}

	b := e.start(cfg, e.cl, nil)
	m2 := member(t, e.cl, "agg-0", m1.Incarnation)
	e.assign(owners(parts, m2, 2))
	b.waitServing(e.last)
	w.check(t, b, allParts(parts))
	w.checkStats(t, b)
}

// metaOffset is the log offset an encoded snapshot meta reflects.
func metaOffset(meta []byte) string {
	var m clickaggv1.SnapshotMeta
	if err := proto.Unmarshal(meta, &m); err != nil {
		return "unreadable meta: " + err.Error()
	}
	return m.GetOffset()
}
