package coordinator

import (
	"reflect"
	"slices"
	"testing"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/ring"
)

func agg(id string, inc int64) cluster.Member {
	return cluster.Member{ID: id, Role: cluster.RoleAggregator, Incarnation: inc}
}

// uniform is an assignment of every partition to one owner at one epoch.
func uniform(version uint64, partitions int, o cluster.Owner) cluster.Assignment {
	a := cluster.Assignment{Version: version, Owners: make([]cluster.Owner, partitions)}
	for p := range a.Owners {
		a.Owners[p] = o
	}
	return a
}

func TestPlan(t *testing.T) {
	const parts = 8
	tests := []struct {
		name        string
		cur         cluster.Assignment
		members     []cluster.Member
		want        cluster.Assignment
		wantMoved   []int
		wantChanged bool
	}{
		{
			name:        "no aggregators, nothing stored: all unassigned",
			members:     nil,
			want:        uniform(1, parts, cluster.Owner{}),
			wantChanged: true,
		},
		{
			name:        "no aggregators, unassigned stored: no change",
			cur:         uniform(1, parts, cluster.Owner{}),
			want:        uniform(1, parts, cluster.Owner{}),
			wantChanged: false,
		},
		{
			name:        "first aggregator takes everything at the new version",
			cur:         uniform(1, parts, cluster.Owner{}),
			members:     []cluster.Member{agg("a", 10)},
			want:        uniform(2, parts, cluster.Owner{Member: "a", Incarnation: 10, Epoch: 2}),
			wantMoved:   []int{0, 1, 2, 3, 4, 5, 6, 7},
			wantChanged: true,
		},
		{
			name:        "same owner, same incarnation: no change",
			cur:         uniform(5, parts, cluster.Owner{Member: "a", Incarnation: 10, Epoch: 3}),
			members:     []cluster.Member{agg("a", 10)},
			want:        uniform(5, parts, cluster.Owner{Member: "a", Incarnation: 10, Epoch: 3}),
			wantChanged: false,
		},
		{
			name:        "same owner, new incarnation: every epoch rises",
			cur:         uniform(5, parts, cluster.Owner{Member: "a", Incarnation: 10, Epoch: 3}),
			members:     []cluster.Member{agg("a", 11)},
			want:        uniform(6, parts, cluster.Owner{Member: "a", Incarnation: 11, Epoch: 6}),
			wantMoved:   []int{0, 1, 2, 3, 4, 5, 6, 7},
			wantChanged: true,
		},
		{
			name:        "owner leaves: unassigned at a higher epoch",
			cur:         uniform(5, parts, cluster.Owner{Member: "a", Incarnation: 10, Epoch: 3}),
			members:     []cluster.Member{},
			want:        uniform(6, parts, cluster.Owner{Epoch: 6}),
			wantMoved:   []int{0, 1, 2, 3, 4, 5, 6, 7},
			wantChanged: true,
		},
		{
			name:        "an epoch above the version (not written by a coordinator) still rises",
			cur:         uniform(2, parts, cluster.Owner{Member: "a", Incarnation: 10, Epoch: 9}),
			members:     []cluster.Member{agg("a", 12)},
			want:        uniform(10, parts, cluster.Owner{Member: "a", Incarnation: 12, Epoch: 10}),
			wantMoved:   []int{0, 1, 2, 3, 4, 5, 6, 7},
			wantChanged: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, moved, changed, err := plan(tt.cur, tt.members, parts, ring.DefaultLoad)
			if err != nil {
				t.Fatal(err)
			}
			if changed != tt.wantChanged || !slices.Equal(moved, tt.wantMoved) || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("plan = %+v, moved %v, changed %v; want %+v, moved %v, changed %v", got, moved, changed, tt.want, tt.wantMoved, tt.wantChanged)
			}
		})
	}
}

