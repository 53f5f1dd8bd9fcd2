package hotkey

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"
)

// t0 is at the start of a 10s slot.
var t0 = time.Unix(1_772_366_400, 0)

// zipfAds returns n ad ids drawn from a Zipf distribution over ads ads
// (ad-0 the most frequent), reproducibly.
func zipfAds(n, ads int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	z := rand.NewZipf(rng, 1.2, 1, uint64(ads-1))
	names := make([]string, ads)
	for i := range names {
		names[i] = fmt.Sprintf("ad-%d", i)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = names[z.Uint64()]
	}
	return out
}

// TestSketchAccuracy feeds a Zipf stream over 10 000 ads for 60 seconds
// to a sketch of 100 counters per slot and checks Space-Saving's
// guarantees against the true counts: every reported count is within
// [true, true + N/k], every reported error bound holds, and every ad with
// more than N/k events is reported, so the true top ads are found.
func TestSketchAccuracy(t *testing.T) {
	const (
		k      = 100
		perSec = 2000
	)
	s := NewSketch(k)
	stream := zipfAds(60*perSec, 10_000, 1)
	truth := map[string]int64{}
	for i, ad := range stream {
		at := t0.Add(time.Duration(i) * time.Second / perSec)
		s.Add(at, ad)
		truth[ad]++
	}
	now := t0.Add(60*time.Second - time.Millisecond)
	h := s.Top(now, 6*k)
	n := int64(len(stream))
	if h.Total != n {
		t.Fatalf("total %d, want %d", h.Total, n)
	}
	if h.Window != 60*time.Second-time.Millisecond {
		t.Fatalf("window %v, want just under 60s", h.Window)
	}
	bound := n / k
	reported := map[string]Hitter{}
	for _, hh := range h.Hitters {
		reported[hh.AdID] = hh
		tr := truth[hh.AdID]
		if hh.Count < tr || hh.Count > tr+bound {
			t.Errorf("%s: count %d, true %d, want within [true, true+N/k=%d]", hh.AdID, hh.Count, tr, tr+bound)
		}
		if hh.Count-hh.Err > tr {
			t.Errorf("%s: lower bound %d above the true count %d", hh.AdID, hh.Count-hh.Err, tr)
		}
		if want := float64(hh.Count) / h.Window.Seconds(); hh.Rate != want {
			t.Errorf("%s: rate %v, want %v", hh.AdID, hh.Rate, want)
		}
	}
	heavy := 0
	for ad, c := range truth {
		if c > bound {
			heavy++
			if _, ok := reported[ad]; !ok {
				t.Errorf("%s has %d events, more than N/k=%d, and is not reported", ad, c, bound)
			}
		}
	}
	if heavy < 5 {
		t.Fatalf("only %d ads above N/k: the stream does not test much", heavy)
	}
	// The top 5 by true count are the top 5 reported, in order.
	type ac struct {
		ad string
		n  int64
	}
	var all []ac
	for ad, c := range truth {
		all = append(all, ac{ad, c})
	}
	slices.SortFunc(all, func(a, b ac) int { return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.ad, b.ad)) })
	for i := range 5 {
		if h.Hitters[i].AdID != all[i].ad {
			t.Errorf("reported #%d is %s (%d), true #%d is %s (%d)", i+1, h.Hitters[i].AdID, h.Hitters[i].Count, i+1, all[i].ad, all[i].n)
		}
	}
	if top := s.Top(now, 3); len(top.Hitters) != 3 || top.Hitters[0] != h.Hitters[0] {
		t.Errorf("Top(3) = %+v, want the first 3 of Top(600)", top.Hitters)
	}
}

