package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/testserver"
)

// watcher records what a Watch* call delivers.
type watcher[T any] struct {
	mu  sync.Mutex
	got []T
}

func (w *watcher[T]) add(v T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, v)
}

func (w *watcher[T]) all() []T {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.got)
}

func (w *watcher[T]) last() (T, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var zero T
	if len(w.got) == 0 {
		return zero, 0
	}
	return w.got[len(w.got)-1], len(w.got)
}

// startWatch runs a Watch* call until stop, which returns its error.
func startWatch[T any](t *testing.T, run func(ctx context.Context, fn func(T)) error) (w *watcher[T], stop func() error) {
	w = &watcher[T]{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, w.add) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { _ = stop() })
	return w, stop
}

func ids(ms []cluster.Member) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, fmt.Sprintf("%s@%d", m.ID, m.Incarnation))
	}
	return out
}

// testWatchMembers: the watch delivers a role's members at start, then
// each registration and each removal (the registration's lease revoked
// by Close), and nothing of other roles.
func testWatchMembers(t *testing.T, f Fixture) {
	a := register(t, f, "a", cluster.RoleAggregator, "127.0.0.1:1")
	w, stop := startWatch(t, func(ctx context.Context, fn func([]cluster.Member)) error {
		return f.Cluster.WatchMembers(ctx, cluster.RoleAggregator, fn)
	})
	wantLast := func(want ...cluster.Member) {
		t.Helper()
		testserver.Eventually(t, 10*time.Second, func() error {
			got, _ := w.last()
			if !sameMembers(got, want) {
				return fmt.Errorf("last delivered %v, want %v", ids(got), ids(want))
			}
			return nil
		})
	}
	wantLast(a.Member())
	b := register(t, f, "b", cluster.RoleAggregator, "127.0.0.1:2")
	wantLast(a.Member(), b.Member())
	// Another role is not watched: the next delivery must be b's removal.
	register(t, f, "r", cluster.RoleRouter, "127.0.0.1:3")
	if err := b.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	wantLast(a.Member())
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("WatchMembers after cancel = %v, want context.Canceled", err)
	}
	got := w.all()
	want := [][]cluster.Member{{a.Member()}, {a.Member(), b.Member()}, {a.Member()}}
	if len(got) != len(want) {
		t.Fatalf("delivered %d lists, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if !sameMembers(got[i], want[i]) {
			t.Fatalf("delivery %d = %v, want %v", i, ids(got[i]), ids(want[i]))
		}
	}
}
