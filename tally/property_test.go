package tally

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

var propertyOpts = Options{
	AllowedLateness: 10 * time.Second,
	DedupHorizon:    10 * time.Minute,
	Retention:       20 * time.Minute,
}

// TestRandomLogMatchesGroundTruth applies a large random log and checks
// every count and ranking against ground truth computed with plain maps.
func TestRandomLogMatchesGroundTruth(t *testing.T) {
	entries := genLog(genConfig{seed: 7, events: 200_000, minutes: 30, ads: 2000, dupRate: 0.05, sharedIDRate: 0.03})
	p := newTestPartition(t, propertyOpts)
	tr := newTruth(propertyOpts)
	for i, e := range entries {
		tr.apply(e)
		p.Apply(e.id, e.proto())
		// Check the counters along the way too, not only at the end.
		if i%500 == 0 {
			if got := p.Stats(); got != tr.stats {
				t.Fatalf("after entry %d: Stats() = %+v, want %+v", i, got, tr.stats)
			}
			if got := p.Watermark(); got != tr.watermark {
				t.Fatalf("after entry %d: Watermark() = %d, want %d", i, got, tr.watermark)
			}
		}
	}
	// The log must exercise every rule, or the comparison proves little.
	s := tr.stats
	t.Logf("entries %d stats %+v minutes in memory %d", len(entries), s, len(tr.minutesInMemory()))
	if s.Duplicates < 5000 || s.Late < 1000 || s.Expired < 100 || len(tr.minutesInMemory()) >= len(tr.cells) {
		t.Fatalf("log does not exercise the rules: %+v, %d of %d minutes in memory", s, len(tr.minutesInMemory()), len(tr.cells))
	}
	checkAgainstTruth(t, p, tr, rand.New(rand.NewPCG(1, 1)))
}

// checkAgainstTruth compares everything p answers with tr.
func checkAgainstTruth(t *testing.T, p *Partition, tr *truth, r *rand.Rand) {
	t.Helper()
	if got := p.Stats(); got != tr.stats {
		t.Errorf("Stats() = %+v, want %+v", got, tr.stats)
	}
	if got := p.Watermark(); got != tr.watermark {
		t.Errorf("Watermark() = %d, want %d", got, tr.watermark)
	}
	if got := p.Offset(); got != tr.offset {
		t.Errorf("Offset() = %q, want %q", got, tr.offset)
	}
	mins := tr.minutesInMemory()
	full := fullMinutes(p)
	if got := decodeMeta(t, p.Snapshot(1).Meta).GetMinutes(); !slices.Equal(got, mins) {
		t.Fatalf("minutes in memory = %v, want %v", got, mins)
	}

	// Every (ad, minute) count, each minute's full ranking and revision.
	var allAds []string
	seenAd := map[string]bool{}
	for _, m := range mins {
		perAd := tr.perAd(m, m+1, Filter{})
		for ad, want := range perAd {
			if got := p.Count(ad, m, m+1, Filter{}); got != want {
				t.Errorf("Count(%s, minute %d) = %d, want %d", ad, m, got, want)
			}
			if !seenAd[ad] {
				seenAd[ad] = true
				allAds = append(allAds, ad)
			}
		}
		if got, want := p.Top(m, m+1, math.MaxInt32, Filter{}), topOf(perAd, math.MaxInt); !slices.Equal(got, want) {
			t.Errorf("Top(all, minute %d) differs: got %d ads, want %d", m, len(got), len(want))
		}
		if got := decodeMinute(t, full[m]).GetRevision(); got != tr.revision[m] {
			t.Errorf("revision of minute %d = %d, want %d", m, got, tr.revision[m])
		}
	}
	slices.Sort(allAds)

	first, last := mins[0], mins[len(mins)-1]
	windows := [][2]int64{
		{math.MinInt64, math.MaxInt64},
		{first - 30, last + 1},
		{last, last + 1},
		{last - 4, last + 1},
		{first + 3, first + 10},
		{first - 5, first + 2},
	}

	// Filter values come from real cells so that combined filters match.
	var cells []truthCell
	for _, m := range mins {
		for c := range tr.cells[m] {
			cells = append(cells, c)
		}
	}
	slices.SortFunc(cells, func(a, b truthCell) int {
		return cmpCells(a, b)
	})
	pick := func() truthCell { return cells[r.IntN(len(cells))] }
	var filters []Filter
	filters = append(filters, Filter{})
	for range 3 {
		c := pick()
		filters = append(filters,
			Filter{Country: c.country}, Filter{IP: c.ip}, Filter{UserID: c.user},
			Filter{Country: c.country, IP: c.ip}, Filter{Country: c.country, UserID: c.user},
			Filter{IP: c.ip, UserID: c.user}, Filter{Country: c.country, IP: c.ip, UserID: c.user},
			Filter{Country: pick().country, IP: pick().ip, UserID: pick().user},
		)
	}
	filters = append(filters, Filter{Country: "XX"}, Filter{IP: "u1"}, Filter{UserID: "nobody", Country: "US"})

	for _, w := range windows {
		for _, f := range filters {
			name := fmt.Sprintf("window [%d,%d) filter %+v", w[0], w[1], f)
			perAd := tr.perAd(w[0], w[1], f)
			ranking := topOf(perAd, math.MaxInt)
			for _, n := range []int{1, 3, 10, 100, 100_000} {
				if got, want := p.Top(w[0], w[1], n, f), ranking[:min(n, len(ranking))]; !slices.Equal(got, want) {
					t.Errorf("%s: Top(%d) =\n%v\nwant\n%v", name, n, head(got), head(want))
				}
			}
			for range 20 {
				ad := allAds[r.IntN(len(allAds))]
				if got := p.Count(ad, w[0], w[1], f); got != perAd[ad] {
					t.Errorf("%s: Count(%s) = %d, want %d", name, ad, got, perAd[ad])
				}
			}
			for _, a := range ranking[:min(5, len(ranking))] {
				if got := p.Count(a.AdID, w[0], w[1], f); got != a.Count {
					t.Errorf("%s: Count(%s) = %d, want %d", name, a.AdID, got, a.Count)
				}
			}
		}
	}
}

