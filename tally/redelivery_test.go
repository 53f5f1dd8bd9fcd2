package tally

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/testserver"
)

// TestRedeliveryCountedOnce is the normal counterpart of the dedup-off
// negative control (redelivery_break_test.go, -tags chaosbreak).
func TestRedeliveryCountedOnce(t *testing.T) {
	checkRedelivery(t, 2)
}

// checkRedelivery delivers click c1 four times (in three log entries, twice
// in one) and c2 once, and checks that the partition counts want clicks of
// the ad, and so does a partition restored from a snapshot that went
// through a real Redis, after replaying the last entry: whatever dedup
// does, a snapshot and its replay reproduce it.
func checkRedelivery(t *testing.T, want int64) {
	const m = 29_000_000 // a Unix minute
	c1 := click{id: "e1", ad: "ad-a", ms: m*minuteMs + 1000, country: "US", ip: "192.0.2.1", user: "u1"}
	c2 := click{id: "e2", ad: "ad-a", ms: m*minuteMs + 2000, country: "US", ip: "192.0.2.1", user: "u1"}
	log := []entry{
		{id: "1-0", clicks: []click{c1}},
		{id: "2-0", clicks: []click{c1, c2}},
		{id: "3-0", clicks: []click{c1, c1}},
	}
	p := newTestPartition(t, testOpts)
	apply(t, p, log[:2]...)
	snap := p.Snapshot(1)
	apply(t, p, log[2])
	if n := p.Count("ad-a", m, m+1, Filter{}); n != want {
		t.Fatalf("count after 4 deliveries of one click and 1 of another: %d, want %d", n, want)
	}

	rdb := redis.NewClient(testserver.RedisOptions(testserver.Redis(t)))
	t.Cleanup(func() { _ = rdb.Close() })
	st := snapshot.New(rdb, "clickagg")
	ctx := context.Background()
	if err := st.Save(ctx, p.id, snapshot.Write{Epoch: 1, Meta: snap.Meta, Minutes: snap.Minutes, Late: snap.Late, Drop: snap.Drop}); err != nil {
		t.Fatal(err)
	}
	ld, err := st.Load(ctx, p.id)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Restore(p.id, testOpts, ld.Meta, ld.Minutes, ld.Late)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if r.Offset() != "2-0" {
		t.Fatalf("restored at offset %q, want 2-0", r.Offset())
	}
	apply(t, r, log[2])
	if n := r.Count("ad-a", m, m+1, Filter{}); n != want {
		t.Fatalf("count after restore and replay: %d, want %d", n, want)
	}
	if got, want := r.Stats(), p.Stats(); got != want {
		t.Fatalf("stats after restore and replay %+v, uninterrupted %+v", got, want)
	}
}
