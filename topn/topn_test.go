package topn

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// bruteTop ranks every ad with sort.Slice and an order written out long
// hand, independently of Less and Merge.
func bruteTop(counts map[string]int64, n int) []AdCount {
	all := make([]AdCount, 0, len(counts))
	for id, c := range counts {
		all = append(all, AdCount{AdID: id, Count: c})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Count > all[j].Count {
			return true
		}
		if all[i].Count < all[j].Count {
			return false
		}
		return all[i].AdID < all[j].AdID
	})
	if n < len(all) {
		all = all[:n]
	}
	if len(all) == 0 {
		return nil
	}
	return all
}

func TestLess(t *testing.T) {
	tests := []struct {
		name string
		a, b AdCount
		want bool
	}{
		{"higher count first", AdCount{"b", 5}, AdCount{"a", 4}, true},
		{"lower count after", AdCount{"a", 4}, AdCount{"b", 5}, false},
		{"tie smaller id first", AdCount{"a", 4}, AdCount{"b", 4}, true},
		{"tie larger id after", AdCount{"b", 4}, AdCount{"a", 4}, false},
		{"equal is not less", AdCount{"a", 4}, AdCount{"a", 4}, false},
		{"byte order not numeric", AdCount{"ad10", 1}, AdCount{"ad9", 1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Less(tt.a, tt.b); got != tt.want {
				t.Fatalf("Less(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

func TestMergeTable(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		lists [][]AdCount
		want  []AdCount
	}{
		{"no lists", 3, nil, nil},
		{"empty lists", 3, [][]AdCount{{}, nil}, nil},
		{"n zero", 0, [][]AdCount{{{"a", 1}}}, nil},
		{"n negative", -1, [][]AdCount{{{"a", 1}}}, nil},
		{
			"disjoint interleaved", 3,
			[][]AdCount{{{"a", 9}, {"c", 5}, {"e", 1}}, {{"b", 7}, {"d", 6}}},
			[]AdCount{{"a", 9}, {"b", 7}, {"d", 6}},
		},
		{
			"ties across lists by ad id", 4,
			[][]AdCount{{{"z", 3}, {"m", 3}}, {{"b", 3}}, {{"q", 3}, {"a", 2}}},
			[]AdCount{{"b", 3}, {"m", 3}, {"q", 3}, {"z", 3}},
		},
		{
			"shared ad summed", 2,
			[][]AdCount{{{"hot", 4}, {"x", 5}}, {{"hot", 4}}, {{"hot", 1}, {"y", 6}}},
			[]AdCount{{"hot", 9}, {"y", 6}},
		},
		{
			"sum creates tie", 3,
			[][]AdCount{{{"b", 2}, {"c", 5}}, {{"b", 3}, {"a", 5}}},
			[]AdCount{{"a", 5}, {"b", 5}, {"c", 5}},
		},
		{
			"n larger than union", 10,
			[][]AdCount{{{"a", 1}}, {{"b", 2}}},
			[]AdCount{{"b", 2}, {"a", 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Merge(tt.n, tt.lists...)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Merge = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMergeDoesNotModifyInputs(t *testing.T) {
	a := []AdCount{{"x", 1}, {"y", 9}}
	b := []AdCount{{"x", 2}}
	aa, bb := slices.Clone(a), slices.Clone(b)
	got := Merge(1, a, b)
	if want := []AdCount{{"y", 9}}; !slices.Equal(got, want) {
		t.Fatalf("Merge = %v, want %v", got, want)
	}
	if !slices.Equal(a, aa) || !slices.Equal(b, bb) {
		t.Fatalf("inputs modified: %v %v", a, b)
	}
}

// TestMergeDisjointExact splits random ad sets into disjoint groups, gives
// Merge only each group's own top n, and checks the answer against a brute
// force ranking of all ads. Counts are drawn from a small range so that ties
// are frequent and tie order is exercised.
func TestMergeDisjointExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 300 {
		nAds := 1 + r.IntN(400)
		groups := 1 + r.IntN(8)
		n := 1 + r.IntN(60)
		all := make(map[string]int64, nAds)
		parts := make([]map[string]int64, groups)
		for g := range parts {
			parts[g] = map[string]int64{}
		}
		for i := range nAds {
			id := fmt.Sprintf("ad%d", r.IntN(5000)+i*5000)
			c := 1 + r.Int64N(int64(1+r.IntN(20)))
			all[id] = c
			parts[r.IntN(groups)][id] = c
		}
		lists := make([][]AdCount, groups)
		for g, p := range parts {
			lists[g] = bruteTop(p, n)
		}
		got := Merge(n, lists...)
		want := bruteTop(all, n)
		if !slices.Equal(got, want) {
			t.Fatalf("iter %d (ads %d groups %d n %d): Merge =\n%v\nwant\n%v", iter, nAds, groups, n, got, want)
		}
	}
}

// TestMergeSharedFullLists gives every list the full counts of its ads,
// with some ads spread over several lists (a split ad's sub-keys), and
// checks the sums and the ranking against brute force.
func TestMergeSharedFullLists(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for iter := range 200 {
		groups := 1 + r.IntN(6)
		lists := make([][]AdCount, groups)
		total := map[string]int64{}
		for range 1 + r.IntN(300) {
			id := fmt.Sprintf("ad%03d", r.IntN(150))
			if _, ok := total[id]; ok {
				continue
			}
			// Spread the ad over one or more distinct lists.
			for _, g := range r.Perm(groups)[:1+r.IntN(groups)] {
				c := 1 + r.Int64N(10)
				lists[g] = append(lists[g], AdCount{AdID: id, Count: c})
				total[id] += c
			}
		}
		n := 1 + r.IntN(200)
		if got, want := Merge(n, lists...), bruteTop(total, n); !slices.Equal(got, want) {
			t.Fatalf("iter %d: Merge =\n%v\nwant\n%v", iter, got, want)
		}
	}
}

func BenchmarkMerge(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	lists := make([][]AdCount, 16)
	for g := range lists {
		m := map[string]int64{}
		for i := range 1000 {
			m[fmt.Sprintf("g%d-ad%d", g, i)] = r.Int64N(100000)
		}
		lists[g] = bruteTop(m, 1000)
	}
	b.ReportAllocs()
	for b.Loop() {
		Merge(1000, lists...)
	}
}

func TestKeepLargest(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		n := r.IntN(20)
		var h []int64
		var all []int64
		for range r.IntN(100) {
			c := r.Int64N(30)
			all = append(all, c)
			h = KeepLargest(h, n, c)
		}
		slices.Sort(all)
		slices.Reverse(all)
		want := all[:min(n, len(all))]
		got := slices.Clone(h)
		slices.Sort(got)
		slices.Reverse(got)
		if !slices.Equal(got, want) {
			t.Fatalf("n=%d: kept %v, want %v", n, got, want)
		}
		if len(h) > 0 && h[0] != want[len(want)-1] {
			t.Fatalf("n=%d: h[0] = %d, want the smallest kept, %d", n, h[0], want[len(want)-1])
		}
	}
}
