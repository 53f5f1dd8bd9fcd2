package coordinator

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/ring"
)

// plan returns the assignment that follows cur for the live aggregators,
// the partitions whose owner changes, and whether anything changes at all
// (when nothing does, next is cur and must not be written).
func plan(cur cluster.Assignment, aggregators []cluster.Member, partitions int, load float64) (next cluster.Assignment, moved []int, changed bool, err error) {
	if n := len(cur.Owners); n != 0 && n != partitions {
		return cur, nil, false, fmt.Errorf("stored assignment has %d partitions, the cluster %d", n, partitions)
	}
	owners := make([]cluster.Owner, partitions)
	if len(aggregators) > 0 {
		chosen := choose(cur, aggregators, partitions)
		ids := make([]string, len(chosen))
		incarnation := make(map[string]int64, len(chosen))
		for i, m := range chosen {
			ids[i] = m.ID
			incarnation[m.ID] = m.Incarnation
		}
		placed, err := ring.Assign(ids, partitions, load)
		if err != nil {
			return cur, nil, false, fmt.Errorf("place %d partitions on %d aggregators: %w", partitions, len(ids), err)
		}
		for p, id := range placed {
			owners[p] = cluster.Owner{Member: id, Incarnation: incarnation[id]}
		}
	}
	// Every epoch was once a version, so cur.Version+1 is above each of
	// them; the max guards the fence against an assignment written by
	// something other than a coordinator.
	version := cur.Version + 1
	for _, o := range cur.Owners {
		version = max(version, o.Epoch+1)
	}
	for p := range owners {
		var old cluster.Owner
		if p < len(cur.Owners) {
			old = cur.Owners[p]
		}
		if owners[p].Member == old.Member && owners[p].Incarnation == old.Incarnation {
			owners[p].Epoch = old.Epoch
			continue
		}
		owners[p].Epoch = version
		moved = append(moved, p)
	}
	if len(moved) == 0 && len(cur.Owners) == partitions {
		return cur, nil, false, nil
	}
	return cluster.Assignment{Version: version, Owners: owners}, moved, true, nil
}

// choose returns the aggregators that get partitions. ring.Assign needs at
// least one partition per member, so when there are more aggregators than
// partitions the current owners are kept (to move nothing) and the rest
// are picked by ID (to be deterministic).
func choose(cur cluster.Assignment, aggregators []cluster.Member, partitions int) []cluster.Member {
	if len(aggregators) <= partitions {
		return aggregators
	}
	owning := map[string]bool{}
	for _, o := range cur.Owners {
		owning[o.Member] = true
	}
	ms := slices.Clone(aggregators)
	slices.SortFunc(ms, func(a, b cluster.Member) int {
		if owning[a.ID] != owning[b.ID] {
			if owning[a.ID] {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return ms[:partitions]
}
