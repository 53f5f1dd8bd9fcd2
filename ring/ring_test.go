package ring

import (
	"fmt"
	"testing"
)

func TestPartitionIsStableAndInRange(t *testing.T) {
	p, err := NewPartitioner(64)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	for i := range 10000 {
		ad := fmt.Sprintf("ad-%d", i)
		a, b := p.Partition(ad), p.Partition(ad)
		if a != b || a < 0 || a >= 64 {
			t.Fatalf("Partition(%q) = %d, %d", ad, a, b)
		}
		seen[a]++
	}
	if len(seen) != 64 {
		t.Fatalf("10000 ads reach %d of 64 partitions", len(seen))
	}
}

func TestPartitionerRejectsBadCounts(t *testing.T) {
	for _, n := range []int{0, -1, MaxPartitions + 1} {
		if _, err := NewPartitioner(n); err == nil {
			t.Errorf("NewPartitioner(%d) succeeded", n)
		}
	}
}

func TestAssignBoundsLoadAndIgnoresOrder(t *testing.T) {
	for n := 1; n <= 8; n++ {
		var ms []string
		for i := range n {
			ms = append(ms, fmt.Sprintf("aggregator-%d", i))
		}
		owners, err := Assign(ms, 64, DefaultLoad)
		if err != nil {
			t.Fatalf("%d members: %v", n, err)
		}
		rev := make([]string, n)
		for i := range ms {
			rev[n-1-i] = ms[i]
		}
		owners2, err := Assign(rev, 64, DefaultLoad)
		if err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		for p, o := range owners {
			if o != owners2[p] {
				t.Fatalf("%d members: partition %d owned by %s or %s depending on order", n, p, o, owners2[p])
			}
			counts[o]++
		}
		mean := 64.0 / float64(n)
		for m, c := range counts {
			if float64(c) > mean*1.25+1 {
				t.Errorf("%d members: %s owns %d partitions, mean %.1f", n, m, c, mean)
			}
		}
	}
}

func TestAssignMovesFewPartitions(t *testing.T) {
	before, err := Assign([]string{"a", "b", "c", "d"}, 64, DefaultLoad)
	if err != nil {
		t.Fatal(err)
	}
	after, err := Assign([]string{"a", "b", "c", "d", "e"}, 64, DefaultLoad)
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for p := range before {
		if before[p] != after[p] {
			moved++
		}
	}
	// The ideal is 64/5 ≈ 13 moves; bounded loads cost some more.
	if moved > 32 {
		t.Fatalf("adding a fifth member moved %d of 64 partitions", moved)
	}
}

func TestAssignRefusesWhatWouldPanic(t *testing.T) {
	cases := []struct {
		name       string
		members    []string
		partitions int
		load       float64
	}{
		{"no members", nil, 64, 1.25},
		{"more members than partitions", []string{"a", "b", "c"}, 2, 1.25},
		{"load below one", []string{"a"}, 64, 0.5},
		{"empty name", []string{""}, 64, 1.25},
		{"zero partitions", []string{"a"}, 0, 1.25},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Assign(c.members, c.partitions, c.load); err == nil {
				t.Fatal("Assign succeeded")
			}
		})
	}
}
