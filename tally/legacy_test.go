package tally

import (
	"bytes"
	"errors"
	"maps"
	"math"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// TestRestoreLegacy restores minutes stored by the previous build, as
// clickaggv1.MinuteState messages with ip and user_id as text, and checks
// that the state answers like the one that applied the same log, that the
// minutes are written again in the current format, and that those restore
// unchanged.
func TestRestoreLegacy(t *testing.T) {
	entries := genLog(genConfig{seed: 31, events: 6000, minutes: 6, ads: 200, dupRate: 0.05})
	p := newTestPartition(t, snapOpts)
	tr := newTruth(snapOpts)
	for _, e := range entries {
		tr.apply(e)
		p.Apply(e.id, e.proto())
	}
	s := p.Snapshot(1)
	legacy := map[int64][]byte{}
	horizon := tr.watermark - snapOpts.DedupHorizon.Milliseconds()
	for _, m := range decodeMeta(t, s.Meta).GetMinutes() {
		ms := &clickaggv1.MinuteState{Minute: m, Revision: tr.revision[m]}
		for c, n := range tr.cells[m] {
			ms.Cells = append(ms.Cells, &clickaggv1.Cell{AdId: c.ad, Country: c.country, Ip: c.ip, UserId: c.user, Count: n})
		}
		slices.SortFunc(ms.Cells, compareCells)
		if (m+1)*60000 > horizon {
			for c := range tr.seen[m] {
				ms.EventHashes = append(ms.EventHashes, xxhash.Sum64String(c.id))
			}
			slices.Sort(ms.EventHashes)
		}
		b, err := proto.Marshal(ms)
		if err != nil {
			t.Fatal(err)
		}
		legacy[m] = b
	}
	q, err := Restore(3, snapOpts, s.Meta, legacy, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Filter{{}, {Country: "DE"}, {IP: "10.0.2.5"}, {UserID: "u77"}, {Country: "US", UserID: "u12"}} {
		if got, want := q.Top(math.MinInt64, math.MaxInt64, 50, f), p.Top(math.MinInt64, math.MaxInt64, 50, f); !slices.Equal(got, want) {
			t.Fatalf("Top(%+v) = %v, want %v", f, got, want)
		}
		for _, a := range p.Top(math.MinInt64, math.MaxInt64, 20, Filter{}) {
			if got, want := q.Count(a.AdID, math.MinInt64, math.MaxInt64, f), p.Count(a.AdID, math.MinInt64, math.MaxInt64, f); got != want {
				t.Fatalf("Count(%s, %+v) = %d, want %d", a.AdID, f, got, want)
			}
		}
	}
	qs := q.Snapshot(1)
	if !slices.Equal(slices.Sorted(maps.Keys(qs.Minutes)), slices.Sorted(maps.Keys(legacy))) {
		t.Fatalf("minutes written again %v, want all of %v", slices.Sorted(maps.Keys(qs.Minutes)), slices.Sorted(maps.Keys(legacy)))
	}
	r, err := Restore(3, snapOpts, qs.Meta, qs.Minutes, qs.Late)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(fullMinutes(r), qs.Minutes, bytes.Equal) {
		t.Fatal("converted minutes do not restore unchanged")
	}
	// A legacy minute that contradicts itself is corrupt; bytes that are
	// neither format are refused as an unknown format.
	for m, b := range legacy {
		var ms clickaggv1.MinuteState
		if err := proto.Unmarshal(b, &ms); err != nil {
			t.Fatal(err)
		}
		if len(ms.EventHashes) == 0 {
			continue
		}
		ms.Cells[0].Count++
		bad, _ := proto.Marshal(&ms)
		minutes := maps.Clone(legacy)
		minutes[m] = bad
		if _, err := Restore(3, snapOpts, s.Meta, minutes, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("legacy minute with a click too many: %v, want ErrCorrupt", err)
		}
		break
	}
	if _, err := q.restoreMinute(m0, []byte{0xff, 0xff}, nil, false); !errors.Is(err, ErrFormat) {
		t.Fatalf("garbage: %v", err)
	}
}
