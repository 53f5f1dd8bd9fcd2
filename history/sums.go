package history

import (
	"container/heap"
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/clickagg/clickagg/topn"
)

// AdSums are clicks per ad, sorted by ad_id, each ad once.
type AdSums []topn.AdCount

// Get returns ad's clicks, 0 if it has none.
func (s AdSums) Get(ad string) int64 {
	i, ok := slices.BinarySearchFunc(s, ad, func(a topn.AdCount, ad string) int { return strings.Compare(a.AdID, ad) })
	if !ok {
		return 0
	}
	return s[i].Count
}

// AdSums is Sums for every ad, as a list sorted by ad_id: what a
// popular-ads query needs. Whole days served by rollups are merged as the
// sorted lists they are, without a map: over a week of a partition with
// tens of thousands of ads, the map was most of the time.
func (v View) AdSums(ctx context.Context, p int, from, to int64, f Filter) (AdSums, error) {
	var lists []AdSums
	rest := map[string]int64{}
	at := from // the first minute not summed
	if f == (Filter{}) {
		for day := floorDiv(from+dayMinutes-1, dayMinutes); (day+1)*dayMinutes <= to; day++ {
			l, err := v.rollupList(ctx, p, day)
			if errors.Is(err, errNoRollup) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if start := day * dayMinutes; at < start {
				if err := v.periodSums(ctx, p, at, start, f, "", rest); err != nil {
					return nil, err
				}
			}
			lists = append(lists, l)
			at = (day + 1) * dayMinutes
		}
	}
	if at < to {
		if err := v.periodSums(ctx, p, at, to, f, "", rest); err != nil {
			return nil, err
		}
	}
	if len(rest) > 0 {
		l := make(AdSums, 0, len(rest))
		for ad, n := range rest {
			l = append(l, topn.AdCount{AdID: ad, Count: n})
		}
		slices.SortFunc(l, func(a, b topn.AdCount) int { return strings.Compare(a.AdID, b.AdID) })
		lists = append(lists, l)
	}
	return merge(lists), nil
}

// merge adds up sorted lists into one.
func merge(lists []AdSums) AdSums {
	switch len(lists) {
	case 0:
		return nil
	case 1:
		return lists[0]
	}
	total := 0
	h := make(cursors, 0, len(lists))
	for _, l := range lists {
		total += len(l)
		if len(l) > 0 {
			h = append(h, l)
		}
	}
	heap.Init(&h)
	// Most ads are in most lists: the result is about as long as one.
	out := make(AdSums, 0, total/len(lists)+total/8)
	for len(h) > 0 {
		ac := h[0][0]
		if n := len(out); n > 0 && out[n-1].AdID == ac.AdID {
			out[n-1].Count += ac.Count
		} else {
			out = append(out, ac)
		}
		if h[0] = h[0][1:]; len(h[0]) == 0 {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	return out
}

// cursors is a min-heap of sorted lists by their first ad.
type cursors []AdSums

func (c cursors) Len() int           { return len(c) }
func (c cursors) Less(i, j int) bool { return c[i][0].AdID < c[j][0].AdID }
func (c cursors) Swap(i, j int)      { c[i], c[j] = c[j], c[i] }
func (c *cursors) Push(x any)        { *c = append(*c, x.(AdSums)) }
func (c *cursors) Pop() any {
	old := *c
	x := old[len(old)-1]
	*c = old[:len(old)-1]
	return x
}
