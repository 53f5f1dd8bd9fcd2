package tally

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestStrtab interns and frees strings at random and checks every lookup
// against a map, so that the index's deletions keep every entry findable.
func TestStrtab(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	tab := newStrtab()
	want := map[string]uint32{}
	refs := map[string]int{}
	for i := range 200_000 {
		s := fmt.Sprint("s", r.IntN(3000))
		if r.IntN(2) == 0 || refs[s] == 0 {
			id := tab.intern(s)
			if old, ok := want[s]; ok && old != id {
				t.Fatalf("step %d: %q has id %d, was %d", i, s, id, old)
			}
			tab.incref(id)
			want[s] = id
			refs[s]++
		} else {
			tab.decref(want[s])
			if refs[s]--; refs[s] == 0 {
				delete(want, s)
			}
		}
		if i%1000 == 0 || i > 199_000 {
			if tab.live() != len(want) {
				t.Fatalf("step %d: %d live, want %d", i, tab.live(), len(want))
			}
			for s, id := range want {
				if got, ok := tab.lookup(s); !ok || got != id || tab.str(id) != s {
					t.Fatalf("step %d: lookup(%q) = %d, %v; want %d", i, s, got, ok, id)
				}
			}
			if _, ok := tab.lookup("nope"); ok {
				t.Fatal("found a string never added")
			}
		}
	}
	// Freed strings are garbage in data until it is compacted.
	if live := 6 * tab.live(); len(tab.data) > 2*live+4096+6 {
		t.Fatalf("data holds %d bytes for %d live strings", len(tab.data), tab.live())
	}
	if id := tab.intern("a\xffb"); tab.str(id) != "a\uFFFDb" || tab.intern("a\uFFFDb") != id || tab.internBytes([]byte("a\xffb")) != id {
		t.Fatal("invalid UTF-8 is not interned as its valid form")
	}
}
