package topn

import (
	"cmp"
	"slices"
)

// AdCount is the number of clicks of one ad.
type AdCount struct {
	AdID  string
	Count int64
}

// Less reports whether a ranks before b: higher count first, then the
// smaller ad_id.
func Less(a, b AdCount) bool {
	if a.Count != b.Count {
		return a.Count > b.Count
	}
	return a.AdID < b.AdID
}

// compare is Less as a three-way comparison for the slices package.
func compare(a, b AdCount) int {
	if c := cmp.Compare(b.Count, a.Count); c != 0 {
		return c
	}
	return cmp.Compare(a.AdID, b.AdID)
}

// Merge returns the top n of the given lists in ranking order. An ad that
// appears in several lists is counted once with the sum of its counts. The
// result is exact when the lists hold disjoint ads and each is the exact top
// n of its own set, or when every list holding an ad holds all of that ad's
// counts. Merge does not modify its inputs.
func Merge(n int, lists ...[]AdCount) []AdCount {
	if n <= 0 {
		return nil
	}
	total := 0
	for _, l := range lists {
		total += len(l)
	}
	if total == 0 {
		return nil
	}
	sums := make(map[string]int64, total)
	for _, l := range lists {
		for _, a := range l {
			sums[a.AdID] += a.Count
		}
	}
	all := make([]AdCount, 0, len(sums))
	for id, c := range sums {
		all = append(all, AdCount{AdID: id, Count: c})
	}
	// The inputs are at most a few thousand entries per list; sorting them
	// all is simpler than a heap and costs about as much at that size.
	slices.SortFunc(all, compare)
	return slices.Clip(all[:min(n, len(all))])
}