func TestPlanMovesOnlyWhatRingMoves(t *testing.T) {
	const parts = 64
	three := []cluster.Member{agg("a", 1), agg("b", 2), agg("c", 3)}
	first, _, _, err := plan(cluster.Assignment{}, three, parts, ring.DefaultLoad)
	if err != nil {
		t.Fatal(err)
	}
	// b leaves: the owners are exactly the ring's for {a, c}; a partition
	// keeps its epoch iff its owner stays.
	after, moved, changed, err := plan(first, []cluster.Member{three[0], three[2]}, parts, ring.DefaultLoad)
	if err != nil || !changed {
		t.Fatalf("plan after b left: changed %v, %v", changed, err)
	}
	want, err := ring.Assign([]string{"a", "c"}, parts, ring.DefaultLoad)
	if err != nil {
		t.Fatal(err)
	}
	if after.Version != 2 {
		t.Fatalf("version %d, want 2", after.Version)
	}
	var wantMoved []int
	for p, o := range after.Owners {
		if o.Member != want[p] {
			t.Fatalf("partition %d owned by %s, ring says %s", p, o.Member, want[p])
		}
		prev := first.Owners[p]
		if prev.Member == "b" && o.Member == "b" {
			t.Fatalf("partition %d still on b", p)
		}
		if o.Member == prev.Member {
			if o.Epoch != prev.Epoch {
				t.Fatalf("partition %d stayed on %s but its epoch went %d → %d", p, o.Member, prev.Epoch, o.Epoch)
			}
			continue
		}
		wantMoved = append(wantMoved, p)
		if o.Epoch != 2 {
			t.Fatalf("partition %d moved %s → %s at epoch %d, want 2", p, prev.Member, o.Member, o.Epoch)
		}
	}
	if !slices.Equal(moved, wantMoved) || len(moved) == 0 {
		t.Fatalf("moved %v, want %v", moved, wantMoved)
	}
}

func TestPlanMoreAggregatorsThanPartitions(t *testing.T) {
	cur := cluster.Assignment{Version: 3, Owners: []cluster.Owner{
		{Member: "z", Incarnation: 26, Epoch: 2},
		{Member: "y", Incarnation: 25, Epoch: 3},
	}}
	members := []cluster.Member{agg("a", 1), agg("b", 2), agg("y", 25), agg("z", 26)}
	got, _, _, err := plan(cur, members, 2, ring.DefaultLoad)
	if err != nil {
		t.Fatal(err)
	}
	// The current owners y and z are kept, although a and b sort first.
	want, err := ring.Assign([]string{"y", "z"}, 2, ring.DefaultLoad)
	if err != nil {
		t.Fatal(err)
	}
	for p, o := range got.Owners {
		if o.Member != want[p] {
			t.Fatalf("partition %d owned by %q, want %q (owners %+v)", p, o.Member, want[p], got.Owners)
		}
	}
	fresh, _, _, err := plan(cluster.Assignment{}, members, 2, ring.DefaultLoad)
	if err != nil {
		t.Fatal(err)
	}
	for p, o := range fresh.Owners {
		if o.Member != "a" && o.Member != "b" {
			t.Fatalf("fresh partition %d owned by %q, want a or b", p, o.Member)
		}
	}
}

func TestPlanRefusesOtherPartitionCount(t *testing.T) {
	cur := uniform(1, 4, cluster.Owner{Member: "a", Incarnation: 1, Epoch: 1})
	if _, _, _, err := plan(cur, []cluster.Member{agg("a", 1)}, 8, ring.DefaultLoad); err == nil {
		t.Fatal("plan over a stored assignment of 4 partitions for 8 succeeded")
	}
}

