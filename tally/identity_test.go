package tally

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// TestClickIdentity checks that a click is the pair (ad_id, event_id): one
// event_id on many ads of one partition is a click of each, and only a
// repeat of the same pair is a duplicate.
func TestClickIdentity(t *testing.T) {
	p := newTestPartition(t, testOpts)
	var clicks []click
	for i := range 41 {
		c := clickAt("same-id-42", at(0, 100))
		c.ad = fmt.Sprintf("dupx-%d", i)
		clicks = append(clicks, c)
	}
	// The same pairs again, one of them twice, and in another entry.
	retry := []click{clicks[3], clicks[3], clicks[40]}
	apply(t, p, entry{id: "1-0", clicks: clicks}, entry{id: "2-0", clicks: retry})
	for i := range 41 {
		ad := fmt.Sprintf("dupx-%d", i)
		if got := p.Count(ad, m0, m0+1, Filter{}); got != 1 {
			t.Errorf("Count(%s) = %d, want 1", ad, got)
		}
	}
	if got, want := p.Stats(), (Stats{EventsApplied: 41, Duplicates: 3}); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}

	// Apply, the decoded entry's path, keys clicks the same way as
	// ApplyEncoded (which apply uses).
	q := newTestPartition(t, testOpts)
	for _, e := range []entry{{id: "1-0", clicks: clicks}, {id: "2-0", clicks: retry}} {
		q.Apply(e.id, e.proto())
	}
	if got, want := q.Stats(), p.Stats(); got != want {
		t.Fatalf("Apply stats %+v, want %+v", got, want)
	}
}

// toLegacy rewrites an encoded minute (format 2, with its dedup hashes) as
// an earlier build stored it: format 1, whose hashes are of the event_ids
// alone, given those ids.
func toLegacy(t *testing.T, b []byte, ids []string) []byte {
	t.Helper()
	v, err := parseMinute(b)
	if err != nil || !v.hasHashes || len(v.hashes)/8 != len(ids) {
		t.Fatalf("minute to convert: %v (hashes %d for %d ids)", err, len(v.hashes)/8, len(ids))
	}
	hs := make([]uint64, len(ids))
	for i, id := range ids {
		hs[i] = xxhash.Sum64String(id)
	}
	slices.Sort(hs)
	out := slices.Clone(b[:len(b)-len(v.hashes)])
	out[0] = minuteFormatLegacy
	for _, h := range hs {
		out = binary.LittleEndian.AppendUint64(out, h)
	}
	return out
}

// TestLegacyIdentityMinutes restores a minute an earlier build stored with
// hashes of event_ids alone: it keeps deduplicating that way, so a retry of
// a click it counted is still dropped, and it is written in format 1 (and
// its late parts too) until it leaves the dedup horizon, then in format 2.
func TestLegacyIdentityMinutes(t *testing.T) {
	p := newTestPartition(t, snapOpts)
	a, b := clickAt("e1", at(0, 1)), clickAt("e2", at(0, 2))
	b.ad = "ad2"
	apply(t, p, entry{id: "1-0", clicks: []click{a, b}})
	s := p.Snapshot(1)
	minutes := map[int64][]byte{m0: toLegacy(t, s.Minutes[m0], []string{"e1", "e2"})}
	q, err := Restore(3, snapOpts, s.Meta, minutes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Snapshot(1).Minutes) != 0 {
		t.Fatal("a format 1 minute with its hashes is written again right away")
	}

	// A retry of a counted click is dropped. So is another ad's click with
	// a counted event_id: in this minute the event_id alone is the key.
	other := clickAt("e2", at(0, 3))
	apply(t, q, entry{id: "2-0", clicks: []click{a, other}}, tickTo("3-0", end(0)))
	if got, want := q.Stats(), (Stats{EventsApplied: 2, Duplicates: 2}); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	// A late click: the snapshot writes the minute whole (format 1), then,
	// after another late click, a late part in format 1.
	late := clickAt("e3", at(0, 4))
	apply(t, q, entry{id: "4-0", clicks: []click{late}})
	st := store{}
	st.meta, st.minutes, st.late = s.Meta, maps2(minutes), map[int64][]byte{}
	snap := q.Snapshot(1)
	q.MarkSaved(snap)
	st.save(snap)
	if got := st.minutes[m0][0]; got != minuteFormatLegacy {
		t.Fatalf("legacy minute written in format %d", got)
	}
	apply(t, q, entry{id: "5-0", clicks: []click{clickAt("e4", at(0, 5)), clickAt("e4", at(0, 6))}})
	snap = q.Snapshot(1)
	q.MarkSaved(snap)
	st.save(snap)
	if lp, ok := st.late[m0]; !ok || lp[0] != lateFormatLegacy {
		t.Fatalf("late part of a legacy minute: %v", st.late[m0])
	}
	r, err := Restore(3, snapOpts, st.meta, st.minutes, st.late)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, r, entry{id: "6-0", clicks: []click{clickAt("e4", at(0, 7))}})
	if got := r.Count("ad1", m0, m0+1, Filter{}); got != 3 {
		t.Fatalf("Count(ad1) after restore = %d, want 3 (e1, e3, e4)", got)
	}

	// Past the dedup horizon it has no hashes, and is written in format 2.
	apply(t, r, tickTo("7-0", end(0)+snapOpts.DedupHorizon.Milliseconds()))
	snap = r.Snapshot(1)
	if b, ok := snap.Minutes[m0]; !ok || b[0] != minuteFormat {
		t.Fatalf("frozen legacy minute not written in format %d", minuteFormat)
	}

	// A late part that identifies clicks otherwise than its minute is
	// corrupt.
	mixed := maps2(st.late)
	mixed[m0] = slices.Clone(mixed[m0])
	mixed[m0][0] = lateFormat
	if _, err := Restore(3, snapOpts, st.meta, st.minutes, mixed); err == nil {
		t.Fatal("restored a format 2 late part on a format 1 minute")
	}
}

func maps2(m map[int64][]byte) map[int64][]byte {
	out := make(map[int64][]byte, len(m))
	for k, v := range m {
		out[k] = slices.Clone(v)
	}
	return out
}