// TestSketchSlides: events leave the window 60s after their slot started,
// and the rate is over the time covered.
func TestSketchSlides(t *testing.T) {
	s := NewSketch(4)
	if h := s.Top(t0, 5); h.Total != 0 || len(h.Hitters) != 0 {
		t.Fatalf("empty sketch reports %+v", h)
	}
	// 10 events of "a" in each of the first six seconds of the first slot,
	// then 5 of "b" in each of the next 5 slots.
	for sec := range 6 {
		for range 10 {
			s.Add(t0.Add(time.Duration(sec)*time.Second), "a")
		}
	}
	at := t0.Add(6 * time.Second)
	h := s.Top(at, 5)
	if h.Window != 6*time.Second || h.Total != 60 || len(h.Hitters) != 1 || h.Hitters[0] != (Hitter{AdID: "a", Count: 60, Rate: 10}) {
		t.Fatalf("after 6s: %+v, want a at 60 over 6s (10/s)", h)
	}
	for slot := 1; slot <= 5; slot++ {
		s.AddAds(t0.Add(time.Duration(slot)*sketchSlot), []string{"b", "b", "b", "b", "b"})
	}
	h = s.Top(t0.Add(59*time.Second), 5)
	want := []Hitter{{AdID: "a", Count: 60, Rate: 60.0 / 59}, {AdID: "b", Count: 25, Rate: 25.0 / 59}}
	if h.Total != 85 || !slices.Equal(h.Hitters, want) {
		t.Fatalf("at 59s: %+v, want %+v", h, want)
	}
	// At 60s the first slot has left the window.
	h = s.Top(t0.Add(60*time.Second), 5)
	want = []Hitter{{AdID: "b", Count: 25, Rate: 25.0 / 50}}
	if h.Window != 50*time.Second || h.Total != 25 || !slices.Equal(h.Hitters, want) {
		t.Fatalf("at 60s: %+v, want %+v over 50s", h, want)
	}
	// Writing to the slot after the window wraps reuses the first slot.
	s.Add(t0.Add(61*time.Second), "c")
	h = s.Top(t0.Add(61*time.Second), 5)
	if h.Total != 26 || len(h.Hitters) != 2 || h.Hitters[1].AdID != "c" {
		t.Fatalf("at 61s: %+v", h)
	}
	// A clock that goes back adds to the current slot.
	s.Add(t0.Add(5*time.Second), "c")
	if h := s.Top(t0.Add(61*time.Second), 5); h.Total != 27 {
		t.Fatalf("after a late add: total %d, want 27", h.Total)
	}
	// Long after, nothing is left.
	if h := s.Top(t0.Add(10*time.Minute), 5); h.Total != 0 || len(h.Hitters) != 0 {
		t.Fatalf("10 minutes later: %+v", h)
	}
}

// TestSketchAddDoesNotAllocate: adding an ad that has a counter, the
// common case for the heavy ads that make most of the events, allocates
// nothing, and neither does a whole entry.
func TestSketchAddDoesNotAllocate(t *testing.T) {
	s := NewSketch(64)
	ads := zipfAds(10_000, 50, 2) // fewer ads than counters
	for _, ad := range ads {
		s.Add(t0, ad)
	}
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		s.Add(t0, ads[i%len(ads)])
		i++
	}); n != 0 {
		t.Fatalf("Add allocates %v times per call", n)
	}
	if n := testing.AllocsPerRun(100, func() { s.AddAds(t0, ads[:100]) }); n != 0 {
		t.Fatalf("AddAds allocates %v times per call", n)
	}
}

// BenchmarkSketchAdd: a Zipf stream over 100 000 ads (so evictions
// happen) into a sketch of DefaultSketchCapacity counters, rotating every
// 10s of a clock advancing 20µs per event.
func BenchmarkSketchAdd(b *testing.B) { benchmarkAdd(b, 100_000, 3) }

// BenchmarkSketchAddHot: the common case, ads that have a counter.
func BenchmarkSketchAddHot(b *testing.B) { benchmarkAdd(b, 50, 6) }

func benchmarkAdd(b *testing.B, distinct int, seed uint64) {
	s := NewSketch(DefaultSketchCapacity)
	ads := zipfAds(1<<16, distinct, seed)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.Add(t0.Add(time.Duration(i)*20*time.Microsecond), ads[i&(1<<16-1)])
		i++
	}
}

// BenchmarkSketchAddAds: entries of 100 events, as the consumer feeds
// them.
func BenchmarkSketchAddAds(b *testing.B) {
	s := NewSketch(DefaultSketchCapacity)
	ads := zipfAds(1<<16, 100_000, 4)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		j := (i * 100) % (len(ads) - 100)
		s.AddAds(t0.Add(time.Duration(i)*2*time.Millisecond), ads[j:j+100])
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/event")
}

func BenchmarkSketchTop(b *testing.B) {
	s := NewSketch(DefaultSketchCapacity)
	for i, ad := range zipfAds(120_000, 100_000, 5) {
		s.Add(t0.Add(time.Duration(i)*500*time.Microsecond), ad)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.Top(t0.Add(59*time.Second), 20)
	}
}

// TestSketchAddAdsKeepsCopies: the sketch copies the ads it starts
// counting, so a caller may reuse the memory its ad ids were in (the
// aggregator's ids alias the log entry's bytes).
func TestSketchAddAdsKeepsCopies(t *testing.T) {
	s := NewSketch(4)
	buf := []byte("ad-1ad-2ad-2ad-3")
	alias := func(i int) string { return unsafe.String(&buf[4*i], 4) }
	s.AddAds(t0, []string{alias(0), alias(1), alias(2), alias(3)})
	for i := range buf {
		buf[i] = 'x'
	}
	var got []string
	for _, h := range s.Top(t0.Add(time.Second), 4).Hitters {
		got = append(got, fmt.Sprintf("%s=%d", h.AdID, h.Count))
	}
	if want := []string{"ad-2=2", "ad-1=1", "ad-3=1"}; !slices.Equal(got, want) {
		t.Fatalf("top %v, want %v", got, want)
	}
	ads := make([]string, 100)
	for j := range ads {
		ads[j] = "ad-2"
	}
	if n := testing.AllocsPerRun(100, func() { s.AddAds(t0, ads) }); n != 0 {
		t.Fatalf("AddAds of a counted ad allocates %v times per call", n)
	}
}
