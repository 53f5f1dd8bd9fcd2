package hotkey

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/clickagg/clickagg/ring"
)

const testPartitions = 16

func partitioner(t *testing.T) *ring.Partitioner {
	t.Helper()
	p, err := ring.NewPartitioner(testPartitions)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustTable(t *testing.T, version uint64, splits ...Interval) *Table {
	t.Helper()
	tab, err := NewTable(version, splits, testPartitions)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// ms returns a Unix millisecond inside minute m.
func ms(m int64, sec int64) int64 { return m*minuteMs + sec*1000 }

func TestRoute(t *testing.T) {
	parts := partitioner(t)
	const ad = "ad-hot"
	own := parts.Partition(ad)
	tab := mustTable(t, 3,
		Interval{AdID: ad, Partitions: []int{3, 7, 11}, FromMinute: 100, ToMinute: 110},
		Interval{AdID: ad, Partitions: []int{5, 9}, FromMinute: 120},
		Interval{AdID: "ad-other", Partitions: []int{1, 2}, FromMinute: 90, ToMinute: 95},
	)
	// sub is the partition the rule picks for event id among ps, computed
	// here from its definition.
	sub := func(ps []int, id string) int { return ps[xxhash.Sum64String(id)%uint64(len(ps))] }
	for _, tc := range []struct {
		name    string
		ad, id  string
		clickMs int64
		want    int
	}{
		{"before the first interval", ad, "e1", ms(99, 59), own},
		{"first minute of the first interval", ad, "e1", ms(100, 0), sub([]int{3, 7, 11}, "e1")},
		{"inside the first interval", ad, "e2", ms(105, 30), sub([]int{3, 7, 11}, "e2")},
		{"last minute of the first interval", ad, "e3", ms(109, 59), sub([]int{3, 7, 11}, "e3")},
		{"end of the first interval is exclusive", ad, "e3", ms(110, 0), own},
		{"between intervals", ad, "e4", ms(115, 0), own},
		{"open interval", ad, "e5", ms(120, 0), sub([]int{5, 9}, "e5")},
		{"open interval far ahead", ad, "e6", ms(100000, 0), sub([]int{5, 9}, "e6")},
		{"other ad in its interval", "ad-other", "e7", ms(92, 0), sub([]int{1, 2}, "e7")},
		{"other ad after its interval", "ad-other", "e7", ms(95, 0), parts.Partition("ad-other")},
		{"ad without splits", "ad-cold", "e8", ms(105, 0), parts.Partition("ad-cold")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tab.Route(parts, tc.ad, tc.id, tc.clickMs); got != tc.want {
				t.Fatalf("Route = %d, want %d", got, tc.want)
			}
		})
	}

	t.Run("nil table routes by ad", func(t *testing.T) {
		var nilTab *Table
		if got := nilTab.Route(parts, ad, "e1", ms(105, 0)); got != own {
			t.Fatalf("Route = %d, want %d", got, own)
		}
	})

	t.Run("a retry lands where its first copy did and sub-keys spread", func(t *testing.T) {
		seen := map[int]int{}
		for i := range 3000 {
			id := fmt.Sprintf("ev-%d", i)
			at := ms(100+int64(i%10), int64(i%60))
			p := tab.Route(parts, ad, id, at)
			if again := tab.Route(parts, ad, id, at); again != p {
				t.Fatalf("event %s routed to %d, then %d", id, p, again)
			}
			seen[p]++
		}
		for _, p := range []int{3, 7, 11} {
			// 1000 expected each; a uniform hash lands well within ±20%.
			if seen[p] < 800 || seen[p] > 1200 {
				t.Errorf("partition %d got %d of 3000 events, want about 1000: %v", p, seen[p], seen)
			}
		}
		if len(seen) != 3 {
			t.Errorf("events went to %v, want only 3, 7 and 11", seen)
		}
	})

	t.Run("negative times", func(t *testing.T) {
		neg := mustTable(t, 1, Interval{AdID: ad, Partitions: []int{4, 6}, FromMinute: -1, ToMinute: 0 + 1})
		// -1ms is minute -1, inside [-1, 1).
		if got := neg.Route(parts, ad, "e", -1); got != 4 && got != 6 {
			t.Fatalf("Route(-1ms) = %d, want 4 or 6", got)
		}
		if got := neg.Route(parts, ad, "e", ms(-2, 59)); got != own {
			t.Fatalf("Route(minute -2) = %d, want %d", got, own)
		}
	})
}

func TestPartitionsAndSplitAds(t *testing.T) {
	parts := partitioner(t)
	const ad = "ad-hot"
	own := parts.Partition(ad)
	tab := mustTable(t, 2,
		Interval{AdID: ad, Partitions: []int{3, 7, own}, FromMinute: 100, ToMinute: 110},
		Interval{AdID: ad, Partitions: []int{5, 9}, FromMinute: 120},
		Interval{AdID: "ad-b", Partitions: []int{1, 2}, FromMinute: 108, ToMinute: 112},
	)
	sorted := func(ps ...int) []int { slices.Sort(ps); return slices.Compact(ps) }
	for _, tc := range []struct {
		name     string
		from, to int64
		parts    []int
		splitAds []string
	}{
		{"before everything", 50, 100, []int{own}, nil},
		{"first minute", 100, 101, sorted(own, 3, 7), []string{ad}},
		{"ends where the first starts", 90, 100, []int{own}, nil},
		{"starts where the first ends", 110, 111, []int{own}, []string{"ad-b"}},
		{"between", 112, 120, []int{own}, nil},
		{"both intervals", 105, 125, sorted(own, 3, 5, 7, 9), []string{"ad-b", ad}},
		{"open interval far ahead", 5000, 5001, sorted(own, 5, 9), []string{ad}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tab.Partitions(parts, ad, tc.from, tc.to); !slices.Equal(got, tc.parts) {
				t.Errorf("Partitions = %v, want %v", got, tc.parts)
			}
			if got := tab.SplitAds(tc.from, tc.to); !slices.Equal(got, tc.splitAds) {
				t.Errorf("SplitAds = %v, want %v", got, tc.splitAds)
			}
		})
	}
	var nilTab *Table
	if got := nilTab.Partitions(parts, ad, 100, 200); !slices.Equal(got, []int{own}) {
		t.Errorf("nil table Partitions = %v", got)
	}
	if got := nilTab.SplitAds(100, 200); got != nil {
		t.Errorf("nil table SplitAds = %v", got)
	}
}

func TestNewTableRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		splits []Interval
		want   string
	}{
		{"empty ad", []Interval{{Partitions: []int{1, 2}, FromMinute: 1}}, "empty ad_id"},
		{"no partitions", []Interval{{AdID: "a", FromMinute: 1}}, `ad "a": no partitions`},
		{"partition out of range", []Interval{{AdID: "a", Partitions: []int{1, 16}, FromMinute: 1}}, `ad "a": partition 16 is not in [0, 16)`},
		{"negative partition", []Interval{{AdID: "a", Partitions: []int{-1, 2}, FromMinute: 1}}, `ad "a": partition -1 is not in [0, 16)`},
		{"duplicate partition", []Interval{{AdID: "a", Partitions: []int{2, 2}, FromMinute: 1}}, `ad "a": partition 2 listed twice`},
		{"empty interval", []Interval{{AdID: "a", Partitions: []int{1, 2}, FromMinute: 5, ToMinute: 5}}, `ad "a": interval [5, 5) is empty`},
		{"overlap", []Interval{
			{AdID: "a", Partitions: []int{1, 2}, FromMinute: 5, ToMinute: 10},
			{AdID: "a", Partitions: []int{3, 4}, FromMinute: 9, ToMinute: 12},
		}, `ad "a": intervals from minute 5 and 9 overlap`},
		{"two open", []Interval{
			{AdID: "a", Partitions: []int{3, 4}, FromMinute: 20},
			{AdID: "a", Partitions: []int{1, 2}, FromMinute: 5},
		}, `ad "a": intervals from minute 5 and 20 overlap`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewTable(1, tc.splits, testPartitions)
			if !errors.Is(err, ErrInvalid) || !strings.HasSuffix(err.Error(), tc.want) {
				t.Fatalf("NewTable = %v, want ErrInvalid ending in %q", err, tc.want)
			}
		})
	}
	// Adjacent intervals and other ads' intervals do not overlap.
	if _, err := NewTable(1, []Interval{
		{AdID: "a", Partitions: []int{1, 2}, FromMinute: 5, ToMinute: 10},
		{AdID: "a", Partitions: []int{3, 4}, FromMinute: 10},
		{AdID: "b", Partitions: []int{3, 4}, FromMinute: 7},
	}, testPartitions); err != nil {
		t.Fatalf("NewTable of adjacent intervals: %v", err)
	}
}

