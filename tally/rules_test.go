package tally

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

// m0 is the Unix minute the rule tests start at; at returns the Unix ms of
// minute m0+min plus ms milliseconds.
const m0 = 28_333_334

func at(min, ms int64) int64 { return (m0+min)*60000 + ms }

// end returns the end of minute m0+min in Unix ms.
func end(min int64) int64 { return at(min+1, 0) }

var lateness = testOpts.AllowedLateness.Milliseconds()

// tickTo returns a tick entry that sets the watermark to wm.
func tickTo(id string, wm int64) entry { return entry{id: id, tick: wm + lateness} }

func clickAt(id string, ms int64) click {
	return click{id: id, ad: "ad1", ms: ms, country: "US", ip: "10.0.0.1", user: "u1"}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"valid", testOpts, true},
		{"zero lateness", Options{DedupHorizon: time.Minute, Retention: time.Minute}, true},
		{"retention equal to horizon", Options{AllowedLateness: time.Second, DedupHorizon: time.Hour, Retention: time.Hour}, true},
		{"negative lateness", Options{AllowedLateness: -time.Second, DedupHorizon: time.Minute, Retention: time.Minute}, false},
		{"zero horizon", Options{Retention: time.Minute}, false},
		{"sub-millisecond horizon", Options{DedupHorizon: time.Microsecond, Retention: time.Minute}, false},
		{"retention below horizon", Options{DedupHorizon: time.Hour, Retention: time.Minute}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("error %v does not wrap ErrInvalidOptions", err)
			}
		})
	}
}

