package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/testserver"
)

// testReconcileRun: none before the first run is recorded, the latest
// after two.
func testReconcileRun(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	if _, ok, err := f.Cluster.LastReconcileRun(ctx); ok || err != nil {
		t.Fatalf("before any run: ok %v, err %v", ok, err)
	}
	day := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	r := cluster.ReconcileRun{Started: day.Add(25 * time.Hour), From: day, To: day.Add(24 * time.Hour), Partitions: 64,
		RowsCompared: 1234, MismatchedRows: 2, UnreadableFiles: 1, Holes: 3, UncheckedMinutes: 90}
	for _, put := range []cluster.ReconcileRun{{Started: day}, r} {
		if err := f.Jobs.PutReconcileRun(ctx, put); err != nil {
			t.Fatal(err)
		}
	}
	got, ok, err := f.Cluster.LastReconcileRun(ctx)
	if err != nil || !ok || !got.Started.Equal(r.Started) || !got.To.Equal(r.To) {
		t.Fatalf("LastReconcileRun = %+v, %v, %v; want %+v", got, ok, err, r)
	}
	got.Started, got.From, got.To = r.Started, r.From, r.To
	if got != r {
		t.Fatalf("LastReconcileRun = %+v, want %+v", got, r)
	}
}

// testWatchAppliedRevisions: a watch delivers the applied revisions at
// start (nil when none), then each write, each once; a write from a stale
// read is refused and delivers nothing; an error of the callback ends the
// watch with that error.
func testWatchAppliedRevisions(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	watch := func() (*watcher[[]byte], func() error) {
		return startWatch(t, func(ctx context.Context, fn func([]byte)) error {
			return f.Cluster.WatchAppliedRevisions(ctx, func(v []byte) error {
				fn(v)
				return nil
			})
		})
	}
	apply := func(data string) {
		t.Helper()
		_, mod, err := f.Jobs.AppliedRevisions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Jobs.PutAppliedRevisions(ctx, []byte(data), mod); err != nil {
			t.Fatalf("apply %q: %v", data, err)
		}
	}
	delivered := func(w *watcher[[]byte], want ...[]byte) error {
		if got := w.all(); !slices.EqualFunc(got, want, func(a, b []byte) bool { return string(a) == string(b) && (a == nil) == (b == nil) }) {
			return fmt.Errorf("delivered %q, want %q", got, want)
		}
		return nil
	}
	wantAll := func(w *watcher[[]byte], want ...[]byte) {
		t.Helper()
		testserver.Eventually(t, 10*time.Second, func() error { return delivered(w, want...) })
	}
	first, stopFirst := watch()
	wantAll(first, nil)
	apply("r1")
	wantAll(first, nil, []byte("r1"))
	second, stopSecond := watch()
	wantAll(second, []byte("r1"))
	_, stale, err := f.Jobs.AppliedRevisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	apply("r1,r2")
	if err := f.Jobs.PutAppliedRevisions(ctx, []byte("lost"), stale); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("write from a stale read = %v, want ErrConflict", err)
	}
	apply("r1,r2,r3")
	wantAll(first, nil, []byte("r1"), []byte("r1,r2"), []byte("r1,r2,r3"))
	wantAll(second, []byte("r1"), []byte("r1,r2"), []byte("r1,r2,r3"))
	for _, stop := range []func() error{stopFirst, stopSecond} {
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatalf("WatchAppliedRevisions after cancel = %v, want context.Canceled", err)
		}
	}
	// Nothing more was delivered before the watches ended.
	if err := errors.Join(delivered(first, nil, []byte("r1"), []byte("r1,r2"), []byte("r1,r2,r3")),
		delivered(second, []byte("r1"), []byte("r1,r2"), []byte("r1,r2,r3"))); err != nil {
		t.Fatal(err)
	}

	errStop := errors.New("stop")
	if err := f.Cluster.WatchAppliedRevisions(ctx, func([]byte) error { return errStop }); !errors.Is(err, errStop) {
		t.Fatalf("WatchAppliedRevisions with a failing callback = %v, want its error", err)
	}
}