func TestTableIsImmutable(t *testing.T) {
	in := []Interval{{AdID: "a", Partitions: []int{1, 2}, FromMinute: 5, Members: []string{"m1", "m2"}}}
	tab := mustTable(t, 1, in...)
	in[0].Partitions[0] = 9
	out := tab.Splits()
	out[0].Partitions[1] = 9
	iv, _ := tab.Open("a")
	iv.Partitions[0] = 9
	if got := tab.Splits()[0].Partitions; !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("table changed through a caller's slice: %v", got)
	}
}

func TestApply(t *testing.T) {
	const ad = "ad-hot"
	base := mustTable(t, 7,
		Interval{AdID: ad, Partitions: []int{1, 2}, FromMinute: 100, ToMinute: 110},
		Interval{AdID: "ad-old", Partitions: []int{3, 4}, FromMinute: 10, ToMinute: 20},
		Interval{AdID: "ad-open", Partitions: []int{5, 6}, FromMinute: 150},
		Interval{AdID: "ad-future", Partitions: []int{5, 6}, FromMinute: 300},
	)
	const gcBefore = 50 // ad-old ended before it
	for _, tc := range []struct {
		name    string
		c       Change
		m       int64
		want    []Interval // the table's splits after the change
		changed Interval
		err     error
	}{
		{
			name: "split",
			c:    Change{AdID: ad, Partitions: []int{8, 9, 10}, Members: []string{"a", "b", "c"}},
			m:    200,
			want: []Interval{
				{AdID: "ad-future", Partitions: []int{5, 6}, FromMinute: 300},
				{AdID: ad, Partitions: []int{1, 2}, FromMinute: 100, ToMinute: 110},
				{AdID: ad, Partitions: []int{8, 9, 10}, FromMinute: 200, Members: []string{"a", "b", "c"}},
				{AdID: "ad-open", Partitions: []int{5, 6}, FromMinute: 150},
			},
			changed: Interval{AdID: ad, Partitions: []int{8, 9, 10}, FromMinute: 200, Members: []string{"a", "b", "c"}},
		},
		{
			name: "split starts after a previous split that ends later",
			c:    Change{AdID: ad, Partitions: []int{8, 9}},
			m:    105,
			want: []Interval{
				{AdID: "ad-future", Partitions: []int{5, 6}, FromMinute: 300},
				{AdID: ad, Partitions: []int{1, 2}, FromMinute: 100, ToMinute: 110},
				{AdID: ad, Partitions: []int{8, 9}, FromMinute: 110},
				{AdID: "ad-open", Partitions: []int{5, 6}, FromMinute: 150},
			},
			changed: Interval{AdID: ad, Partitions: []int{8, 9}, FromMinute: 110},
		},
		{
			name: "unsplit",
			c:    Change{AdID: "ad-open", Unsplit: true},
			m:    200,
			want: []Interval{
				{AdID: "ad-future", Partitions: []int{5, 6}, FromMinute: 300},
				{AdID: ad, Partitions: []int{1, 2}, FromMinute: 100, ToMinute: 110},
				{AdID: "ad-open", Partitions: []int{5, 6}, FromMinute: 150, ToMinute: 200},
			},
			changed: Interval{AdID: "ad-open", Partitions: []int{5, 6}, FromMinute: 150, ToMinute: 200},
		},
		{
			name: "unsplit of a split that has not started removes it",
			c:    Change{AdID: "ad-future", Unsplit: true},
			m:    200,
			want: []Interval{
				{AdID: ad, Partitions: []int{1, 2}, FromMinute: 100, ToMinute: 110},
				{AdID: "ad-open", Partitions: []int{5, 6}, FromMinute: 150},
			},
			changed: Interval{AdID: "ad-future", Partitions: []int{5, 6}, FromMinute: 300, ToMinute: 300},
		},
		{name: "split of a split ad", c: Change{AdID: "ad-open", Partitions: []int{1, 2}}, m: 200, err: ErrAlreadySplit},
		{name: "unsplit of an ad not split now", c: Change{AdID: ad, Unsplit: true}, m: 200, err: ErrNotSplit},
		{name: "unsplit of an unknown ad", c: Change{AdID: "nope", Unsplit: true}, m: 200, err: ErrNotSplit},
		{name: "split over one bad partition", c: Change{AdID: "x", Partitions: []int{1, 99}}, m: 200, err: ErrInvalid},
		{name: "split over nothing", c: Change{AdID: "x"}, m: 200, err: ErrInvalid},
		{name: "no ad", c: Change{Partitions: []int{1, 2}}, m: 200, err: ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, changed, err := base.apply(tc.c, tc.m, gcBefore, testPartitions)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("apply = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if next.Version() != 8 {
				t.Errorf("version %d, want 8", next.Version())
			}
			if got := next.Splits(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("splits\n%+v\nwant\n%+v", got, tc.want)
			}
			if !reflect.DeepEqual(changed, tc.changed) {
				t.Errorf("changed %+v, want %+v", changed, tc.changed)
			}
			// Clicks of every minute before m keep their partition.
			parts := partitioner(t)
			for _, a := range []string{ad, "ad-open", "ad-future"} {
				for m := int64(gcBefore); m < tc.m; m++ {
					id := fmt.Sprintf("e-%d", m)
					if b, n := base.Route(parts, a, id, ms(m, 1)), next.Route(parts, a, id, ms(m, 1)); b != n {
						t.Fatalf("%s minute %d: routed to %d before the change, %d after", a, m, b, n)
					}
				}
			}
		})
	}
}

