package tally

import (
	"slices"
	"testing"
)

// TestRevisions checks Revisions against the ground truth on a random log
// with late events: at every point, each range lists exactly the truth's
// minutes in memory with a revision above zero, in order, with their
// revisions; and a partition restored from its snapshots, which is how a
// partition moves to another owner, reports the same revisions as the one
// that applied the log.
func TestRevisions(t *testing.T) {
	entries := genLog(genConfig{seed: 43, events: 30_000, minutes: 20, ads: 200, dupRate: 0.05, sharedIDRate: 0.03})
	p := newTestPartition(t, snapOpts)
	tr := newTruth(snapOpts)
	var st store
	want := func(from, to int64) []MinuteRevision {
		var out []MinuteRevision
		for _, m := range tr.minutesInMemory() {
			if m >= from && m < to && tr.revision[m] > 0 {
				out = append(out, MinuteRevision{Minute: m, Revision: tr.revision[m]})
			}
		}
		return out
	}
	late, checked := 0, 0
	for i, e := range entries {
		tr.apply(e)
		apply(t, p, e)
		if i%50 == 0 {
			snap := p.Snapshot(1)
			p.MarkSaved(snap)
			st.save(snap)
		}
		if i%20 != 0 {
			continue
		}
		first, ok := p.FirstMinute()
		if !ok {
			continue
		}
		for _, r := range [][2]int64{{first - 3, first + 30}, {first + 2, first + 5}, {first + 4, first + 4}, {first + 9, first + 3}} {
			got := p.Revisions(r[0], r[1])
			if w := want(r[0], r[1]); !slices.Equal(got, w) {
				t.Fatalf("after entry %d: Revisions(%d, %d) = %v, want %v", i, r[0], r[1], got, w)
			}
			late += len(got)
			checked++
		}
	}
	if late < 100 {
		t.Fatalf("only %d minutes with late events seen over %d checks: the log does not exercise revisions", late, checked)
	}

	snap := p.Snapshot(1)
	p.MarkSaved(snap)
	st.save(snap)
	r, err := Restore(3, snapOpts, st.meta, st.minutes, st.late)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := p.FirstMinute()
	got, w := r.Revisions(first, first+30), p.Revisions(first, first+30)
	if len(w) == 0 || !slices.Equal(got, w) {
		t.Fatalf("restored partition's revisions %v, want the applying one's %v (not empty)", got, w)
	}
}
