package bench

import (
	"context"
	"slices"
	"testing"

	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/topn"
)

// TestNaiveCountsExactly runs the naive baseline on a small workload
// against a real redis-server and checks every (minute, ad) count, the
// totals and the top lists against counts the test makes itself: a
// baseline that lost writes would make the comparison unfair.
func TestNaiveCountsExactly(t *testing.T) {
	rdb := testserver.RedisClient(t)
	ctx := context.Background()
	names := Names{Tag: "nv"}
	n := NewNaive(rdb, "naive-test", names)

	w := testWorkload()
	w.Ads = 500 // small enough for many repeats, so the counts are > 1
	g := NewGenerator(w, testSpanStart)
	const minutes, perBatch, batches = 6, 250, 80
	truth := map[int64]map[string]int64{}
	in := make(chan []Event, 4)
	go func() {
		defer close(in)
		for b := range batches {
			now := testSpanStart + int64(b)*minutes*60_000/batches
			evs := make([]Event, perBatch)
			for i := range evs {
				evs[i] = g.Next(now)
				e := evs[i]
				if truth[e.Minute()] == nil {
					truth[e.Minute()] = map[string]int64{}
				}
				truth[e.Minute()][names.AdID(e.Ad)]++ // duplicates included: no dedup here
			}
			in <- evs
		}
	}()
	counted, err := n.Ingest(ctx, in, 3)
	if err != nil {
		t.Fatal(err)
	}
	if counted != batches*perBatch {
		t.Fatalf("counted %d events, want %d", counted, batches*perBatch)
	}
	from, to := int64(testSpanStart/60_000), int64(testSpanStart/60_000+minutes)
	var wantKeys int64
	for _, m := range truth {
		wantKeys += int64(len(m))
	}
	keys, clicks, err := n.Keys(ctx, from, to)
	if err != nil || keys != wantKeys || clicks != counted {
		t.Fatalf("Keys = %d keys, %d clicks, %v; want %d, %d", keys, clicks, err, wantKeys, counted)
	}
	// Every ad's count over the whole span, and in one minute.
	total := map[string]int64{}
	for _, m := range truth {
		for ad, c := range m {
			total[ad] += c
		}
	}
	for ad, want := range total {
		got, err := n.Count(ctx, ad, from, to)
		if err != nil || got != want {
			t.Fatalf("Count(%s) = %d, %v; want %d", ad, got, err, want)
		}
	}
	if got, err := n.Count(ctx, names.AdID(uint32(w.Ads+1)), from, to); err != nil || got != 0 {
		t.Fatalf("Count of an ad never clicked = %d, %v", got, err)
	}
	checkTop := func(name string, got []topn.AdCount, want map[string]int64) {
		t.Helper()
		all := make([]topn.AdCount, 0, len(want))
		for ad, c := range want {
			all = append(all, topn.AdCount{AdID: ad, Count: c})
		}
		wantTop := topn.Merge(100, all)
		if len(got) != len(wantTop) {
			t.Fatalf("%s: %d ads, want %d", name, len(got), len(wantTop))
		}
		// Redis picks which tied ads make the last places; every count
		// and every ad's own count must be right.
		for i := range got {
			if got[i].Count != wantTop[i].Count || want[got[i].AdID] != got[i].Count {
				t.Fatalf("%s: place %d is %+v (true count %d), want count %d", name, i, got[i], want[got[i].AdID], wantTop[i].Count)
			}
		}
		if !slices.IsSortedFunc(got, func(a, b topn.AdCount) int {
			if topn.Less(a, b) {
				return -1
			}
			return 1
		}) {
			t.Fatalf("%s: not in ranking order", name)
		}
	}
	top, err := n.Top(ctx, from, to, 100)
	if err != nil {
		t.Fatal(err)
	}
	checkTop("top over the span", top, total)
	top, err = n.Top(ctx, from+2, from+3, 100)
	if err != nil {
		t.Fatal(err)
	}
	checkTop("top of one minute", top, truth[from+2])
	if n, _ := rdb.Exists(ctx, "naive-test:union").Result(); n != 0 {
		t.Fatal("the union's scratch key was left behind")
	}

	n.Clear(ctx)
	if keys, _ := rdb.Keys(ctx, "naive-test:*").Result(); len(keys) != 0 {
		t.Fatalf("Clear left %d keys", len(keys))
	}
}
