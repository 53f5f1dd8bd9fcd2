package tally

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
)

// smallTopCache makes the cache serve windows of a few keys, with a journal
// and an LRU small enough to overflow, for the length of a test.
func smallTopCache(t *testing.T, journal, slack int) {
	t.Helper()
	saved := []int{maxTopEntries, maxLateJournal, minCachedKeys, rebuildSlack, minEntryShare}
	savedHeavy := heavyAt
	maxTopEntries, maxLateJournal, minCachedKeys, rebuildSlack = 3, journal, 1, slack
	minEntryShare = math.MaxInt // every country gets entries
	heavyAt = 4
	t.Cleanup(func() {
		maxTopEntries, maxLateJournal, minCachedKeys, rebuildSlack, minEntryShare = saved[0], saved[1], saved[2], saved[3], saved[4]
		heavyAt = savedHeavy
	})
}

// TestTopCacheMatchesGroundTruth interleaves queries with the applies of a
// random log (late events, duplicates, out-of-order minutes, minutes
// completing, frozen and dropped, ticks lagging) and compares every Top
// with ground truth. Queries come back to the same windows, sliding with
// the watermark, so that entries are hit after late events changed their
// minutes, outlived by their windows, evicted, and dropped with the
// journal.
func TestTopCacheMatchesGroundTruth(t *testing.T) {
	missed := 0 // answers topLight gave up on, adding the light minutes after all
	defer func() {
		if missed == 0 {
			t.Error("topLight never gave up; its fallback was not exercised")
		}
	}()
	for _, c := range []struct{ journal, slack int }{{1 << 14, 0}, {1 << 14, 2000}, {48, 2000}} {
		journal := c.journal
		smallTopCache(t, journal, c.slack)
		entries := genLog(genConfig{seed: 21, events: 40_000, minutes: 45, ads: 400, dupRate: 0.05})
		p := newTestPartition(t, propertyOpts)
		tr := newTruth(propertyOpts)
		r := rand.New(rand.NewPCG(5, uint64(journal+c.slack)))
		countries := []string{"US", "DE", "JP", "IN", "XX"}
		queries := 0
		for i, e := range entries {
			tr.apply(e)
			p.Apply(e.id, e.proto())
			if i%4 != 0 {
				continue
			}
			wm := floorDiv(tr.watermark, 60_000)
			for range 3 {
				var from, to int64
				switch r.IntN(4) {
				case 0: // the last 15 minutes, filling ones included
					from, to = wm-14, wm+2
				case 1: // a fixed window, its end growing complete
					from, to = m0+5, m0+25
				case 2: // everything in memory
					from, to = math.MinInt64, math.MaxInt64
				default:
					from = wm - 25 + r.Int64N(25)
					to = from + 1 + r.Int64N(20)
				}
				n := []int{1, 3, 10, 50, 1000}[r.IntN(5)]
				var f Filter
				switch r.IntN(8) {
				case 0, 1, 2:
					f.Country = countries[r.IntN(len(countries))]
				case 3:
					f.UserID = "u7"
				}
				got, want := p.Top(from, to, n, f), tr.top(from, to, n, f)
				if !slices.Equal(got, want) {
					t.Fatalf("%+v, after entry %d: Top(%d, %d, %d, %+v):\n got %v\nwant %v", c, i, from-m0, to-m0, n, f, got, want)
				}
				queries++
			}
		}
		st := p.tops.stats
		t.Logf("%+v: %d queries, stats %+v, stats of partition %+v", c, queries, st, p.Stats())
		missed += st.lightMissed
		if st.hits < 150 || st.journaled < 100 || st.builds < 50 || st.derived < 50 || st.light < 50 {
			t.Errorf("the cache was not exercised: %+v", st)
		}
		if st.rejected != 0 {
			t.Errorf("%d entries were found inconsistent with the journal", st.rejected)
		}
		if got := p.Memory().TopCacheBytes; got == 0 {
			t.Errorf("Memory().TopCacheBytes = 0 with %d entries", len(p.tops.entries))
		}
	}
}

