package router

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// splits is a Splits with a fixed answer.
type splits struct {
	t   *hotkey.Table
	err error
}

func (s splits) Table() (*hotkey.Table, error) { return s.t, s.err }

// TestIngestRoutesSplitAds: with a split table, a split ad's clicks of the
// split's minutes go to partitions[xxhash(event_id) % len] and the others
// to the ad's partition; a table that may be stale refuses the whole
// request before anything is appended.
func TestIngestRoutesSplitAds(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	parts := partitioner(t, 8)
	const ad = "ad-hot"
	m := t0.Unix() / 60
	sub := []int{(parts.Partition(ad) + 1) % 8, (parts.Partition(ad) + 3) % 8}
	tab, err := hotkey.NewTable(1, []hotkey.Interval{{AdID: ad, Partitions: sub, FromMinute: m, ToMinute: m + 1}}, 8)
	if err != nil {
		t.Fatal(err)
	}
	r := New(testConfig(t), testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0.Add(30*time.Second)), WithSplits(splits{t: tab}))

	var evs []*clickaggv1.ClickEvent
	want := map[string]int{}
	for i := range 60 {
		id := fmt.Sprintf("e-%d", i)
		// Minutes m-1 and m alternately, and one other ad.
		at := t0.Add(-time.Duration(i%2) * 30 * time.Second)
		a := ad
		if i%5 == 0 {
			a = "ad-cold"
		}
		evs = append(evs, click(id, a, at))
		want[id] = parts.Partition(a)
		if a == ad && i%2 == 0 {
			want[id] = sub[xxhash.Sum64String(id)%2]
		}
	}
	if acc, rej, err := r.Ingest(ctx, evs); err != nil || acc != 60 || len(rej) != 0 {
		t.Fatalf("Ingest = %d, %v, %v", acc, rej, err)
	}
	got := map[string]int{}
	used := map[int]bool{}
	for p := range 8 {
		entries, err := readStream(ctx, rdb, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			for _, ev := range e.Events {
				got[ev.EventId] = p
				used[p] = true
			}
		}
	}
	if len(got) != 60 {
		t.Fatalf("%d events in the logs, want 60", len(got))
	}
	for id, p := range want {
		if got[id] != p {
			t.Errorf("event %s in partition %d, want %d", id, got[id], p)
		}
	}
	if !used[sub[0]] || !used[sub[1]] {
		t.Errorf("partitions used %v, want both sub-keys %v", used, sub)
	}

	entries := func() int64 {
		var n int64
		for p := range 8 {
			l, err := rdb.XLen(ctx, partlog.Key(testPrefix, p)).Result()
			if err != nil {
				t.Fatal(err)
			}
			n += l
		}
		return n
	}
	before := entries()
	stale := New(testConfig(t), testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0), WithSplits(splits{err: hotkey.ErrStale}))
	acc, rej, err := stale.Ingest(ctx, []*clickaggv1.ClickEvent{click("e-stale", "ad-cold", t0)})
	if !errors.Is(err, ErrSplitsUnavailable) || !errors.Is(err, hotkey.ErrStale) || acc != 0 || rej != nil {
		t.Fatalf("Ingest with a stale table = %d, %v, %v; want ErrSplitsUnavailable", acc, rej, err)
	}
	if after := entries(); after != before {
		t.Fatalf("the refused request appended %d entries", after-before)
	}
	// Requests refused for their content still say so first.
	if _, _, err := stale.Ingest(ctx, nil); !errors.Is(err, ErrNoEvents) {
		t.Fatalf("empty request with a stale table: %v, want ErrNoEvents", err)
	}
}
