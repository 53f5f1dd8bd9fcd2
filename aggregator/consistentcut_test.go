package aggregator

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

// TestSnapshotIsConsistentCut is the normal counterpart of the
// offset-apart negative control (consistentcut_break_test.go, -tags
// chaosbreak).
func TestSnapshotIsConsistentCut(t *testing.T) {
	checkCut(t, false)
}

// heldStore is the real store whose saves wait while it is held.
type heldStore struct {
	SnapshotStore
	mu      sync.Mutex
	hold    chan struct{} // closed to let the held saves go; nil: not held
	waiting int
}

func (s *heldStore) Save(ctx context.Context, p int, w snapshot.Write) error {
	s.mu.Lock()
	hold := s.hold
	if hold != nil {
		s.waiting++
	}
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	return s.SnapshotStore.Save(ctx, p, w)
}

func (s *heldStore) held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}

// checkCut has the aggregator apply a second batch of clicks while the
// snapshots of the first are being written, then crash; its successor
// restores them. A consistent cut (apart false) stores the first batch's
// offset with its state, and the successor replays the second batch and
// counts both. With offset-apart the offset stored is the second batch's
// while the state is the first's, and the successor loses the second
// batch: it counts exactly the first.
func checkCut(t *testing.T, apart bool) {
	e := newEnv(t, 4)
	clock := testsupport.NewClock(time.Now())
	cfg := testConfig("agg-0")
	cfg.SnapshotInterval = time.Minute // by the fake clock
	store := &heldStore{}
	a := e.start(cfg, e.cl, clock.Now, func(a *Aggregator) {
		store.SnapshotStore = a.store
		a.store = store
	})
	m1 := member(t, e.cl, "agg-0", 0)
	e.assign(owners(4, m1, 1))
	w := newWorkload(e)
	for range 3 {
		w.fresh(40, 0, 5)
	}
	a.waitServing(e.last)
	first := maps.Clone(e.last)
	firstTotal := w.total()

	store.mu.Lock()
	store.hold = make(chan struct{})
	store.mu.Unlock()
	clock.Advance(time.Minute)
	testserver.Eventually(t, wait, func() error {
		if n := store.held(); n < 4 {
			return fmt.Errorf("%d snapshot writes started, want 4", n)
		}
		return nil
	})
	for range 3 {
		w.fresh(40, 0, 5)
	}
	a.waitServing(e.last)
	store.mu.Lock()
	close(store.hold)
	store.hold = nil
	store.mu.Unlock()

	// The stored offsets: the snapshot's own, or, apart, where the
	// partitions had got to when it was written.
	wantStored := first
	if apart {
		wantStored = e.last
	}
	e.waitStored(wantStored)

	// The crash: a's Redis connection goes first, so its final snapshots
	// fail like those of a killed process.
	_ = a.rdb.Close()
	a.stop()
	b := e.start(cfg, e.cl, clock.Now)
	m2 := member(t, e.cl, "agg-0", m1.Incarnation)
	e.assign(owners(4, m2, 2))
	b.waitServing(e.last)
	want := w.total()
	if apart {
		want = firstTotal
	}
	if got := w.counted(t, b); got != want || firstTotal >= w.total() {
		t.Fatalf("successor counts %d clicks, want %d (%d in the first batch, %d in both)", got, want, firstTotal, w.total())
	}
}

// total is the number of distinct clicks sent.
func (w *workload) total() int64 {
	var n int64
	for _, ad := range w.g.ads {
		n += w.tr.count(ad, w.window([2]int64{-100, 100}), nil)
	}
	return n
}

// counted is the number of clicks n counts over all ads.
func (w *workload) counted(t *testing.T, n *node) int64 {
	t.Helper()
	var sum int64
	for _, ad := range w.g.ads {
		c, err := n.count(w.e.part.Partition(ad), ad, w.window([2]int64{-100, 100}), nil)
		if err != nil {
			t.Fatalf("count %s: %v", ad, err)
		}
		sum += c
	}
	return sum
}
