package queryd

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/clickagg/clickagg/hotkey"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/toplist"
)

// splitTable is the Splits the tests set: a table, or the error of a
// stale copy.
type splitTable struct {
	mu  sync.Mutex
	t   *hotkey.Table
	err error
}

func (s *splitTable) set(t *hotkey.Table, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t, s.err = t, err
}

func (s *splitTable) Table() (*hotkey.Table, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t, s.err
}

const (
	hotAd  = "ad-hot"
	warmAd = "ad-warm"
)

// splitWorld is random clicks plus two split ads whose clicks are where
// the routing rule puts them: ad-hot, 40 a minute, split over three
// partitions in [base+5, base+10) and over two from base+20 on; ad-warm, 2
// a minute, split over four partitions in [base, base+25). ad-warm's
// share of any partition is too small to be in an owner's top 3, while
// its total is in the global top 3.
func splitWorld(t *testing.T) (*truth, *hotkey.Table) {
	t.Helper()
	parts := newPartitioner(t)
	tr := newTruth(parts, 5, 4000, 200, nowOffset+1)
	tab, err := hotkey.NewTable(3, []hotkey.Interval{
		{AdID: hotAd, Partitions: []int{1, 6, 10}, FromMinute: base + 5, ToMinute: base + 10},
		{AdID: hotAd, Partitions: []int{3, 8}, FromMinute: base + 20},
		{AdID: warmAd, Partitions: []int{0, 4, 7, 11}, FromMinute: base, ToMinute: base + 25},
	}, partitions)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	n := 0
	for m := base; m <= base+nowOffset; m++ {
		for i := range 42 {
			ad := hotAd
			if i >= 40 {
				ad = warmAd
			}
			n++
			id := fmt.Sprintf("split-%d", n)
			tr.addIn(click{
				ad:        ad,
				partition: tab.Route(parts, ad, id, m*minuteMs+int64(rng.IntN(minuteMs))),
				minute:    m,
				country:   countries[rng.IntN(len(countries))],
				ip:        ips[rng.IntN(len(ips))],
				userID:    fmt.Sprintf("u%d", rng.IntN(20)),
			})
		}
	}
	return tr, tab
}

// TestSplitAdsExact: counts and top lists with split ads equal brute
// force over every click, wherever it lives; a count asks exactly the
// partitions that may hold the ad's clicks in its window.
func TestSplitAdsExact(t *testing.T) {
	tr, tab := splitWorld(t)
	st := &splitTable{t: tab}
	e := newEnv(t, tr, queryConfig(), WithSplits(st))
	e.start()

	// The data must make a merge without split counts wrong.
	w := window{base, base + 25}
	if top := tr.top(w.from, w.to, 3, Filter{}); !slices.ContainsFunc(top, func(a AdCount) bool { return a.AdID == warmAd }) {
		t.Fatalf("%s is not in the top 3 over %v: %v", warmAd, w, top)
	}
	hidden := false
	for _, a := range e.aggs {
		owned := map[int]bool{}
		for _, p := range e.partitionsOf(a.id) {
			owned[p] = true
		}
		top := rank(tr.counts(w.from, w.to, Filter{}, func(p int) bool { return owned[p] && p != tr.parts.Partition(hotAd) }), 3)
		if tr.countIn(func(p int) bool { return owned[p] }, warmAd, w.from, w.to, Filter{}) > 0 && !slices.ContainsFunc(top, func(a AdCount) bool { return a.AdID == warmAd }) {
			hidden = true
		}
	}
	if !hidden {
		t.Fatalf("%s is in the top 3 of every owner that holds some of it: the test would not notice a merge without split counts", warmAd)
	}

	windows := []window{
		{base, base + nowOffset + 1}, {base + 5, base + 10}, {base + 3, base + 7}, {base + 9, base + 21},
		{base + 10, base + 20}, {base + 25, base + nowOffset + 1}, {base + 29, base + 31}, {base, base + 1},
	}
	filters := []Filter{{}, {Country: "US"}, {Country: "JP", UserID: "u3"}}
	ads := []string{hotAd, warmAd, "ad-000", "ad-042", "ad-199"}
	for _, w := range windows {
		for _, f := range filters {
			for _, ad := range ads {
				calls := tr.countCalls.Load()
				got, err := e.q.Count(e.ctx, ad, w.from, w.to, f)
				if err != nil {
					t.Fatal(err)
				}
				if want := tr.count(ad, w.from, w.to, f); got.Count != want {
					t.Errorf("count of %s over %v %+v = %d, want %d", ad, w, f, got.Count, want)
				}
				want := len(tab.Partitions(tr.parts, ad, w.from, w.to))
				if n := tr.countCalls.Load() - calls; n != int64(want) {
					t.Errorf("count of %s over %v made %d calls, want %d", ad, w, n, want)
				}
			}
			for _, n := range []int{1, 3, 10} {
				got, err := e.q.Top(e.ctx, w.from, w.to, n, f)
				if err != nil {
					t.Fatal(err)
				}
				if want := tr.top(w.from, w.to, n, f); !slices.Equal(got.Ads, want) {
					t.Errorf("top %d over %v %+v:\n got %v\nwant %v", n, w, f, got.Ads, want)
				}
			}
		}
	}
	// ad-hot has one split from base+20 on and none in [base+10, base+20).
	if ps := tab.Partitions(tr.parts, hotAd, base+10, base+20); len(ps) != 1 {
		t.Fatalf("partitions of %s between its splits: %v", hotAd, ps)
	}

	// Over gRPC too.
	resp, err := e.qc.GetAggregatedCount(e.ctx, &clickaggv1.GetAggregatedCountRequest{AdId: hotAd, From: ts(base+3, 0, 0), To: ts(base+22, 0, 0)})
	if want := tr.count(hotAd, base+3, base+22, Filter{}); err != nil || resp.GetCount() != want {
		t.Fatalf("GetAggregatedCount = %v, %v; want %d", resp, err, want)
	}
}

