package aggregator

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/topn"
)

// TestTopAdsWithSplitAds: ads named in split_ads are left out of the top
// list and their counts in the requested partitions come back in
// split_counts, for any set of partitions, window and filter; the other
// ads' top list stays exact.
func TestTopAdsWithSplitAds(t *testing.T) {
	const base = int64(29_000_000)
	e := newEnv(t, 4)
	n := e.start(testConfig("agg-0"), e.cl, time.Now)
	m := member(t, e.cl, "agg-0", 0)
	e.assign(owners(4, m, 1))

	g := newGen(30)
	evs := g.events(3000, base, base+5)
	tr := newTruth(e.part)
	tr.add(evs)
	e.send(evs)
	// ad-hot is split: its clicks are in every partition, as routers put
	// them, and a retry of some lands with its first copy.
	hot := map[int][]*clickaggv1.LogEvent{}
	for i := range 400 {
		hot[i%4] = append(hot[i%4], &clickaggv1.LogEvent{
			EventId:     "hot-" + strconv.Itoa(i),
			AdId:        "ad-hot",
			ClickTimeMs: (base+int64(i%5))*minuteMs + int64(i),
			UserId:      "user-" + strconv.Itoa(i%6),
			Ip:          ips[i%len(ips)],
			Country:     countries[i%len(countries)],
		})
	}
	for p, es := range hot {
		e.append(p, &clickaggv1.LogEntry{RouterId: "test-router", Events: es}, &clickaggv1.LogEntry{RouterId: "test-router", Events: es[:10]})
	}
	n.waitServing(e.last)
	hotCount := func(ps []int, w Window, f *clickaggv1.Filter) int64 {
		var c int64
		for _, p := range ps {
			for _, ev := range hot[p] {
				if matches(ev, w, f) {
					c++
				}
			}
		}
		return c
	}

	// Without split_ads the hot ad shows with its partial counts: the data
	// tests something.
	top, err := n.top([]int{0}, Window{base, base + 5}, 3, nil)
	if err != nil || !slices.Contains(top, topn.AdCount{AdID: "ad-hot", Count: 100}) {
		t.Fatalf("top 3 of partition 0 without split_ads = %v, %v; want ad-hot at 100 in it", top, err)
	}

	ad0 := "ad-0" // the most clicked ad of the generator, in one partition
	for _, tc := range []struct {
		ps []int
		w  Window
		f  *clickaggv1.Filter
		n  int
	}{
		{[]int{0, 1, 2, 3}, Window{base, base + 5}, nil, 5},
		{[]int{0, 1, 2, 3}, Window{base + 1, base + 3}, &clickaggv1.Filter{Country: "DE"}, 3},
		{[]int{e.part.Partition(ad0)}, Window{base, base + 5}, nil, 4},
		{[]int{(e.part.Partition(ad0) + 1) % 4}, Window{base, base + 5}, nil, 4},
		{[]int{1, 3}, Window{base + 4, base + 5}, &clickaggv1.Filter{UserId: "user-2"}, 100},
	} {
		t.Run(fmt.Sprintf("%v_%v_%v_%d", tc.ps, tc.w, tc.f, tc.n), func(t *testing.T) {
			split := []string{"ad-hot", ad0, "ad-nowhere"}
			req := &clickaggv1.TopAdsRequest{FromMinute: tc.w.From, ToMinute: tc.w.To, Count: int32(tc.n), Filter: tc.f, SplitAds: split}
			for _, p := range tc.ps {
				req.Partitions = append(req.Partitions, int32(p))
			}
			resp, err := n.client.TopAds(ctxT(t), req)
			if err != nil {
				t.Fatal(err)
			}
			var want []topn.AdCount
			for _, a := range tr.top(tc.ps, tc.w, tc.n+1, tc.f) {
				if a.AdID != ad0 && len(want) < tc.n {
					want = append(want, a)
				}
			}
			if got := fromProto(resp.GetAds()); !slices.Equal(got, want) {
				t.Errorf("ads %v\nwant %v", got, want)
			}
			// By ad_id, zero counts left out.
			var wantSplit []topn.AdCount
			var c0 int64
			if slices.Contains(tc.ps, e.part.Partition(ad0)) {
				c0 = tr.count(ad0, tc.w, tc.f)
			}
			if c0 != 0 {
				wantSplit = append(wantSplit, topn.AdCount{AdID: ad0, Count: c0})
			}
			if c := hotCount(tc.ps, tc.w, tc.f); c != 0 {
				wantSplit = append(wantSplit, topn.AdCount{AdID: "ad-hot", Count: c})
			}
			if got := fromProto(resp.GetSplitCounts()); !slices.Equal(got, wantSplit) {
				t.Errorf("split counts %v, want %v", got, wantSplit)
			}
		})
	}

	tooMany := make([]string, MaxSplitAds+1)
	for i := range tooMany {
		tooMany[i] = "ad-" + strconv.Itoa(i)
	}
	_, err = n.client.TopAds(ctxT(t), &clickaggv1.TopAdsRequest{Partitions: []int32{0}, FromMinute: base, ToMinute: base + 1, Count: 1, SplitAds: tooMany})
	wantCode(t, err, codes.InvalidArgument)
}

func fromProto(in []*clickaggv1.AdCount) []topn.AdCount {
	var out []topn.AdCount
	for _, a := range in {
		out = append(out, topn.AdCount{AdID: a.GetAdId(), Count: a.GetCount()})
	}
	return out
}