// TestTopCacheLateEvent checks the case the cache exists for: a late event
// in a cached minute changes the ranking at once.
func TestTopCacheLateEvent(t *testing.T) {
	smallTopCache(t, 1<<14, 100)
	p := newTestPartition(t, propertyOpts)
	var clicks []click
	for m := range int64(5) {
		clicks = append(clicks,
			click{id: "a" + string(rune('0'+m)), ad: "A", ms: at(m, 1), country: "US"},
			click{id: "b" + string(rune('0'+m)), ad: "B", ms: at(m, 2), country: "US"})
	}
	clicks = append(clicks, click{id: "a9", ad: "A", ms: at(1, 3), country: "DE"})
	apply(t, p, entry{id: "1", clicks: clicks, tick: at(6, 0) + propertyOpts.AllowedLateness.Milliseconds()})
	want := []AdCount{{AdID: "A", Count: 6}, {AdID: "B", Count: 5}}
	if got := p.Top(m0, m0+5, 2, Filter{}); !slices.Equal(got, want) {
		t.Fatalf("Top = %v, want %v", got, want)
	}
	// Two late clicks for B in a cached minute, one a duplicate.
	late := []click{{id: "b8", ad: "B", ms: at(2, 5), country: "DE"}, {id: "b8", ad: "B", ms: at(2, 5), country: "DE"}, {id: "b9", ad: "B", ms: at(3, 5), country: "DE"}}
	apply(t, p, entry{id: "2", clicks: late})
	want = []AdCount{{AdID: "B", Count: 7}, {AdID: "A", Count: 6}}
	if got := p.Top(m0, m0+5, 2, Filter{}); !slices.Equal(got, want) {
		t.Fatalf("after late clicks: Top = %v, want %v", got, want)
	}
	if got, want := p.Top(m0, m0+5, 2, Filter{Country: "DE"}), []AdCount{{AdID: "B", Count: 2}, {AdID: "A", Count: 1}}; !slices.Equal(got, want) {
		t.Fatalf("after late clicks: Top(DE) = %v, want %v", got, want)
	}
	// A slid window subtracts minute 0 and adds minute 5.
	if got, want := p.Top(m0+1, m0+6, 2, Filter{}), []AdCount{{AdID: "B", Count: 6}, {AdID: "A", Count: 5}}; !slices.Equal(got, want) {
		t.Fatalf("slid window: Top = %v, want %v", got, want)
	}
	if st := p.tops.stats; st.hits < 1 || st.journaled < 1 {
		t.Fatalf("the cache was not used: %+v", st)
	}
}

// TestTopCacheJournalMismatch checks the revision check: an entry whose
// minutes counted events the journal does not hold is not used.
func TestTopCacheJournalMismatch(t *testing.T) {
	// With a slack, the entry is used as it is; without, it is replaced
	// by one derived from it.
	for _, slack := range []int{100, 0} {
		smallTopCache(t, 1<<14, slack)
		p := newTestPartition(t, propertyOpts)
		var clicks []click
		for m := range int64(4) {
			clicks = append(clicks, click{id: "a" + string(rune('0'+m)), ad: "A", ms: at(m, 1), country: "US"})
		}
		apply(t, p, entry{id: "1", clicks: clicks, tick: at(5, 0) + propertyOpts.AllowedLateness.Milliseconds()})
		p.Top(m0, m0+4, 2, Filter{})
		apply(t, p, entry{id: "2", clicks: []click{{id: "b1", ad: "B", ms: at(1, 5), country: "US"}, {id: "b2", ad: "B", ms: at(2, 5), country: "US"}}})
		p.late = p.late[:len(p.late)-1] // lose an event
		want := []AdCount{{AdID: "A", Count: 4}, {AdID: "B", Count: 2}}
		if got := p.Top(m0, m0+4, 2, Filter{}); !slices.Equal(got, want) {
			t.Fatalf("slack %d: Top = %v, want %v", slack, got, want)
		}
		if st := p.tops.stats; st.rejected != 1 || st.derived != 0 {
			t.Fatalf("slack %d: stats %+v, want one entry rejected, none derived", slack, st)
		}
	}
}

