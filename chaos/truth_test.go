package chaos

import (
	"cmp"
	"slices"
	"testing"
	"time"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// TestTruthMatchesBruteForce compares the compact truth with counts over
// every click kept.
func TestTruthMatchesBruteForce(t *testing.T) {
	start := time.Date(2026, 12, 8, 10, 0, 30, 0, time.UTC)
	w := newWorkload(11, 60_000, start, 4*time.Minute)
	tr := newTruth(start.Unix() / 60)
	var all []click
	for i := range w.n {
		c := w.click(i)
		tr.add(c)
		all = append(all, c)
	}
	match := func(c click, f filter) bool {
		return (f.country < 0 || c.country == f.country) && (f.user < 0 || c.user == f.user) && (f.ip < 0 || c.ip == f.ip)
	}
	brute := func(from, to int64, f filter) map[int]int64 {
		m := map[int]int64{}
		for _, c := range all {
			if min := c.t.Unix() / 60; min >= from && min < to && match(c, f) {
				m[c.ad]++
			}
		}
		return m
	}
	f0, end := tr.firstMin, tr.lastMin+1
	if end-f0 != 5 {
		t.Fatalf("minutes [%d, %d): want 5 (30s into the first, 4 minutes)", f0, end)
	}
	for _, f := range filters() {
		for _, win := range [][2]int64{{f0, end}, {f0 + 1, f0 + 2}, {f0 + 2, end}} {
			want := brute(win[0], win[1], f)
			if len(want) == 0 && win == [2]int64{f0, end} {
				t.Errorf("filter %s window %v: no clicks, a useless check", f, win)
			}
			for ad := range 30 {
				if got := tr.count(ad, win[0], win[1], f); got != want[ad] {
					t.Errorf("count of %s filter %s window %v = %d, want %d", adID(ad), f, win, got, want[ad])
				}
			}
			var wantTop []*clickaggv1.AdCount
			for ad, n := range want {
				wantTop = append(wantTop, &clickaggv1.AdCount{AdId: adID(ad), Count: n})
			}
			slices.SortFunc(wantTop, func(a, b *clickaggv1.AdCount) int {
				return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.AdId, b.AdId))
			})
			wantTop = wantTop[:min(100, len(wantTop))]
			if d := firstDiff(tr.top(win[0], win[1], 100, f), wantTop); d != "" {
				t.Errorf("top 100 filter %s window %v: %s", f, win, d)
			}
		}
	}
	ads, minutes, counts := tr.adMinutes()
	var total int64
	for i := range ads {
		total += counts[i]
		if want := brute(minutes[i], minutes[i]+1, noFilter)[ads[i]]; counts[i] != want {
			t.Fatalf("(%s, %d) = %d, want %d", adID(ads[i]), minutes[i], counts[i], want)
		}
	}
	if total != int64(w.n) || tr.valid != int64(w.n) {
		t.Errorf("total %d, valid %d, want %d", total, tr.valid, w.n)
	}
}

func TestChecks(t *testing.T) {
	tr := newTruth(100)
	at := time.Unix(100*60+5, 0)
	for range 3 {
		tr.add(click{ad: 1, t: at, user: sampleUsers + 1, ip: sampleIPs + 1})
	}
	tr.add(click{ad: 2, t: at, user: 0, ip: sampleIPs + 1, country: sampleCountries[0]})
	count := question{ad: 1, from: 100, to: 101, f: noFilter}
	top := question{from: 100, to: 101, n: 10, f: noFilter}
	for _, c := range []struct {
		q               question
		a               answer
		exact, notAbove bool
	}{
		{count, answer{count: 3}, true, true},
		{count, answer{count: 2}, false, true},
		{count, answer{count: 4}, false, false},
		{question{ad: 2, from: 100, to: 101, f: filter{-1, 0, -1}}, answer{count: 1}, true, true},
		{question{ad: 1, from: 100, to: 101, f: filter{-1, 0, -1}}, answer{count: 1}, false, false},
		{top, answer{ads: []*clickaggv1.AdCount{{AdId: "ad-1", Count: 3}, {AdId: "ad-2", Count: 1}}}, true, true},
		{top, answer{ads: []*clickaggv1.AdCount{{AdId: "ad-1", Count: 3}}}, false, true},
		{top, answer{ads: []*clickaggv1.AdCount{{AdId: "ad-2", Count: 2}}}, false, false},
		{top, answer{ads: []*clickaggv1.AdCount{{AdId: "ad-9", Count: 1}}}, false, false},
		{top, answer{ads: []*clickaggv1.AdCount{{AdId: "ad-2", Count: 1}, {AdId: "ad-1", Count: 3}}}, false, true},
	} {
		if got := tr.exactly(c.q, c.a) == ""; got != c.exact {
			t.Errorf("%s answered %+v: exact %v, want %v", c.q, c.a, got, c.exact)
		}
		if got := tr.notAbove(c.q, c.a) == ""; got != c.notAbove {
			t.Errorf("%s answered %+v: not above %v, want %v", c.q, c.a, got, c.notAbove)
		}
	}
	var tl tally
	tl.check("final", name("x"), "")
	for range keepWrong + 5 {
		tl.check("final", name("x"), "wrong")
	}
	if tl.checked.Load() != keepWrong+6 || tl.wrong.Load() != keepWrong+5 || len(tl.wrongs()) != keepWrong {
		t.Errorf("tally: checked %d wrong %d kept %d", tl.checked.Load(), tl.wrong.Load(), len(tl.wrongs()))
	}
}
