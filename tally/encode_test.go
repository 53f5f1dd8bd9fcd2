package tally

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// minuteState builds m as a message, the plain way that encodeMinute
// replaces; it is the reference the encoder is checked against.
func (p *Partition) minuteState(m *minute) *clickaggv1.MinuteState {
	ms := &clickaggv1.MinuteState{
		Minute:   m.start,
		Revision: m.revision,
		Cells:    make([]*clickaggv1.Cell, len(m.cells.keys)),
	}
	for i, k := range m.cells.keys {
		ms.Cells[i] = &clickaggv1.Cell{
			AdId:    p.ads.strs[k.ad],
			Country: p.attrs.strs[k.country],
			Ip:      p.attrs.strs[k.ip],
			UserId:  p.attrs.strs[k.user],
			Count:   m.cells.counts[i],
		}
	}
	slices.SortFunc(ms.Cells, compareCells)
	if m.seen != nil {
		ms.EventHashes = m.seen.appendTo(nil)
		slices.Sort(ms.EventHashes)
	}
	return ms
}

func compareCells(a, b *clickaggv1.Cell) int {
	for _, c := range [][2]string{{a.AdId, b.AdId}, {a.Country, b.Country}, {a.Ip, b.Ip}, {a.UserId, b.UserId}} {
		if c := strings.Compare(c[0], c[1]); c != 0 {
			return c
		}
	}
	return 0
}

// TestEncodeMinuteMatchesProto checks the hand-written encoder against
// deterministic proto.Marshal on every minute of a random log, filling,
// complete and frozen, and on edge cases: minute 0, negative minutes, empty
// strings, non-ASCII strings, the zero hash.
func TestEncodeMinuteMatchesProto(t *testing.T) {
	p := newTestPartition(t, snapOpts)
	entries := genLog(genConfig{seed: 5, events: 20_000, minutes: 12, ads: 300, dupRate: 0.05})
	check := func() int {
		p.mu.RLock()
		defer p.mu.RUnlock()
		for _, start := range p.order {
			m := p.minutes[start]
			want, err := marshal.Marshal(p.minuteState(m))
			if err != nil {
				t.Fatal(err)
			}
			if got := p.encodeMinute(m); !bytes.Equal(got, want) {
				t.Fatalf("minute %d: encodeMinute differs from proto.Marshal (%d vs %d bytes)", start, len(got), len(want))
			}
		}
		return len(p.order)
	}
	checked := 0
	for i, e := range entries {
		p.Apply(e.id, e.proto())
		if i%20 == 0 {
			checked += check()
		}
	}
	if checked < 50 {
		t.Fatalf("checked only %d minute states", checked)
	}

	p = newTestPartition(t, testOpts)
	apply(t, p, entry{id: "1-0", clicks: []click{
		{id: "a", ad: "", ms: 0},
		{id: "b", ad: "äd", ms: 1, country: "ÜS", ip: "::1", user: "ユーザー"},
		{id: "c", ad: "x", ms: -1, user: "u"},
		{id: "d", ad: "x", ms: -60_001, country: "US"},
		{id: "e", ad: "x", ms: at(3, 0)},
	}})
	// No short event id is known to hash to 0, so add the zero hash directly.
	p.minutes[m0+3].seen.add(0)
	if got := check(); got != 4 {
		t.Fatalf("checked %d minutes, want 4", got)
	}
}
