package tally

import (
	"errors"
	"testing"
)

// TestFinal checks Final against the ground truth on a random log: every
// range it returns holds exactly the truth's rows of those minutes, and it
// refuses ranges that can still change or may have left memory.
func TestFinal(t *testing.T) {
	entries := genLog(genConfig{seed: 41, events: 40_000, minutes: 20, ads: 300, dupRate: 0.05, sharedIDRate: 0.03})
	p := newTestPartition(t, snapOpts)
	tr := newTruth(snapOpts)
	horizon := snapOpts.DedupHorizon.Milliseconds()
	retention := snapOpts.Retention.Milliseconds()
	checked, notFinal, gone := 0, 0, 0
	for i, e := range entries {
		tr.apply(e)
		p.Apply(e.id, e.proto())
		if i%20 != 0 {
			continue
		}
		first, ok := p.FirstMinute()
		if !ok {
			continue
		}
		for from := first - 2; from < first+25; from++ {
			to := from + 1 + from%2
			rows, err := p.Final(from, to)
			final := (to)*60000 <= tr.watermark-horizon
			inMemory := (from+1)*60000 > tr.watermark-retention
			switch {
			case !final:
				if !errors.Is(err, ErrNotFinal) {
					t.Fatalf("Final(%d, %d) = %v, want ErrNotFinal", from, to, err)
				}
				notFinal++
				continue
			case !inMemory:
				if !errors.Is(err, ErrGone) {
					t.Fatalf("Final(%d, %d) = %v, want ErrGone", from, to, err)
				}
				gone++
				continue
			case err != nil:
				t.Fatalf("Final(%d, %d): %v", from, to, err)
			}
			type key struct {
				m           int64
				ad, country string
			}
			want := map[key]int64{}
			for m := from; m < to; m++ {
				for c, n := range tr.cells[m] {
					want[key{m, c.ad, c.country}] += n
				}
			}
			got := map[key]int64{}
			for j, r := range rows {
				if j > 0 && (rows[j-1].AdID > r.AdID || rows[j-1].AdID == r.AdID && rows[j-1].Minute > r.Minute) {
					t.Fatalf("rows out of order at %d", j)
				}
				if r.Revision != tr.revision[r.Minute] {
					t.Fatalf("minute %d revision %d, want %d", r.Minute, r.Revision, tr.revision[r.Minute])
				}
				got[key{r.Minute, r.AdID, r.Country}] += r.Clicks
			}
			if len(got) != len(want) {
				t.Fatalf("Final(%d, %d): %d rows, want %d", from, to, len(got), len(want))
			}
			for k, n := range want {
				if got[k] != n {
					t.Fatalf("Final(%d, %d): %+v = %d, want %d", from, to, k, got[k], n)
				}
			}
			checked++
		}
	}
	if checked < 50 || notFinal == 0 || gone == 0 {
		t.Fatalf("checked %d ranges (%d not final, %d gone)", checked, notFinal, gone)
	}
}

// TestFinalHashes: a final row carries the user and ip hashes of its
// clicks, which filtered counts add up the same way as Count.
func TestFinalHashes(t *testing.T) {
	p := newTestPartition(t, testOpts)
	a := clickAt("e1", at(0, 1))
	b := clickAt("e2", at(0, 2))
	b.user, b.ip = "u2", "10.0.0.2"
	apply(t, p, entry{id: "1-0", clicks: []click{a, b}}, tickTo("2-0", end(0)+testOpts.DedupHorizon.Milliseconds()))
	rows, err := p.Final(m0, m0+1)
	if err != nil || len(rows) != 1 {
		t.Fatalf("Final = %v, %v", rows, err)
	}
	r := rows[0]
	if r.Clicks != 2 || len(r.UserHashes) != 2 || len(r.IPHashes) != 2 ||
		r.UserHashes[0] != hashField("u1") || r.UserHashes[1] != hashField("u2") || r.IPHashes[1] != hashField("10.0.0.2") {
		t.Fatalf("row %+v", r)
	}
}
