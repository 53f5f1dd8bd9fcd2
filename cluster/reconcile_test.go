package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/clickagg/clickagg/testserver"
)

// TestReconcileRun records a reconcile run and reads it back: none before
// the first, the latest after two, and a malformed value is an error.
func TestReconcileRun(t *testing.T) {
	cli := testserver.EtcdClient(t)
	c := NewClient(cli, "/t")
	ctx := context.Background()
	if _, ok, err := c.LastReconcileRun(ctx); ok || err != nil {
		t.Fatalf("before any run: ok %v, err %v", ok, err)
	}
	day := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	r := ReconcileRun{Started: day.Add(25 * time.Hour), From: day, To: day.Add(24 * time.Hour), Partitions: 64,
		RowsCompared: 1234, MismatchedRows: 2, UnreadableFiles: 1, Holes: 3, UncheckedMinutes: 90}
	for _, put := range []ReconcileRun{{Started: day}, r} {
		if err := c.PutReconcileRun(ctx, put); err != nil {
			t.Fatal(err)
		}
	}
	got, ok, err := c.LastReconcileRun(ctx)
	if err != nil || !ok || !got.Started.Equal(r.Started) || !got.To.Equal(r.To) {
		t.Fatalf("LastReconcileRun = %+v, %v, %v; want %+v", got, ok, err, r)
	}
	got.Started, got.From, got.To = r.Started, r.From, r.To
	if got != r {
		t.Fatalf("LastReconcileRun = %+v, want %+v", got, r)
	}
	if _, err := cli.Put(ctx, "/t/reconcile/last", "{"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.LastReconcileRun(ctx); !errors.Is(err, ErrMalformed) {
		t.Fatalf("malformed run: %v, want ErrMalformed", err)
	}
}
