package coordinator

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/ring"
)

// constraints are the operator's wishes a plan honours.
type constraints struct {
	// draining members get no partitions (while anyone else can take them).
	draining map[string]bool
	// pins place a partition on a member while that member is alive and
	// neither draining nor leaving.
	pins map[int]string
}

func (c constraints) clone() constraints {
	d, p := maps.Clone(c.draining), maps.Clone(c.pins)
	if d == nil {
		d = map[string]bool{}
	}
	if p == nil {
		p = map[int]string{}
	}
	return constraints{draining: d, pins: p}
}

// plan is planWith without constraints.
func plan(cur cluster.Assignment, aggregators []cluster.Member, partitions int, load float64) (next cluster.Assignment, moved []int, changed bool, err error) {
	return planWith(cur, aggregators, constraints{}, partitions, load)
}

// planWith returns the assignment that follows cur for the live
// aggregators under cons, the partitions whose owner changes, and whether
// anything changes at all (when nothing does, next is cur and must not be
// written).
//
// The owners come from bounded-load consistent hashing over the eligible
// aggregators (see eligible), which depends only on their set: a change of
// membership moves few partitions, and an unchanged set moves none. Pins
// then override the ring for their partitions.
func planWith(cur cluster.Assignment, aggregators []cluster.Member, cons constraints, partitions int, load float64) (next cluster.Assignment, moved []int, changed bool, err error) {
	if n := len(cur.Owners); n != 0 && n != partitions {
		return cur, nil, false, fmt.Errorf("stored assignment has %d partitions, the cluster %d", n, partitions)
	}
	owners := make([]cluster.Owner, partitions)
	if cands := eligible(aggregators, cons.draining); len(cands) > 0 {
		chosen := choose(cur, cands, partitions)
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
	for p, id := range cons.pins {
		if p < 0 || p >= partitions {
			continue
		}
		if m, ok := pinnable(aggregators, cons.draining, id); ok {
			owners[p] = cluster.Owner{Member: m.ID, Incarnation: m.Incarnation}
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
			owners[p] = old // its epoch, and how it was handed over
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

// eligible returns the aggregators that get partitions: those neither
// draining, leaving nor unhealthy. When there are none, it falls back to
// the draining ones that are healthy and not leaving, then to the
// unhealthy ones that are not leaving, then to every live aggregator: a
// partition served by a member on its way out beats a partition served by
// nobody. So when every aggregator is unhealthy at once (their shared
// Redis is down) nothing moves, and nothing moves back when it returns.
func eligible(aggregators []cluster.Member, draining map[string]bool) []cluster.Member {
	var stay, drained, unhealthy []cluster.Member
	for _, m := range aggregators {
		switch {
		case m.Leaving:
		case m.Unhealthy:
			unhealthy = append(unhealthy, m)
		case draining[m.ID]:
			drained = append(drained, m)
		default:
			stay = append(stay, m)
		}
	}
	switch {
	case len(stay) > 0:
		return stay
	case len(drained) > 0:
		return drained
	case len(unhealthy) > 0:
		return unhealthy
	}
	return aggregators
}

// pinnable returns the live member id if a pin to it is honoured now.
func pinnable(aggregators []cluster.Member, draining map[string]bool, id string) (cluster.Member, bool) {
	for _, m := range aggregators {
		if m.ID == id {
			return m, !m.Leaving && !m.Unhealthy && !draining[id]
		}
	}
	return cluster.Member{}, false
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

// Move is one partition changing owner in a plan.
type Move struct {
	Partition int
	From, To  string // member IDs; From is "" for an unassigned partition
}

// movesOf lists the moves from cur to next, in partition order.
func movesOf(cur, next cluster.Assignment, moved []int) []Move {
	out := make([]Move, 0, len(moved))
	for _, p := range moved {
		var from string
		if p < len(cur.Owners) {
			from = cur.Owners[p].Member
		}
		out = append(out, Move{Partition: p, From: from, To: next.Owners[p].Member})
	}
	return out
}
