package tally

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
)

// lateScenario fills minute 0 with 800 events, saves it whole once it is
// complete, then counts late events in it: 5, saved as a late part, then
// enough for a merge, saved whole again. It returns the partition and the
// three snapshots.
func lateScenario(t testing.TB) (*Partition, [3]Snap) {
	t.Helper()
	p := newTestPartition(t, testOpts)
	var clicks []click
	for i := range 800 {
		clicks = append(clicks, click{id: fmt.Sprintf("e%d", i), ad: fmt.Sprintf("ad%d", i%37), ms: at(0, int64(i)), country: []string{"DE", "US", "FR"}[i%3], ip: fmt.Sprint(i % 11), user: fmt.Sprint(i % 13)})
	}
	apply(t, p, entry{id: "1-0", clicks: clicks}, tickTo("2-0", end(0)))
	var snaps [3]Snap
	snaps[0] = p.Snapshot(1)
	if len(snaps[0].Minutes) != 1 || len(snaps[0].Late) != 0 {
		t.Fatalf("first snapshot: %d minutes, %d late parts", len(snaps[0].Minutes), len(snaps[0].Late))
	}
	p.MarkSaved(snaps[0])
	late := func(id string, from, n int) {
		var cs []click
		for i := from; i < from+n; i++ {
			cs = append(cs, click{id: fmt.Sprintf("late%d", i), ad: fmt.Sprintf("ad%d", i%5), ms: at(0, 59_000), country: "SE", ip: "9", user: "late"})
		}
		apply(t, p, entry{id: id, clicks: cs})
	}
	late("3-0", 0, 5)
	snaps[1] = p.Snapshot(1)
	if len(snaps[1].Minutes) != 0 || len(snaps[1].Late) != 1 {
		t.Fatalf("after 5 late events: %d minutes, %d late parts", len(snaps[1].Minutes), len(snaps[1].Late))
	}
	p.MarkSaved(snaps[1])
	// 64 + 800/8 late events in all make the delta due for a merge.
	late("4-0", 5, 160)
	snaps[2] = p.Snapshot(1)
	if len(snaps[2].Minutes) != 1 || len(snaps[2].Late) != 0 {
		t.Fatalf("after a merge: %d minutes, %d late parts", len(snaps[2].Minutes), len(snaps[2].Late))
	}
	p.MarkSaved(snaps[2])
	return p, snaps
}

// TestLatePartSmall checks that a late part costs about its events, not
// the minute.
func TestLatePartSmall(t *testing.T) {
	_, snaps := lateScenario(t)
	whole, part := len(snaps[0].Minutes[m0]), len(snaps[1].Late[m0])
	if part > 5*40 || part*20 > whole {
		t.Fatalf("late part of 5 events is %d bytes, the whole minute %d", part, whole)
	}
}

// TestLatePartLeftBySaveThatFailed restores a store where a save wrote the
// minute whole and failed before it deleted the late part: the part
// extends an older state and must be ignored, or its events would count
// twice.
func TestLatePartLeftBySaveThatFailed(t *testing.T) {
	p, snaps := lateScenario(t)
	var st store
	for _, s := range snaps[:2] {
		st.save(s)
	}
	st.minutes[m0] = snaps[2].Minutes[m0]
	st.meta = snaps[2].Meta
	q, err := Restore(3, testOpts, st.meta, st.minutes, st.late)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := q.Count("ad0", m0, m0+1, Filter{}), p.Count("ad0", m0, m0+1, Filter{}); got != want || want != 22+33 {
		t.Fatalf("Count(ad0) = %d after the restore, %d before, want %d", got, want, 22+33)
	}
	if !maps.EqualFunc(fullMinutes(q), fullMinutes(p), bytes.Equal) {
		t.Fatal("restored minutes differ")
	}
	// The stale part stays until the minute is written again, which
	// replaces it.
	apply(t, q, entry{id: "5-0", clicks: []click{{id: "new", ad: "ad0", ms: at(0, 59_000), country: "SE"}}})
	s := q.Snapshot(1)
	st.save(s)
	if len(s.Late) != 1 {
		t.Fatalf("late event after the restore wrote %d minutes, %d late parts", len(s.Minutes), len(s.Late))
	}
	q2, err := Restore(3, testOpts, st.meta, st.minutes, st.late)
	if err != nil {
		t.Fatal(err)
	}
	if got := q2.Count("ad0", m0, m0+1, Filter{}); got != 22+33+1 {
		t.Fatalf("Count(ad0) = %d, want %d", got, 22+33+1)
	}
}

// TestLatePartErrors checks that Restore refuses a late part that is
// malformed or contradicts its minute.
func TestLatePartErrors(t *testing.T) {
	_, snaps := lateScenario(t)
	base, part := snaps[0].Minutes, snaps[1].Late[m0]
	v, err := parseMinute(base[m0])
	if err != nil {
		t.Fatal(err)
	}
	// The part's first id hash replaced by a counted one that keeps the
	// hashes in order.
	pv, err := parseLate(part)
	if err != nil {
		t.Fatal(err)
	}
	second := binary.LittleEndian.Uint64(pv.hashes[8:])
	var dup []byte
	for i := 0; i < len(v.hashes); i += 8 {
		if binary.LittleEndian.Uint64(v.hashes[i:]) < second {
			dup = v.hashes[i : i+8]
		}
	}
	if dup == nil {
		t.Fatal("no counted hash below the part's second")
	}
	counted := slices.Clone(part)
	copy(counted[len(counted)-40:], dup)
	other := slices.Clone(part)
	other[1] += 2 // zig-zag: minute + 1
	tests := []struct {
		name string
		late []byte
		want error
	}{
		{"unknown format", append([]byte{9}, part[1:]...), ErrFormat},
		{"truncated", part[:len(part)-1], errTruncated},
		{"stray bytes", append(slices.Clone(part), 0), errTruncated},
		{"of another minute", other, ErrCorrupt},
		{"id hash already counted", counted, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Restore(3, testOpts, snaps[1].Meta, base, map[int64][]byte{m0: tt.late})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Restore: %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := Restore(3, testOpts, snaps[1].Meta, base, map[int64][]byte{m0: part, m0 + 7: {9}}); err != nil {
		t.Fatalf("a late part of a minute the meta does not list: %v", err)
	}
}