// TestTopEntrySums checks the sums too large for their column.
func TestTopEntrySums(t *testing.T) {
	e := &topEntry{sums: make([]uint32, 4)}
	for ad, c := range []int64{0, 7, math.MaxUint32 - 1, math.MaxUint32} {
		e.setSum(uint32(ad), c)
	}
	e.setSum(0, 1<<40)
	for ad, want := range []int64{1 << 40, 7, math.MaxUint32 - 1, math.MaxUint32, 0} {
		if got := e.sum(uint32(ad)); got != want {
			t.Errorf("sum(%d) = %d, want %d", ad, got, want)
		}
	}
}

// topBoth answers Top both from the cache and by adding up every minute,
// under one read lock, so that the two can be compared while another
// goroutine applies.
func topBoth(p *Partition, from, to int64, n int, f Filter) (cached, direct []AdCount, ok bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	q, ok := p.resolve(f)
	window := p.window(from, to)
	if !ok || len(window) == 0 || q.byEvent() {
		return nil, nil, false
	}
	s := &topScratch{}
	s.fit(p.ads.size())
	cached, ok = p.topCached(window, n, f.Country, &q, s)
	direct = p.topDirect(window, n, &q, s)
	return cached, direct, ok
}

// TestTopCacheConcurrent queries from several goroutines while one applies,
// comparing each cached answer with one added up under the same lock.
func TestTopCacheConcurrent(t *testing.T) {
	smallTopCache(t, 64, 300)
	entries := genLog(genConfig{seed: 4, events: 20_000, minutes: 30, ads: 300, dupRate: 0.02})
	p := newTestPartition(t, propertyOpts)
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	used := 0
	for g := range 3 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for {
				select {
				case <-done:
					return
				default:
				}
				wm := floorDiv(p.Watermark(), 60_000)
				f := Filter{}
				if r.IntN(2) == 0 {
					f.Country = "US"
				}
				from := wm - 15 + r.Int64N(3)
				cached, direct, ok := topBoth(p, from, wm+2, 1+r.IntN(20), f)
				if ok && !slices.Equal(cached, direct) {
					t.Errorf("Top(%d, %d, %+v): cached %v, added up %v", from-m0, wm+2-m0, f, cached, direct)
				}
				if ok {
					mu.Lock()
					used++
					mu.Unlock()
				}
			}
		})
	}
	for _, e := range entries {
		p.Apply(e.id, e.proto())
	}
	close(done)
	wg.Wait()
	t.Logf("%d cached answers, stats %+v", used, p.tops.stats)
}

// TestBest compares the selection of the best n with a full sort, on
// counts with few values (many ties) and in runs already in order.
func TestBest(t *testing.T) {
	tab := newStrtab()
	r := rand.New(rand.NewPCG(3, 3))
	var ids []uint32
	for i := range 3000 {
		ids = append(ids, tab.intern("ad"+strconv.Itoa(i*7919%10007)))
	}
	for trial := range 400 {
		size := 1 + r.IntN(len(ids))
		if trial%4 == 0 {
			size = 1 + r.IntN(40)
		}
		spread := 1 + r.Int64N(1+int64(trial%30)*20)
		items := make([]topItem, size)
		for i := range items {
			items[i] = topItem{ad: ids[i], count: 1 + r.Int64N(spread)}
		}
		if trial%3 == 0 {
			slices.SortFunc(items, tab.cmpTop)
		}
		want := slices.Clone(items)
		slices.SortFunc(want, tab.cmpTop)
		n := 1 + r.IntN(size+5)
		got := tab.best(slices.Clone(items), n)
		if !slices.Equal(got, want[:min(n, size)]) {
			t.Fatalf("trial %d: best(%d of %d, counts up to %d) differs", trial, n, size, spread)
		}
	}
}