// TestPlanWithConstraints: drained and leaving members get nothing while
// someone else can take the partitions; pins override the ring while their
// member is alive and neither draining nor leaving.
func TestPlanWithConstraints(t *testing.T) {
	const parts = 16
	a, b, c := agg("a", 1), agg("b", 2), agg("c", 3)
	leaving := func(m cluster.Member) cluster.Member { m.Leaving = true; return m }
	unhealthy := func(m cluster.Member) cluster.Member { m.Unhealthy = true; return m }
	ringOf := func(ids ...string) []string {
		o, err := ring.Assign(ids, parts, ring.DefaultLoad)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	abc := ringOf("a", "b", "c")
	cur, _, _, err := plan(cluster.Assignment{}, []cluster.Member{a, b, c}, parts, ring.DefaultLoad)
	if err != nil {
		t.Fatal(err)
	}
	// The partition the ring gives a, pinned to b.
	pinned := slices.Index(abc, "a")
	tests := []struct {
		name    string
		members []cluster.Member
		cons    constraints
		want    []string // owner of each partition
	}{
		{"nothing asked", []cluster.Member{a, b, c}, constraints{}, abc},
		{"b draining", []cluster.Member{a, b, c}, constraints{draining: map[string]bool{"b": true}}, ringOf("a", "c")},
		{"b leaving", []cluster.Member{a, leaving(b), c}, constraints{}, ringOf("a", "c")},
		{"everyone draining: the ring over all", []cluster.Member{a, b, c}, constraints{draining: map[string]bool{"a": true, "b": true, "c": true}}, abc},
		{"the others leaving: the drained one takes all", []cluster.Member{leaving(a), b, leaving(c)}, constraints{draining: map[string]bool{"b": true}}, ringOf("b")},
		{"a drained member's drain key without the member", []cluster.Member{a, c}, constraints{draining: map[string]bool{"b": true}}, ringOf("a", "c")},
		{"b unhealthy", []cluster.Member{a, unhealthy(b), c}, constraints{}, ringOf("a", "c")},
		{"everyone unhealthy: nothing moves", []cluster.Member{unhealthy(a), unhealthy(b), unhealthy(c)}, constraints{}, abc},
		{"the others unhealthy: a drained healthy one takes all", []cluster.Member{unhealthy(a), b, unhealthy(c)}, constraints{draining: map[string]bool{"b": true}}, ringOf("b")},
		{"the others leaving: an unhealthy one takes all", []cluster.Member{leaving(a), unhealthy(b), leaving(c)}, constraints{}, ringOf("b")},
		{"pin to an unhealthy member is ignored", []cluster.Member{a, unhealthy(b), c}, constraints{pins: map[int]string{pinned: "b"}}, ringOf("a", "c")},
		{"pin", []cluster.Member{a, b, c}, constraints{pins: map[int]string{pinned: "b"}}, with(abc, pinned, "b")},
		{"pin to a draining member is ignored", []cluster.Member{a, b, c}, constraints{draining: map[string]bool{"b": true}, pins: map[int]string{pinned: "b"}}, ringOf("a", "c")},
		{"pin to a leaving member is ignored", []cluster.Member{a, leaving(b), c}, constraints{pins: map[int]string{pinned: "b"}}, ringOf("a", "c")},
		{"pin to a dead member is ignored", []cluster.Member{a, c}, constraints{pins: map[int]string{pinned: "b"}}, ringOf("a", "c")},
		{"pin out of range is ignored", []cluster.Member{a, b, c}, constraints{pins: map[int]string{parts: "b", -1: "b"}}, abc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, moved, changed, err := planWith(cur, tt.members, tt.cons, parts, ring.DefaultLoad)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			var wantMoved []int
			for p, o := range next.Owners {
				got = append(got, o.Member)
				if o.Member != cur.Owners[p].Member {
					wantMoved = append(wantMoved, p)
					if o.Epoch != cur.Version+1 {
						t.Errorf("moved partition %d has epoch %d, want %d", p, o.Epoch, cur.Version+1)
					}
				} else if o.Epoch != cur.Owners[p].Epoch {
					t.Errorf("kept partition %d changed epoch %d → %d", p, cur.Owners[p].Epoch, o.Epoch)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("owners %v, want %v", got, tt.want)
			}
			if !slices.Equal(moved, wantMoved) || changed != (len(wantMoved) > 0) {
				t.Fatalf("moved %v changed %v, want %v", moved, changed, wantMoved)
			}
			if ms := movesOf(cur, next, moved); len(ms) != len(moved) {
				t.Fatalf("movesOf = %v for %v", ms, moved)
			}
		})
	}
}

func with(owners []string, p int, id string) []string {
	o := slices.Clone(owners)
	o[p] = id
	return o
}