// TestSplitAdsUnavailable: a count or top list needing a sub-key partition
// whose owner does not answer fails naming it; a stale split table fails
// every query with UNAVAILABLE.
func TestSplitAdsUnavailable(t *testing.T) {
	tr, tab := splitWorld(t)
	st := &splitTable{t: tab}
	e := newEnv(t, tr, queryConfig(), WithSplits(st))
	e.start()

	// Partition 6 is one of ad-hot's first sub-keys, not its own.
	if tr.parts.Partition(hotAd) == 6 {
		t.Fatal("ad-hot lives in partition 6; pick another sub-key")
	}
	a := e.agg(6)
	a.setOwned(slices.DeleteFunc(e.partitionsOf(a.id), func(p int) bool { return p == 6 }))
	_, err := e.q.Count(e.ctx, hotAd, base+5, base+10, Filter{})
	var ue *UnavailableError
	if !errors.As(err, &ue) || !slices.Equal(ue.Partitions, []int{6}) {
		t.Fatalf("count needing partition 6: %v, want partition 6 unavailable", err)
	}
	if _, err := e.q.Count(e.ctx, hotAd, base+10, base+20, Filter{}); err != nil {
		t.Fatalf("count between the splits, which does not need partition 6: %v", err)
	}
	if _, err := e.q.Top(e.ctx, base, base+1, 3, Filter{}); !errors.As(err, &ue) || !slices.Contains(ue.Partitions, 6) {
		t.Fatalf("top: %v, want partition 6 unavailable", err)
	}
	a.setOwned(e.partitionsOf(a.id))

	st.set(nil, fmt.Errorf("%w: last confirmed 9s ago", hotkey.ErrStale))
	if _, err := e.q.Count(e.ctx, "ad-000", base, base+1, Filter{}); !errors.Is(err, ErrUnavailable) || !errors.Is(err, hotkey.ErrStale) {
		t.Fatalf("count with a stale table: %v, want ErrUnavailable", err)
	}
	for name, call := range map[string]func() error{
		"GetAggregatedCount": func() error {
			_, err := e.qc.GetAggregatedCount(e.ctx, &clickaggv1.GetAggregatedCountRequest{AdId: "ad-000", LastMinutes: 5})
			return err
		},
		"GetPopularAds": func() error {
			_, err := e.qc.GetPopularAds(e.ctx, &clickaggv1.GetPopularAdsRequest{Count: 3, WindowMinutes: 5})
			return err
		},
	} {
		err := call()
		if s := status.Convert(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "split table") {
			t.Errorf("%s with a stale table: %v, want UNAVAILABLE about the split table", name, err)
		}
	}
	st.set(tab, nil)
	if _, err := e.q.Count(e.ctx, "ad-000", base, base+1, Filter{}); err != nil {
		t.Fatalf("count once the table is fresh again: %v", err)
	}
}

// TestPublishWithSplitAds: the minutes the publisher writes are exact top
// lists with split ads too.
func TestPublishWithSplitAds(t *testing.T) {
	tr, tab := splitWorld(t)
	tr.setAllWatermarks((base + nowOffset + 1) * minuteMs)
	cfg := testConfig()
	cfg.PublishCount = 5
	e := newEnv(t, tr, cfg, WithSplits(&splitTable{t: tab}))
	e.start()
	// The publisher starts with the last RepublishMinutes complete minutes:
	// ad-warm's split ends inside them, ad-hot's second one covers them.
	first := base + nowOffset + 1 - int64(cfg.RepublishMinutes)
	testserver.Eventually(t, 30*time.Second, func() error {
		for m := first; m <= base+nowOffset; m++ {
			v, err := e.rdb.Get(e.ctx, toplist.Key("clickagg", m)).Result()
			if err != nil {
				return fmt.Errorf("minute %d: %w", m, err)
			}
			var r clickaggv1.GetPopularAdsResponse
			if err := protojson.Unmarshal([]byte(v), &r); err != nil {
				return err
			}
			if got, want := protoAds(r.GetAds()), tr.top(m, m+1, cfg.PublishCount, Filter{}); !slices.Equal(got, want) {
				return fmt.Errorf("minute %d published %v, want %v", m, got, want)
			}
		}
		return nil
	})
}
