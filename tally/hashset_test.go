package tally

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestHashSet(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	var s hashSet
	want := map[uint64]bool{}
	for i := range 100_000 {
		var h uint64
		switch {
		case i%1000 == 0:
			h = 0
		case i%30 == 0 && len(want) > 0:
			// Small values collide: they all have the first slot as
			// home, so each one probes past all those before it. A
			// few thousand make long chains; a third of the hashes
			// made the test quadratic, 37s with -race.
			h = uint64(r.IntN(1 << 20))
		default:
			h = r.Uint64()
		}
		if got := s.add(h); got != !want[h] {
			t.Fatalf("add(%d) = %v, want %v", h, got, !want[h])
		}
		want[h] = true
		if s.len() != len(want) {
			t.Fatalf("len = %d, want %d", s.len(), len(want))
		}
		if 4*s.n > 3*len(s.slots) {
			t.Fatalf("load %d/%d above 3/4", s.n, len(s.slots))
		}
	}
	for h := range want {
		if !s.contains(h) {
			t.Fatalf("contains(%d) = false", h)
		}
	}
	for range 10_000 {
		if h := r.Uint64(); !want[h] && s.contains(h) {
			t.Fatalf("contains(%d) = true for an absent hash", h)
		}
	}
	got := s.appendTo(nil)
	slices.Sort(got)
	if !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
		t.Fatal("appendTo returned other hashes")
	}
	if per := float64(s.memBytes()) / float64(s.len()); per > 22 {
		t.Fatalf("%.1f bytes per hash", per)
	}

	var empty hashSet
	if empty.contains(0) || empty.contains(5) || empty.len() != 0 || len(empty.appendTo(nil)) != 0 {
		t.Fatal("empty set is not empty")
	}
}