// TestSameRoutingCatchesRerouting: the guard in apply refuses tables that
// would move clicks already accepted.
func TestSameRoutingCatchesRerouting(t *testing.T) {
	a := mustTable(t, 1, Interval{AdID: "x", Partitions: []int{1, 2}, FromMinute: 100})
	for _, tc := range []struct {
		name string
		b    *Table
		ok   bool
	}{
		{"closed at m", mustTable(t, 2, Interval{AdID: "x", Partitions: []int{1, 2}, FromMinute: 100, ToMinute: 120}), true},
		{"closed before m", mustTable(t, 2, Interval{AdID: "x", Partitions: []int{1, 2}, FromMinute: 100, ToMinute: 119}), false},
		{"other partitions", mustTable(t, 2, Interval{AdID: "x", Partitions: []int{2, 1}, FromMinute: 100}), false},
		{"removed", mustTable(t, 2), false},
		{"new split from m", mustTable(t, 2, Interval{AdID: "x", Partitions: []int{1, 2}, FromMinute: 100}, Interval{AdID: "y", Partitions: []int{3, 4}, FromMinute: 120}), true},
		{"new split before m", mustTable(t, 2, Interval{AdID: "x", Partitions: []int{1, 2}, FromMinute: 100}, Interval{AdID: "y", Partitions: []int{3, 4}, FromMinute: 119}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sameRouting(a, tc.b, 0, 120)
			if (err == nil) != tc.ok {
				t.Fatalf("sameRouting = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestEffectiveMinute(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, tc := range []struct {
		now        string
		skew, lead time.Duration
		want       string
	}{
		{"2026-03-01T12:00:00Z", time.Minute, 30 * time.Second, "2026-03-01T12:02:00Z"},
		{"2026-03-01T12:00:29.999Z", time.Minute, 30 * time.Second, "2026-03-01T12:02:00Z"},
		{"2026-03-01T12:00:30Z", time.Minute, 30 * time.Second, "2026-03-01T12:02:00Z"},
		{"2026-03-01T12:00:30.001Z", time.Minute, 30 * time.Second, "2026-03-01T12:03:00Z"},
		{"2026-03-01T12:00:00Z", 0, 0, "2026-03-01T12:00:00Z"},
		{"2026-03-01T12:00:00.001Z", 0, 0, "2026-03-01T12:01:00Z"},
	} {
		m := EffectiveMinute(at(tc.now), tc.skew, tc.lead)
		if got := time.UnixMilli(m * minuteMs).UTC(); !got.Equal(at(tc.want)) {
			t.Errorf("EffectiveMinute(%s, %v, %v) = %v, want %s", tc.now, tc.skew, tc.lead, got, tc.want)
		}
		if gap := time.UnixMilli(m*minuteMs).Sub(at(tc.now)) - tc.skew; gap < tc.lead || gap >= tc.lead+time.Minute {
			t.Errorf("EffectiveMinute(%s): M·60s − skew − now = %v, want in [%v, %v)", tc.now, gap, tc.lead, tc.lead+time.Minute)
		}
	}
}
