package aggregator

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/history"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/topn"
)

// TestTopAdsAcrossHistory runs an aggregator that writes its history (15
// minute files) and keeps 40 minutes in memory, lets the first half hour
// of clicks leave memory, and checks popular-ads queries over windows
// wholly in the history, wholly in memory and across both, with every
// filter, counts from 1 to 50 and split ads, against the ground truth.
// Two shapes need the history and memory parts joined with care: ad-old
// has hundreds of clicks in the history and one in memory, far outside
// memory's top; among the clicks of user "special", s-h (9 in the
// history, 2 in memory) must beat s-m (10 in memory), though s-h's
// history count alone does not, and s-c (8 and 2) ties s-m and ranks
// before it by ad_id.
func TestTopAdsAcrossHistory(t *testing.T) {
	const (
		parts = 2
		base  = int64(483_334 * 60) // an hour's first minute
	)
	e := newEnv(t, parts)
	bucket, err := archive.OpenBucket(ctxT(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bucket.Close() })
	marks := HistoryMarks{Store: e.store}
	hw, err := history.New(history.Config{Period: 15 * time.Minute, Poll: 20 * time.Millisecond, RetryMin: time.Millisecond, RetryMax: 50 * time.Millisecond},
		marks, bucket, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("agg-0")
	cfg.DedupHorizon = 5 * time.Minute
	cfg.Retention = 40 * time.Minute
	n := e.start(cfg, e.cl, time.Now, WithHistory(hw), WithHistoryReader(history.NewReader(bucket, history.WithCache(1<<20)), marks))
	m := member(t, e.cl, "agg-0", 0)
	e.assign(owners(parts, m, 1))

	tr := newTruth(e.part)
	send := func(evs []*clickaggv1.LogEvent) {
		tr.add(evs)
		e.send(evs)
	}
	// click returns count clicks of ad in minute, each with a new event_id
	// and the generator's attributes unless user is set.
	next := 0
	g := newGen(40)
	click := func(ad string, minute int64, count int, user string) []*clickaggv1.LogEvent {
		evs := g.events(count, minute, minute+1)
		for _, ev := range evs {
			next++
			ev.EventId, ev.AdId = "x-"+strconv.Itoa(next), ad
			if user != "" {
				ev.UserId, ev.Country, ev.Ip = user, "SE", "10.9.9.9"
			}
		}
		return evs
	}
	// The "special" ads share partition 0, so that one partition's answer
	// has to join them.
	special := func(prefix string) string {
		for i := 0; ; i++ {
			if ad := prefix + strconv.Itoa(i); e.part.Partition(ad) == 0 {
				return ad
			}
		}
	}
	sM, sH, sC, sY := special("s-m"), special("s-h"), special("s-c"), special("s-y")
	if !(sC < sM) {
		t.Fatalf("%s must sort before %s", sC, sM)
	}
	// hot is split: routers spread its clicks over every partition.
	hot := func(from, to int64) {
		for p := range parts {
			var evs []*clickaggv1.LogEvent
			for m := from; m < to; m++ {
				evs = append(evs, click("ad-hot", m, 1+int(m%3), "")...)
			}
			tr.add(evs)
			e.append(p, &clickaggv1.LogEntry{RouterId: "test-router", Events: evs})
		}
	}

	// The first 35 minutes, all in memory; once final, minutes [base,
	// base+30) are in 15-minute files.
	send(g.events(4000, base, base+35))
	hot(base, base+35)
	for i := range 400 {
		send(click("ad-old", base+int64(i%10), 1, ""))
	}
	send(click(sH, base+5, 9, "special"))
	send(click(sC, base+12, 8, "special"))
	send(click(sY, base+25, 5, "special"))
	e.tick((base+35)*minuteMs + cfg.AllowedLateness.Milliseconds())
	waitHistory := func(end int64) {
		testserver.Eventually(t, wait, func() error {
			for p := range parts {
				if got, ok, err := e.store.History(ctxT(t), p); err != nil || !ok || got < end {
					return fmt.Errorf("partition %d: history mark %d %v %v, want %d", p, got, ok, err, end)
				}
			}
			return nil
		})
	}
	waitHistory(base + 30)

	// 35 more minutes: the watermark moves to base+70, minutes before
	// base+30 leave memory, and the history holds minutes before base+60.
	send(g.events(2000, base+35, base+70))
	hot(base+35, base+70)
	send(click("ad-old", base+50, 1, ""))
	send(click(sM, base+50, 10, "special"))
	send(click(sH, base+52, 2, "special"))
	send(click(sC, base+55, 2, "special"))
	for i := range 3 {
		send(click(special("s-x"+strconv.Itoa(i)+"-"), base+45, i+1, "special"))
	}
	e.tick((base+70)*minuteMs + cfg.AllowedLateness.Milliseconds())
	n.waitServing(e.last)
	waitHistory(base + 60)

	// ad-old is far outside memory's top, and in the top 5 of the window
	// across both.
	if mem := tr.top([]int{0, 1}, Window{base + 30, base + 70}, 20, nil); slices.ContainsFunc(mem, func(a topn.AdCount) bool { return a.AdID == "ad-old" }) {
		t.Fatalf("ad-old is in memory's top 20 %v: the test tests nothing", mem)
	}
	if all := tr.top([]int{0, 1}, Window{base, base + 70}, 5, nil); !slices.Contains(all, topn.AdCount{AdID: "ad-old", Count: 401}) {
		t.Fatalf("ad-old is not in the top 5 %v: the test tests nothing", all)
	}

	windows := map[string]Window{
		"history":        {base, base + 30},
		"history-inside": {base + 5, base + 20},
		"history-minute": {base + 29, base + 30},
		"memory":         {base + 30, base + 70},
		"memory-minute":  {base + 45, base + 46},
		"across":         {base, base + 70},
		"across-inside":  {base + 20, base + 50},
		"across-edge":    {base + 29, base + 31},
	}
	filters := []*clickaggv1.Filter{nil, {Country: "DE"}, {Ip: "10.0.0.2"}, {UserId: "user-2"}, {Country: "US", UserId: "user-1"},
		{UserId: "special"}, {Country: "SE"}, {Ip: "10.9.9.9"}}
	queries := 0
	for name, w := range windows {
		for _, f := range filters {
			for _, count := range []int{1, 2, 3, 5, 50} {
				for _, split := range [][]string{{"ad-hot"}, {"ad-hot", "ad-old", "ad-0"}} {
					got, gotSplit := topSplit(t, n, []int{0, 1}, w, count, f, split)
					var want, wantSplit []topn.AdCount
					for _, a := range tr.top([]int{0, 1}, w, count+len(split), f) {
						if !slices.Contains(split, a.AdID) && len(want) < count {
							want = append(want, a)
						}
					}
					for _, ad := range slices.Sorted(slices.Values(split)) {
						if c := tr.count(ad, w, f); c != 0 {
							wantSplit = append(wantSplit, topn.AdCount{AdID: ad, Count: c})
						}
					}
					if !slices.Equal(got, want) || !slices.Equal(gotSplit, wantSplit) {
						t.Fatalf("%s window %v, filter %v, top %d, split %v:\n got %v %v\nwant %v %v", name, w, f, count, split, got, gotSplit, want, wantSplit)
					}
					queries++
				}
			}
		}
	}
	// The shapes above, spelled out.
	for _, tc := range []struct {
		count int
		want  []topn.AdCount
	}{
		{1, []topn.AdCount{{AdID: sH, Count: 11}}},
		{3, []topn.AdCount{{AdID: sH, Count: 11}, {AdID: sC, Count: 10}, {AdID: sM, Count: 10}}},
	} {
		if got, _ := topSplit(t, n, []int{0}, Window{base, base + 70}, tc.count, &clickaggv1.Filter{UserId: "special"}, nil); !slices.Equal(got, tc.want) {
			t.Fatalf("top %d of user special: %v, want %v", tc.count, got, tc.want)
		}
	}
	t.Logf("%d popular-ads queries exact", queries)
}

// topSplit asks n for the top count ads of partitions ps over w, with
// split ads.
func topSplit(t *testing.T, n *node, ps []int, w Window, count int, f *clickaggv1.Filter, split []string) ([]topn.AdCount, []topn.AdCount) {
	t.Helper()
	req := &clickaggv1.TopAdsRequest{FromMinute: w.From, ToMinute: w.To, Count: int32(count), Filter: f, SplitAds: split}
	for _, p := range ps {
		req.Partitions = append(req.Partitions, int32(p))
	}
	resp, err := n.client.TopAds(ctxT(t), req)
	if err != nil {
		t.Fatalf("top %d over %v, filter %v: %v", count, w, f, err)
	}
	return fromProto(resp.GetAds()), fromProto(resp.GetSplitCounts())
}
