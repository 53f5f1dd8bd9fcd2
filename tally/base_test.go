package tally

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// TestWideValues checks the values that do not fit base's narrow columns:
// 255 and more clicks of one (ad, country), 255 and more countries of one
// ad, and country ids beyond 16 bits. Each must count, query, snapshot and
// restore exactly, through merges with late events.
func TestWideValues(t *testing.T) {
	p := newTestPartition(t, testOpts)
	// Take the first 70000 country ids, so that the events' countries get
	// ids that do not fit 16 bits.
	for i := range 70_000 {
		p.countries.incref(p.countries.intern(fmt.Sprint("filler", i)))
	}
	tr := newTruth(testOpts)
	var clicks []click
	id := 0
	add := func(minute int64, ad, country string, n int) {
		for range n {
			id++
			clicks = append(clicks, click{id: fmt.Sprint("e", id), ad: ad, ms: at(minute, int64(id%60_000)),
				country: country, ip: fmt.Sprint("ip", id%7), user: fmt.Sprint("u", id%5)})
		}
	}
	add(0, "hot", "US", 700)
	add(0, "hot", "DE", 254)
	add(0, "hot", "FR", 255)
	for c := range 300 {
		add(0, "wide", fmt.Sprint("C", c), 1+c%3)
	}
	add(0, "small", "US", 1)
	add(1, "hot", "US", 300)
	entries := []entry{{id: "1-0", clicks: clicks}, tickTo("2-0", end(1))}
	// Late events: new rows and more clicks of existing ones, enough to be
	// merged into the complete minute.
	clicks = nil
	add(0, "hot", "US", 50)
	add(0, "late", "C7", 300)
	add(0, "wide", "C299", 1)
	entries = append(entries, entry{id: "3-0", clicks: clicks})
	for _, e := range entries {
		tr.apply(e)
		apply(t, p, e)
	}
	if b := &p.minutes[m0].base; b.big == nil || p.minutes[m0].delta == nil {
		t.Fatalf("minute has no escaped values (%d) or no delta (%v)", len(b.big), p.minutes[m0].delta != nil)
	}
	check := func(q *Partition) {
		t.Helper()
		for _, f := range []Filter{{}, {Country: "US"}, {Country: "C7"}, {Country: "C299"}, {Country: "filler3"}, {UserID: "u3"}, {IP: "ip2", Country: "FR"}} {
			for _, w := range [][2]int64{{m0, m0 + 1}, {m0 + 1, m0 + 2}, {math.MinInt64, math.MaxInt64}} {
				want := tr.top(w[0], w[1], 1000, f)
				if got := q.Top(w[0], w[1], 1000, f); !slices.Equal(got, want) {
					t.Errorf("Top(%v, %+v) = %v, want %v", w, f, got, want)
				}
				perAd := tr.perAd(w[0], w[1], f)
				for _, ad := range []string{"hot", "wide", "late", "small"} {
					if got := q.Count(ad, w[0], w[1], f); got != perAd[ad] {
						t.Errorf("Count(%s, %v, %+v) = %d, want %d", ad, w, f, got, perAd[ad])
					}
				}
			}
		}
	}
	check(p)
	kinds := map[uint64]int{}
	for k := range p.minutes[m0].base.big {
		kinds[k&^math.MaxUint32]++
	}
	if kinds[bigRows] == 0 || kinds[bigCountry] == 0 || kinds[bigCount] == 0 || kinds[bigTotal] == 0 {
		t.Fatalf("escaped values by kind: %v", kinds)
	}
	before := fullMinutes(p)
	p.compact(p.minutes[m0])
	check(p)
	if !maps.EqualFunc(before, fullMinutes(p), bytes.Equal) {
		t.Fatal("merging changed the encoding")
	}
	s := p.Snapshot(1)
	q, err := Restore(3, testOpts, s.Meta, s.Minutes, s.Late)
	if err != nil {
		t.Fatal(err)
	}
	check(q)
	if !maps.EqualFunc(fullMinutes(q), fullMinutes(p), bytes.Equal) {
		t.Fatal("restored minutes encode differently")
	}
}

// TestMemory checks the counts Memory reports against the ground truth.
func TestMemory(t *testing.T) {
	entries := genLog(genConfig{seed: 17, events: 20_000, minutes: 10, ads: 300, dupRate: 0.05})
	p := newTestPartition(t, propertyOpts)
	tr := newTruth(propertyOpts)
	for _, e := range entries {
		tr.apply(e)
		p.Apply(e.id, e.proto())
	}
	var keys, events, ids int64
	horizon := tr.watermark - propertyOpts.DedupHorizon.Milliseconds()
	for _, m := range tr.minutesInMemory() {
		keys += int64(len(tr.perAd(m, m+1, Filter{})))
		for _, n := range tr.cells[m] {
			events += n
		}
		if (m+1)*60000 > horizon {
			ids += int64(len(tr.seen[m]))
		}
	}
	got := p.Memory()
	if got.Keys != keys || got.Events != events || got.DedupIDs != ids {
		t.Fatalf("Memory() = %+v, want %d keys, %d events, %d ids", got, keys, events, ids)
	}
	if got.RowBytes <= 0 || got.FilterBytes < 16*events || got.DedupBytes < 8*ids || got.DedupBytes > 16*ids {
		t.Fatalf("Memory() = %+v", got)
	}
}

// TestSearchUniform compares searchUniform with sort.Search on uniform,
// repeated and badly clustered values.
func TestSearchUniform(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	for trial := range 300 {
		n := r.IntN(2000)
		vs := make([]uint64, n)
		for i := range vs {
			switch trial % 3 {
			case 0:
				vs[i] = r.Uint64()
			case 1:
				vs[i] = r.Uint64N(50) << 58 // few values, many repeats
			default:
				vs[i] = r.Uint64N(1000) * uint64(i%7+1) << uint(i%50) // clustered
			}
		}
		slices.Sort(vs)
		at := func(i int) uint64 { return vs[i] }
		probes := []uint64{0, math.MaxUint64, r.Uint64()}
		if n > 0 {
			probes = append(probes, vs[r.IntN(n)], vs[0], vs[n-1], vs[n-1]+1, vs[0]-1)
		}
		for _, h := range probes {
			want := sort.Search(n, func(i int) bool { return vs[i] >= h })
			if got := searchUniform(n, at, h); got != want {
				t.Fatalf("trial %d: searchUniform(%d) = %d, want %d", trial, h, got, want)
			}
		}
	}
}