// TestRules applies small logs and checks every counter, the watermark, the
// count of each minute and each minute's revision.
func TestRules(t *testing.T) {
	tests := []struct {
		name      string
		opts      *Options
		entries   []entry
		stats     Stats
		watermark int64
		// counts of ad1 per Unix minute; every minute in memory must be
		// listed, and no other minute may be in memory.
		counts    map[int64]int64
		revisions map[int64]int64 // minutes not listed have revision 0
	}{
		{
			name:    "empty entry moves only the offset",
			entries: []entry{{id: "1-0"}},
			counts:  map[int64]int64{},
		},
		{
			name:    "duplicate in the same batch is dropped",
			entries: []entry{{id: "1-0", clicks: []click{clickAt("e1", at(0, 1)), clickAt("e1", at(0, 1)), clickAt("e2", at(0, 2))}}},
			stats:   Stats{EventsApplied: 2, Duplicates: 1},
			counts:  map[int64]int64{m0: 2},
		},
		{
			name: "duplicate re-sent after the minute completed is dropped, not late",
			entries: []entry{
				{id: "1-0", clicks: []click{clickAt("e1", at(0, 1))}},
				tickTo("2-0", end(2)),
				{id: "3-0", clicks: []click{clickAt("e1", at(0, 1))}},
			},
			stats:     Stats{EventsApplied: 1, Duplicates: 1},
			watermark: end(2),
			counts:    map[int64]int64{m0: 1},
		},
		{
			name: "dedup is per minute: the same id in another minute counts again",
			entries: []entry{
				{id: "1-0", clicks: []click{clickAt("e1", at(0, 59_999)), clickAt("e1", at(1, 0))}},
			},
			stats:  Stats{EventsApplied: 2},
			counts: map[int64]int64{m0: 1, m0 + 1: 1},
		},
		{
			name: "late events are counted and raise the revision once each",
			entries: []entry{
				{id: "1-0", clicks: []click{clickAt("e1", at(1, 0))}},
				tickTo("2-0", end(1)+1),
				{id: "3-0", clicks: []click{clickAt("e2", at(1, 59_999)), clickAt("e3", at(1, 5)), clickAt("e4", at(2, 0))}},
				{id: "4-0", clicks: []click{clickAt("e5", at(0, 0)), clickAt("e3", at(1, 5))}},
			},
			stats:     Stats{EventsApplied: 5, Late: 3, Duplicates: 1},
			watermark: end(1) + 1,
			counts:    map[int64]int64{m0: 1, m0 + 1: 3, m0 + 2: 1},
			revisions: map[int64]int64{m0: 1, m0 + 1: 2},
		},
		{
			name: "a minute ending exactly at the watermark is complete",
			entries: []entry{
				tickTo("1-0", end(0)),
				{id: "2-0", clicks: []click{clickAt("e1", at(0, 59_999))}},
			},
			stats:     Stats{EventsApplied: 1, Late: 1},
			watermark: end(0),
			counts:    map[int64]int64{m0: 1},
			revisions: map[int64]int64{m0: 1},
		},
		{
			name: "a minute ending 1ms after the watermark is not complete",
			entries: []entry{
				tickTo("1-0", end(0)-1),
				{id: "2-0", clicks: []click{clickAt("e1", at(0, 59_999))}},
			},
			stats:     Stats{EventsApplied: 1},
			watermark: end(0) - 1,
			counts:    map[int64]int64{m0: 1},
		},
		{
			name: "a minute ending exactly the horizon before the watermark refuses events",
			entries: []entry{
				{id: "1-0", clicks: []click{clickAt("e1", at(0, 0))}},
				tickTo("2-0", end(0)+testOpts.DedupHorizon.Milliseconds()),
				{id: "3-0", clicks: []click{clickAt("e2", at(0, 1)), clickAt("e1", at(0, 0)), clickAt("e3", at(1, 0))}},
			},
			stats:     Stats{EventsApplied: 2, Expired: 2, Late: 1},
			watermark: end(0) + testOpts.DedupHorizon.Milliseconds(),
			counts:    map[int64]int64{m0: 1, m0 + 1: 1},
			revisions: map[int64]int64{m0 + 1: 1},
		},
		{
			name: "a minute ending 1ms inside the horizon still counts late events and dedups",
			entries: []entry{
				{id: "1-0", clicks: []click{clickAt("e1", at(0, 0))}},
				tickTo("2-0", end(0)+testOpts.DedupHorizon.Milliseconds()-1),
				{id: "3-0", clicks: []click{clickAt("e2", at(0, 1)), clickAt("e1", at(0, 0))}},
			},
			stats:     Stats{EventsApplied: 2, Late: 1, Duplicates: 1},
			watermark: end(0) + testOpts.DedupHorizon.Milliseconds() - 1,
			counts:    map[int64]int64{m0: 2},
			revisions: map[int64]int64{m0: 1},
		},
		{
			name: "watermark never goes down",
			entries: []entry{
				tickTo("1-0", end(5)),
				tickTo("2-0", end(1)),
				{id: "3-0", tick: -5},
				{id: "4-0", clicks: []click{clickAt("e1", at(4, 0))}},
			},
			stats:     Stats{EventsApplied: 1, Late: 1},
			watermark: end(5),
			counts:    map[int64]int64{m0 + 4: 1},
			revisions: map[int64]int64{m0 + 4: 1},
		},
		{
			name:    "watermark stays 0 while tick minus lateness is negative",
			entries: []entry{{id: "1-0", tick: lateness - 1}, {id: "2-0", tick: -1}},
			counts:  map[int64]int64{},
		},
		{
			name: "events of an entry are applied before its tick",
			entries: []entry{
				{id: "1-0", clicks: []click{clickAt("e1", at(0, 30_000))}, tick: end(0) + lateness},
				{id: "2-0", clicks: []click{clickAt("e2", at(0, 30_001))}},
			},
			stats:     Stats{EventsApplied: 2, Late: 1},
			watermark: end(0),
			counts:    map[int64]int64{m0: 2},
			revisions: map[int64]int64{m0: 1},
		},
		{
			// Before any tick the watermark is 0, the Unix epoch, so minutes
			// before 1970 are already complete, and those ending at least the
			// horizon before it are refused.
			name: "minutes before 1970 round down",
			entries: []entry{{id: "1-0", clicks: []click{
				clickAt("a", -1), clickAt("b", -60_000), clickAt("c", -60_001),
				clickAt("d", 0), clickAt("e", 59_999), clickAt("f", 60_000),
				clickAt("g", -240_001), clickAt("h", -300_000), clickAt("i", -300_001),
			}}},
			stats:     Stats{EventsApplied: 8, Late: 5, Expired: 1},
			counts:    map[int64]int64{-5: 2, -2: 1, -1: 2, 0: 2, 1: 1},
			revisions: map[int64]int64{-5: 2, -2: 1, -1: 2},
		},
		{
			name: "extreme click times",
			entries: []entry{{id: "1-0", clicks: []click{
				clickAt("max", math.MaxInt64), clickAt("min", math.MinInt64), clickAt("max2", math.MaxInt64-1),
			}}},
			stats:  Stats{EventsApplied: 2, Expired: 1},
			counts: map[int64]int64{math.MaxInt64 / 60000: 2},
		},
		{
			name: "a minute leaves memory when it ends the retention before the watermark",
			entries: []entry{
				{id: "1-0", clicks: []click{clickAt("e1", at(0, 0)), clickAt("e2", at(1, 0))}},
				tickTo("2-0", end(0)+testOpts.Retention.Milliseconds()),
			},
			stats:     Stats{EventsApplied: 2},
			watermark: end(0) + testOpts.Retention.Milliseconds(),
			counts:    map[int64]int64{m0 + 1: 1},
		},
		{
			name: "retention equal to the horizon",
			opts: &Options{AllowedLateness: testOpts.AllowedLateness, DedupHorizon: 2 * time.Minute, Retention: 2 * time.Minute},
			entries: []entry{
				{id: "1-0", clicks: []click{clickAt("e1", at(0, 0)), clickAt("e2", at(1, 0))}},
				tickTo("2-0", end(0)+2*60_000),
				{id: "3-0", clicks: []click{clickAt("e3", at(0, 0)), clickAt("e4", at(1, 1))}},
			},
			stats:     Stats{EventsApplied: 3, Expired: 1, Late: 1},
			watermark: end(0) + 2*60_000,
			counts:    map[int64]int64{m0 + 1: 2},
			revisions: map[int64]int64{m0 + 1: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOpts
			if tt.opts != nil {
				opts = *tt.opts
			}
			p := newTestPartition(t, opts)
			apply(t, p, tt.entries...)
			if got, want := p.Offset(), tt.entries[len(tt.entries)-1].id; got != want {
				t.Errorf("Offset() = %q, want %q", got, want)
			}
			if got := p.Stats(); got != tt.stats {
				t.Errorf("Stats() = %+v, want %+v", got, tt.stats)
			}
			if got := p.Watermark(); got != tt.watermark {
				t.Errorf("Watermark() = %d, want %d", got, tt.watermark)
			}
			snap := p.Snapshot(1)
			meta := decodeMeta(t, snap.Meta)
			if got, want := meta.GetMinutes(), sortedKeys(tt.counts); !slices.Equal(got, want) {
				t.Errorf("minutes in memory = %v, want %v", got, want)
			}
			var total int64
			for m, want := range tt.counts {
				if got := p.Count("ad1", m, m+1, Filter{}); got != want {
					t.Errorf("Count(minute %d) = %d, want %d", m, got, want)
				}
				total += want
				ms := decodeMinute(t, snap.Minutes[m])
				if got := ms.GetRevision(); got != tt.revisions[m] {
					t.Errorf("revision of minute %d = %d, want %d", m, got, tt.revisions[m])
				}
			}
			if got := p.Count("ad1", math.MinInt64, math.MaxInt64, Filter{}); got != total {
				t.Errorf("Count(all time) = %d, want %d", got, total)
			}
			for m := range tt.revisions {
				if _, ok := tt.counts[m]; !ok {
					t.Errorf("test lists revision of minute %d that is not in memory", m)
				}
			}
		})
	}
}