func cmpCells(a, b truthCell) int {
	for _, c := range [][2]string{{a.ad, b.ad}, {a.country, b.country}, {a.ip, b.ip}, {a.user, b.user}} {
		if c[0] != c[1] {
			if c[0] < c[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

func head(a []AdCount) []AdCount { return a[:min(len(a), 12)] }

// TestConcurrentReaders queries while the writer applies, for the race
// detector, and checks that each answer is well formed and that the final
// state matches the ground truth.
func TestConcurrentReaders(t *testing.T) {
	entries := genLog(genConfig{seed: 11, events: 30_000, minutes: 15, ads: 300, dupRate: 0.05, sharedIDRate: 0.03})
	p := newTestPartition(t, propertyOpts)
	tr := newTruth(propertyOpts)
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			f := []Filter{{}, {Country: "US"}, {IP: "10.0.1.7"}, {UserID: "u3", Country: "DE"}}[g]
			for {
				select {
				case <-done:
					return
				default:
				}
				top := p.Top(math.MinInt64, math.MaxInt64, 50, f)
				for i, a := range top {
					if a.Count <= 0 || (i > 0 && !lessAd(top[i-1], a)) {
						errs <- fmt.Errorf("malformed answer %v", top)
						return
					}
				}
				_ = p.Count("ad0002", math.MinInt64, math.MaxInt64, f)
				_, _, _ = p.Stats(), p.Watermark(), p.Offset()
			}
		})
	}
	for i, e := range entries {
		tr.apply(e)
		p.Apply(e.id, e.proto())
		if i%200 == 0 {
			s := p.Snapshot(1)
			p.MarkSaved(s)
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkAgainstTruth(t, p, tr, rand.New(rand.NewPCG(2, 2)))
}

func lessAd(a, b AdCount) bool {
	return a.Count > b.Count || (a.Count == b.Count && a.AdID < b.AdID)
}
