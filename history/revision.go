package history

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Revision is a recount of part of the history (clickagg recalc): for the
// partitions and minutes it covers, its files (key suffix _rN) replace
// those of lower revisions, once it is applied. Revision 0, what the
// aggregators wrote, needs no applying.
type Revision struct {
	Revision int `json:"revision"`
	// From and To are the Unix minutes [From, To) it covers, whole
	// periods.
	From int64 `json:"from_minute"`
	To   int64 `json:"to_minute"`
	// Partitions it covers, ascending.
	Partitions []int     `json:"partitions"`
	Applied    time.Time `json:"applied"`
}

// Applied is the set of applied revisions, which every query of the
// history reads as one: applying a revision replaces the set at once
// (cluster.Client.PutAppliedRevisions), so no query mixes two.
type Applied struct {
	// Revisions in the order applied, ascending.
	Revisions []Revision `json:"revisions"`
}

// DecodeApplied decodes what Encode wrote; nil or empty data is no
// revision applied.
func DecodeApplied(data []byte) (Applied, error) {
	var a Applied
	if len(data) == 0 {
		return a, nil
	}
	if err := json.Unmarshal(data, &a); err != nil {
		return Applied{}, fmt.Errorf("decode applied history revisions: %w", err)
	}
	return a, nil
}

// Encode encodes a for the cluster's store.
func (a Applied) Encode() ([]byte, error) { return json.Marshal(a) }

// Version is the latest revision applied, 0 when none is: what answers
// computed from the history carry, so a caller can tell which one it got.
func (a Applied) Version() int {
	if len(a.Revisions) == 0 {
		return 0
	}
	return a.Revisions[len(a.Revisions)-1].Revision
}

// With returns a with r applied after the others.
func (a Applied) With(r Revision) (Applied, error) {
	if r.Revision <= a.Version() {
		return a, fmt.Errorf("history revision %d: revision %d is applied already", r.Revision, a.Version())
	}
	return Applied{Revisions: append(slices.Clone(a.Revisions), r)}, nil
}

// For returns the revision whose file holds partition p's minutes [from,
// to): the latest applied one covering them all, else 0.
func (a Applied) For(p int, from, to int64) int {
	for i := len(a.Revisions) - 1; i >= 0; i-- {
		r := a.Revisions[i]
		if r.From <= from && to <= r.To {
			if _, ok := slices.BinarySearch(r.Partitions, p); ok {
				return r.Revision
			}
		}
	}
	return 0
}

// Covers reports whether an applied revision covers minute m of
// partition p: such a minute is answered from the history even while the
// aggregator still has it in memory, since the revision corrected it.
func (a Applied) Covers(p int, m int64) bool { return a.For(p, m, m+1) != 0 }

// Covered returns the parts of partition p's minutes [from, to) that an
// applied revision covers, in order, merged where they touch.
func (a Applied) Covered(p int, from, to int64) [][2]int64 {
	var out [][2]int64
	for _, r := range a.Revisions {
		if _, ok := slices.BinarySearch(r.Partitions, p); !ok {
			continue
		}
		if lo, hi := max(r.From, from), min(r.To, to); lo < hi {
			out = append(out, [2]int64{lo, hi})
		}
	}
	slices.SortFunc(out, func(x, y [2]int64) int { return int(x[0] - y[0]) })
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 && s[0] <= merged[n-1][1] {
			merged[n-1][1] = max(merged[n-1][1], s[1])
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

// Served returns the latest revision applied to any of partition p's
// minutes [from, to), 0 if none: the revision an answer over them was
// computed from.
func (a Applied) Served(p int, from, to int64) int {
	rev := 0
	for _, r := range a.Revisions {
		if _, ok := slices.BinarySearch(r.Partitions, p); ok && r.From < to && from < r.To {
			rev = max(rev, r.Revision)
		}
	}
	return rev
}
