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