func sortedKeys[V any](m map[int64]V) []int64 {
	var out []int64
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestFilters checks Count and Top for each filter alone and combined
// against counts worked out by hand.
func TestFilters(t *testing.T) {
	type cell struct {
		ad, country, ip, user string
		minute, n             int64
	}
	cells := []cell{
		{"a1", "US", "1.1.1.1", "u1", 0, 3},
		{"a1", "US", "2.2.2.2", "u2", 0, 1},
		{"a1", "DE", "1.1.1.1", "u1", 0, 2},
		{"a2", "US", "1.1.1.1", "u3", 0, 4},
		{"a2", "DE", "2.2.2.2", "u2", 0, 1},
		{"a1", "US", "1.1.1.1", "u2", 1, 1},
		{"a3", "FR", "3.3.3.3", "u1", 1, 5},
		{"a2", "US", "2.2.2.2", "u1", 1, 2},
	}
	p := newTestPartition(t, testOpts)
	var clicks []click
	for i, c := range cells {
		for j := range c.n {
			clicks = append(clicks, click{
				id: fmt.Sprintf("e%d-%d", i, j), ad: c.ad, ms: at(c.minute, 1000*j),
				country: c.country, ip: c.ip, user: c.user,
			})
		}
	}
	apply(t, p, entry{id: "1-0", clicks: clicks})

	tests := []struct {
		name     string
		from, to int64
		f        Filter
		want     []AdCount // the full ranking; Count of every other ad is 0
	}{
		{"none", m0, m0 + 2, Filter{}, []AdCount{ac("a1", 7), ac("a2", 7), ac("a3", 5)}},
		{"country US", m0, m0 + 2, Filter{Country: "US"}, []AdCount{ac("a2", 6), ac("a1", 5)}},
		{"country DE", m0, m0 + 2, Filter{Country: "DE"}, []AdCount{ac("a1", 2), ac("a2", 1)}},
		{"ip", m0, m0 + 2, Filter{IP: "1.1.1.1"}, []AdCount{ac("a1", 6), ac("a2", 4)}},
		{"user", m0, m0 + 2, Filter{UserID: "u1"}, []AdCount{ac("a1", 5), ac("a3", 5), ac("a2", 2)}},
		{"country and ip", m0, m0 + 2, Filter{Country: "US", IP: "1.1.1.1"}, []AdCount{ac("a1", 4), ac("a2", 4)}},
		{"country and user", m0, m0 + 2, Filter{Country: "US", UserID: "u1"}, []AdCount{ac("a1", 3), ac("a2", 2)}},
		{"ip and user", m0, m0 + 2, Filter{IP: "1.1.1.1", UserID: "u1"}, []AdCount{ac("a1", 5)}},
		{"all three", m0, m0 + 2, Filter{Country: "US", IP: "1.1.1.1", UserID: "u1"}, []AdCount{ac("a1", 3)}},
		{"all three other cell", m0, m0 + 2, Filter{Country: "DE", IP: "2.2.2.2", UserID: "u2"}, []AdCount{ac("a2", 1)}},
		{"all three matching nothing", m0, m0 + 2, Filter{Country: "FR", IP: "1.1.1.1", UserID: "u1"}, nil},
		{"value of another field", m0, m0 + 2, Filter{Country: "1.1.1.1"}, nil},
		{"unknown ip", m0, m0 + 2, Filter{IP: "9.9.9.9"}, nil},
		{"second minute", m0 + 1, m0 + 2, Filter{}, []AdCount{ac("a3", 5), ac("a2", 2), ac("a1", 1)}},
		{"first minute user", m0, m0 + 1, Filter{UserID: "u2"}, []AdCount{ac("a1", 1), ac("a2", 1)}},
		{"first minute country", m0, m0 + 1, Filter{Country: "US"}, []AdCount{ac("a1", 4), ac("a2", 4)}},
		{"wide window", math.MinInt64, math.MaxInt64, Filter{IP: "2.2.2.2"}, []AdCount{ac("a2", 3), ac("a1", 1)}},
		{"empty window", m0 + 1, m0 + 1, Filter{}, nil},
		{"reversed window", m0 + 2, m0, Filter{}, nil},
		{"window without minutes", m0 + 2, m0 + 100, Filter{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Top(tt.from, tt.to, 10, tt.f); !slices.Equal(got, tt.want) {
				t.Errorf("Top(10) = %v, want %v", got, tt.want)
			}
			if len(tt.want) > 0 {
				if got := p.Top(tt.from, tt.to, 1, tt.f); !slices.Equal(got, tt.want[:1]) {
					t.Errorf("Top(1) = %v, want %v", got, tt.want[:1])
				}
			}
			if got := p.Top(tt.from, tt.to, 0, tt.f); got != nil {
				t.Errorf("Top(0) = %v, want nil", got)
			}
			for _, ad := range []string{"a1", "a2", "a3", "nope"} {
				var want int64
				for _, a := range tt.want {
					if a.AdID == ad {
						want = a.Count
					}
				}
				if got := p.Count(ad, tt.from, tt.to, tt.f); got != want {
					t.Errorf("Count(%s) = %d, want %d", ad, got, want)
				}
			}
		})
	}
}

// TestInternTableShrinks checks that strings of minutes that left memory
// are forgotten and their ids reused, so that memory follows the minutes in
// memory rather than everything ever seen.
func TestInternTableShrinks(t *testing.T) {
	p := newTestPartition(t, testOpts)
	var clicks []click
	for i := range 200 {
		clicks = append(clicks, click{id: fmt.Sprint(i), ad: fmt.Sprint("ad", i%50), ms: at(0, int64(i)),
			country: []string{"US", "FR"}[i%2], ip: fmt.Sprint("ip", i), user: fmt.Sprint("u", i)})
	}
	apply(t, p, entry{id: "1-0", clicks: clicks})
	if got := p.ads.live(); got != 50 {
		t.Fatalf("ads interned = %d, want 50", got)
	}
	if got := p.countries.live(); got != 2 {
		t.Fatalf("countries interned = %d, want 2", got)
	}
	apply(t, p,
		entry{id: "2-0", clicks: []click{{id: "x", ad: "ad7", ms: at(1, 0), country: "DE", ip: "ip3", user: "new"}}},
		tickTo("3-0", end(0)+testOpts.Retention.Milliseconds()),
	)
	if got := p.ads.live(); got != 1 {
		t.Errorf("ads interned after eviction = %d, want 1", got)
	}
	if got := p.countries.live(); got != 1 {
		t.Errorf("countries interned after eviction = %d, want 1", got)
	}
	size := p.ads.size()
	apply(t, p, entry{id: "4-0", clicks: []click{{id: "y", ad: "fresh", ms: at(7, 0), country: "DE", ip: "ip3", user: "new"}}})
	if got := p.ads.size(); got != size {
		t.Errorf("ad table grew to %d instead of reusing a freed id (%d)", got, size)
	}
	if got := p.Top(m0, m0+10, 5, Filter{}); !slices.Equal(got, []AdCount{ac("ad7", 1), ac("fresh", 1)}) {
		t.Errorf("Top = %v", got)
	}
	if got := p.Count("ad3", m0, m0+10, Filter{}); got != 0 {
		t.Errorf("Count of an evicted ad = %d, want 0", got)
	}
	if got := p.Count("ad7", m0, m0+10, Filter{UserID: "new", IP: "ip3"}); got != 1 {
		t.Errorf("Count of ad7 by user and ip = %d, want 1", got)
	}
}

func ac(ad string, n int64) AdCount { return AdCount{AdID: ad, Count: n} }
