package tally

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// snapOpts keep the horizon and retention short against the log's span, so
// that minutes are released and dropped many times during a run.
var snapOpts = Options{
	AllowedLateness: 10 * time.Second,
	DedupHorizon:    4 * time.Minute,
	Retention:       6 * time.Minute,
}

func snapLog() []entry {
	events := 40_000
	if raceEnabled {
		events = 15_000
	}
	return genLog(genConfig{seed: 21, events: events, minutes: 20, ads: 500, dupRate: 0.05, sharedIDRate: 0.03})
}

func equalSnaps(a, b Snap) error {
	switch {
	case !bytes.Equal(a.Meta, b.Meta):
		return fmt.Errorf("meta differs")
	case a.Offset != b.Offset:
		return fmt.Errorf("offset %q != %q", a.Offset, b.Offset)
	case !slices.Equal(a.Drop, b.Drop):
		return fmt.Errorf("drop %v != %v", a.Drop, b.Drop)
	case !maps.EqualFunc(a.Minutes, b.Minutes, bytes.Equal):
		return fmt.Errorf("minutes differ: %v vs %v", slices.Sorted(maps.Keys(a.Minutes)), slices.Sorted(maps.Keys(b.Minutes)))
	case !maps.EqualFunc(a.Late, b.Late, bytes.Equal):
		return fmt.Errorf("late parts differ: %v vs %v", slices.Sorted(maps.Keys(a.Late)), slices.Sorted(maps.Keys(b.Late)))
	}
	return nil
}

// schedule says when a run snapshots and what becomes of each snapshot.
type schedule struct {
	every     int // snapshot after every this many entries
	failEvery int // when > 0, every failEvery-th snapshot is never saved
	markDelay int // entries applied between a save and its MarkSaved (< every)
}

// run drives p through entries[from:to] the way an aggregator would,
// taking snapshots at the entries the schedule names (by absolute index,
// so that a restored run snapshots at the same points as an uninterrupted
// one). Saved snapshots go into st; when t is not nil, the merged store is
// checked against the full state after every save. It returns the
// snapshots taken, by entry index.
func (sc schedule) run(t *testing.T, p *Partition, st *store, entries []entry, from, to int) map[int]Snap {
	snaps := map[int]Snap{}
	var pending *Snap
	pendingAt := 0
	for i := from; i < to; i++ {
		e := entries[i]
		p.Apply(e.id, e.proto())
		if pending != nil && i == pendingAt {
			p.MarkSaved(*pending)
			pending = nil
		}
		if (i+1)%sc.every != 0 {
			continue
		}
		s := p.Snapshot(1)
		snaps[i] = s
		if n := (i + 1) / sc.every; sc.failEvery > 0 && n%sc.failEvery == 0 {
			continue
		}
		st.save(s)
		if t != nil {
			checkStoreMatches(t, st, p)
		}
		if sc.markDelay == 0 {
			p.MarkSaved(s)
		} else {
			pending, pendingAt = &s, i+sc.markDelay
		}
	}
	return snaps
}

// checkStoreMatches checks that the merged store holds exactly the state of
// p: the minutes the meta lists, with late parts only of those, and that
// restored, every minute encodes whole as p encodes it.
func checkStoreMatches(t *testing.T, st *store, p *Partition) {
	t.Helper()
	meta := decodeMeta(t, st.meta)
	if got, want := slices.Sorted(maps.Keys(st.minutes)), meta.GetMinutes(); !slices.Equal(got, want) {
		t.Fatalf("store holds minutes %v, meta lists %v", got, want)
	}
	for m := range st.late {
		if _, ok := st.minutes[m]; !ok {
			t.Fatalf("store holds a late part of minute %d, which it does not hold", m)
		}
	}
	q, err := Restore(p.id, p.opts, st.meta, st.minutes, st.late)
	if err != nil {
		t.Fatal(err)
	}
	restored, full := fullMinutes(q), fullMinutes(p)
	if !maps.EqualFunc(restored, full, bytes.Equal) {
		for m, b := range full {
			if !bytes.Equal(restored[m], b) {
				t.Errorf("stored minute %d differs from the state", m)
			}
		}
		t.FailNow()
	}
}

// TestSnapshotDeterministic applies the same log twice and checks that
// every snapshot is byte-for-byte the same, and that after every saved
// snapshot the merged store equals the state in full.
func TestSnapshotDeterministic(t *testing.T) {
	entries := snapLog()
	sc := schedule{every: 37}
	var runs [2]map[int]Snap
	for r := range runs {
		p := newTestPartition(t, snapOpts)
		var st store
		runs[r] = map[int]Snap{}
		for i := 0; i < len(entries); i += sc.every {
			to := min(i+sc.every, len(entries))
			check := t
			if r == 1 {
				check = nil
			}
			maps.Copy(runs[r], sc.run(check, p, &st, entries, i, to))
			// Queries between applies must not change anything.
			p.Top(math.MinInt64, math.MaxInt64, 10, Filter{Country: "US"})
		}
	}
	if len(runs[0]) < 10 {
		t.Fatalf("only %d snapshots", len(runs[0]))
	}
	var drops, incremental, late int
	for i, a := range runs[0] {
		if err := equalSnaps(a, runs[1][i]); err != nil {
			t.Fatalf("snapshot at entry %d: %v", i, err)
		}
		drops += len(a.Drop)
		if len(a.Minutes) < len(decodeMeta(t, a.Meta).GetMinutes()) {
			incremental++
		}
		late += len(a.Late)
	}
	if drops == 0 || incremental == 0 || late == 0 {
		t.Fatalf("log exercised no drops (%d), no incremental snapshot (%d) or no late part (%d)", drops, incremental, late)
	}
}

// TestCrashRestore crashes a run at various points, restores from what the
// store holds, replays the rest of the log, and checks that every later
// snapshot and the final state equal those of an uninterrupted run.
func TestCrashRestore(t *testing.T) {
	entries := snapLog()
	index := map[string]int{}
	for i, e := range entries {
		index[e.id] = i
	}
	tests := []struct {
		name  string
		sc    schedule
		crash int // entries applied before the crash
	}{
		{"before the first snapshot", schedule{every: 37}, 30},
		{"early", schedule{every: 37}, len(entries) / 10},
		{"middle", schedule{every: 37}, len(entries) / 2},
		{"late", schedule{every: 37}, len(entries) * 93 / 100},
		{"right after a snapshot", schedule{every: 37}, 37 * (len(entries) / 74)},
		{"some saves fail", schedule{every: 29, failEvery: 3}, len(entries) * 6 / 10},
		{"mark saved while applying", schedule{every: 41, markDelay: 7}, len(entries) * 45 / 100},
		{"crash between save and mark saved", schedule{every: 41, markDelay: 7}, 41*(len(entries)/82) + 3},
	}
	tr := newTruth(snapOpts)
	for _, e := range entries {
		tr.apply(e)
	}
	// The uninterrupted runs, one per schedule.
	type result struct {
		p     *Partition
		snaps map[int]Snap
	}
	uninterrupted := map[schedule]result{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, ok := uninterrupted[tt.sc]
			if !ok {
				res.p = newTestPartition(t, snapOpts)
				var ust store
				res.snaps = tt.sc.run(t, res.p, &ust, entries, 0, len(entries))
				uninterrupted[tt.sc] = res
			}
			u, want := res.p, res.snaps

			crash := tt.crash
			c := newTestPartition(t, snapOpts)
			var st store
			tt.sc.run(nil, c, &st, entries, 0, crash)

			resume := 0
			if st.meta != nil {
				var err error
				saved := st.clone()
				c, err = Restore(3, snapOpts, saved.meta, saved.minutes, saved.late)
				if err != nil {
					t.Fatal(err)
				}
				resume = index[c.Offset()] + 1
			} else {
				c = newTestPartition(t, snapOpts)
			}
			if resume > crash {
				t.Fatalf("resumed at %d after the crash at %d", resume, crash)
			}
			if st.meta != nil && c.Stats().EventsApplied == 0 {
				t.Fatal("restored an empty state")
			}
			// The replay must see duplicates of events counted before the
			// restored offset, or the dedup state is not being tested.
			if resume > 0 && crash < len(entries)*9/10 {
				before := map[string]bool{}
				for _, e := range entries[:resume] {
					for _, ck := range e.clicks {
						before[ck.id] = true
					}
				}
				var redo int
				for _, e := range entries[resume:] {
					for _, ck := range e.clicks {
						if before[ck.id] {
							redo++
						}
					}
				}
				if redo < 10 {
					t.Fatalf("only %d duplicates of events before the snapshot", redo)
				}
			}
			got := tt.sc.run(t, c, &st, entries, resume, len(entries))
			for i, s := range got {
				if err := equalSnaps(s, want[i]); err != nil {
					t.Fatalf("snapshot at entry %d: %v", i, err)
				}
			}
			if len(got) == 0 {
				t.Fatal("no snapshot after the restore")
			}
			if got, want := c.Snapshot(9).Meta, u.Snapshot(9).Meta; !bytes.Equal(got, want) {
				t.Fatalf("final meta differs:\n%v\n%v", decodeMeta(t, got), decodeMeta(t, want))
			}
			if !maps.EqualFunc(fullMinutes(c), fullMinutes(u), bytes.Equal) {
				t.Fatal("final minutes differ")
			}
			if got := c.Stats(); got != tr.stats {
				t.Fatalf("Stats() = %+v, want %+v", got, tr.stats)
			}
			for _, f := range []Filter{{}, {Country: "DE"}, {IP: "10.0.2.5"}, {UserID: "u77"}, {Country: "US", UserID: "u12"}} {
				if got, want := c.Top(math.MinInt64, math.MaxInt64, 50, f), u.Top(math.MinInt64, math.MaxInt64, 50, f); !slices.Equal(got, want) {
					t.Fatalf("Top(%+v) = %v, want %v", f, got, want)
				}
				if got, want := c.Top(math.MinInt64, math.MaxInt64, 50, f), tr.top(math.MinInt64, math.MaxInt64, 50, f); !slices.Equal(got, want) {
					t.Fatalf("Top(%+v) = %v, truth %v", f, got, want)
				}
			}
		})
	}
}

// TestRestoreRoundTrip restores a full snapshot and checks that the copy
// answers, snapshots and keeps deduplicating exactly like the original.
func TestRestoreRoundTrip(t *testing.T) {
	entries := snapLog()
	half := len(entries) / 2
	p := newTestPartition(t, snapOpts)
	apply(t, p, entries[:half]...)
	s := p.Snapshot(5)
	if s.Offset != entries[half-1].id || s.Offset != p.Offset() {
		t.Fatalf("snapshot offset %q, want %q", s.Offset, entries[half-1].id)
	}
	if p.Stats().Expired == 0 {
		t.Fatal("log expired nothing; the expired counter is not tested")
	}
	q, err := Restore(3, snapOpts, s.Meta, s.Minutes, s.Late)
	if err != nil {
		t.Fatal(err)
	}
	if q.Stats() != p.Stats() || q.Watermark() != p.Watermark() || q.Offset() != p.Offset() {
		t.Fatalf("restored %+v %d %q, want %+v %d %q", q.Stats(), q.Watermark(), q.Offset(), p.Stats(), p.Watermark(), p.Offset())
	}
	// Everything restored is clean: the next snapshot carries only the meta.
	if qs := q.Snapshot(5); len(qs.Minutes) != 0 || len(qs.Drop) != 0 || !bytes.Equal(qs.Meta, s.Meta) {
		t.Fatalf("snapshot after restore has %d minutes, drop %v", len(qs.Minutes), qs.Drop)
	}
	if !maps.EqualFunc(fullMinutes(q), fullMinutes(p), bytes.Equal) {
		t.Fatal("restored minutes differ")
	}
	// Replaying the first half again must change nothing but the counters of
	// duplicates and expired events, in both copies alike.
	for _, part := range []*Partition{p, q} {
		apply(t, part, entries[:half]...)
		apply(t, part, entries[half:]...)
	}
	if q.Stats() != p.Stats() {
		t.Fatalf("after replay: %+v vs %+v", q.Stats(), p.Stats())
	}
	if !maps.EqualFunc(fullMinutes(q), fullMinutes(p), bytes.Equal) {
		t.Fatal("minutes differ after replay")
	}
}

// TestSnapshotIncremental checks which minutes a snapshot carries: all the
// first time, then only changed ones, a late event's minute again, dropped
// minutes once, and a change after the snapshot keeps a minute dirty.
func TestSnapshotIncremental(t *testing.T) {
	p := newTestPartition(t, testOpts)
	apply(t, p, entry{id: "1-0", clicks: []click{clickAt("a", at(0, 0)), clickAt("b", at(1, 0)), clickAt("c", at(2, 0))}})
	s1 := p.Snapshot(1)
	if got := slices.Sorted(maps.Keys(s1.Minutes)); !slices.Equal(got, []int64{m0, m0 + 1, m0 + 2}) {
		t.Fatalf("first snapshot minutes %v", got)
	}
	// Not saved yet: the next snapshot carries the same minutes.
	if got := p.Snapshot(1); equalSnaps(got, s1) != nil {
		t.Fatal("snapshot changed without any apply")
	}
	p.MarkSaved(s1)
	if got := p.Snapshot(1); len(got.Minutes) != 0 || len(got.Drop) != 0 {
		t.Fatalf("clean state snapshot has minutes %v drop %v", slices.Sorted(maps.Keys(got.Minutes)), got.Drop)
	}
	// A late event in a minute the store holds whole is written as its
	// late part alone.
	apply(t, p, tickTo("2-0", end(1)), entry{id: "3-0", clicks: []click{clickAt("d", at(1, 1))}})
	s2 := p.Snapshot(1)
	if got := slices.Sorted(maps.Keys(s2.Late)); len(s2.Minutes) != 0 || !slices.Equal(got, []int64{m0 + 1}) {
		t.Fatalf("late event snapshot minutes %v, late parts %v", slices.Sorted(maps.Keys(s2.Minutes)), got)
	}
	checkLate := func(b []byte, events int) {
		t.Helper()
		v, err := parseLate(b)
		if err != nil {
			t.Fatal(err)
		}
		if v.start != m0+1 || v.baseEvents != 1 || v.baseRevision != 0 || len(v.events) != events {
			t.Fatalf("late part of minute %d extends %d events at revision %d with %d, want %d extending 1 at 0", v.start, v.baseEvents, v.baseRevision, len(v.events), events)
		}
	}
	checkLate(s2.Late[m0+1], 1)
	// A change after s2 was taken keeps that minute dirty through MarkSaved.
	apply(t, p, entry{id: "4-0", clicks: []click{clickAt("e", at(1, 2))}})
	p.MarkSaved(s2)
	s3 := p.Snapshot(1)
	if got := slices.Sorted(maps.Keys(s3.Late)); len(s3.Minutes) != 0 || !slices.Equal(got, []int64{m0 + 1}) {
		t.Fatalf("minutes after a change during the save %v, late parts %v", slices.Sorted(maps.Keys(s3.Minutes)), got)
	}
	checkLate(s3.Late[m0+1], 2)
	q, err := Restore(3, testOpts, s1.Meta, s1.Minutes, s3.Late)
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Count("ad1", m0+1, m0+2, Filter{}); got != 3 {
		t.Fatalf("restored with the late part: %d clicks in minute 1, want 3", got)
	}
	if rev := decodeMinute(t, fullMinutes(q)[m0+1]).GetRevision(); rev != 2 {
		t.Fatalf("revision %d, want 2", rev)
	}
	p.MarkSaved(s3)
	// Past the horizon the minute is rewritten once without its hashes;
	// past the retention it is dropped once.
	apply(t, p, tickTo("5-0", end(0)+testOpts.DedupHorizon.Milliseconds()))
	s4 := p.Snapshot(1)
	if got := slices.Sorted(maps.Keys(s4.Minutes)); !slices.Equal(got, []int64{m0}) {
		t.Fatalf("minutes after leaving the horizon %v", got)
	}
	ms := decodeMinute(t, s4.Minutes[m0])
	if len(ms.GetEventHashes()) != 0 || len(ms.GetCells()) != 1 || ms.GetCells()[0].GetCount() != 1 {
		t.Fatalf("frozen minute state %v", ms)
	}
	p.MarkSaved(s4)
	apply(t, p, tickTo("6-0", end(1)+testOpts.Retention.Milliseconds()))
	s5 := p.Snapshot(1)
	if !slices.Equal(s5.Drop, []int64{m0, m0 + 1}) {
		t.Fatalf("drop %v, want [%d %d]", s5.Drop, m0, m0+1)
	}
	if got := decodeMeta(t, s5.Meta).GetMinutes(); !slices.Equal(got, []int64{m0 + 2}) {
		t.Fatalf("meta minutes %v", got)
	}
	p.MarkSaved(s5)
	if got := p.Snapshot(1); len(got.Drop) != 0 {
		t.Fatalf("drop repeated after save: %v", got.Drop)
	}
}

// TestSnapshotEncoding checks the encoded fields themselves.
func TestSnapshotEncoding(t *testing.T) {
	p := newTestPartition(t, testOpts)
	apply(t, p,
		entry{id: "1-0", clicks: []click{
			{id: "x", ad: "b", ms: at(0, 0), country: "US", ip: "1", user: "u"},
			{id: "y", ad: "a", ms: at(0, 1), country: "US", ip: "1", user: "u"},
			{id: "z", ad: "a", ms: at(0, 2), country: "DE", ip: "1", user: "u"},
			{id: "w", ad: "a", ms: at(0, 3), country: "US", ip: "1", user: "u"},
			{id: "w", ad: "a", ms: at(0, 3), country: "US", ip: "1", user: "u"},
			{id: "old", ad: "a", ms: at(-100, 0), country: "US", ip: "1", user: "u"},
		}, tick: end(200)},
	)
	s := p.Snapshot(42)
	meta := decodeMeta(t, s.Meta)
	want := &clickaggv1.SnapshotMeta{
		Partition: 3, Epoch: 42, Offset: "1-0", WatermarkMs: end(200) - lateness,
		Minutes: nil, EventsApplied: 5, DuplicatesDropped: 1,
	}
	// The tick came after the events, so none was late or expired (the
	// watermark was still 0), and it then moved both minutes out of memory.
	meta.ProtoReflect().SetUnknown(nil)
	if !proto.Equal(meta, want) {
		t.Fatalf("meta = %v, want %v", meta, want)
	}
	if !slices.Equal(s.Drop, []int64{m0 - 100, m0}) {
		t.Fatalf("drop %v", s.Drop)
	}
	q, err := Restore(3, testOpts, s.Meta, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Stats(); got != (Stats{EventsApplied: 5, Duplicates: 1}) {
		t.Fatalf("restored stats %+v", got)
	}

	p = newTestPartition(t, testOpts)
	apply(t, p, entry{id: "1-0", clicks: []click{
		{id: "x", ad: "b", ms: at(0, 0), country: "US", ip: "1", user: "u"},
		{id: "y", ad: "a", ms: at(0, 1), country: "US", ip: "1", user: "v"},
		{id: "z", ad: "a", ms: at(0, 2), country: "DE", ip: "1", user: "u"},
		{id: "w", ad: "a", ms: at(0, 3), country: "US", ip: "1", user: "v"},
		{id: "old", ad: "a", ms: at(-100, 0), country: "US", ip: "1", user: "u"},
	}})
	apply(t, p, tickTo("2-0", end(0)+testOpts.DedupHorizon.Milliseconds()), entry{id: "3-0", clicks: []click{clickAt("late", at(0, 0))}})
	s = p.Snapshot(7)
	if got := p.Stats(); got != (Stats{EventsApplied: 5, Expired: 1}) {
		t.Fatalf("stats %+v", got)
	}
	ms := decodeMinute(t, s.Minutes[m0])
	wantCells := []*clickaggv1.Cell{
		{AdId: "a", Country: "DE", Ip: hx("1"), UserId: hx("u"), Count: 1},
		{AdId: "a", Country: "US", Ip: hx("1"), UserId: hx("v"), Count: 2},
		{AdId: "b", Country: "US", Ip: hx("1"), UserId: hx("u"), Count: 1},
	}
	if len(ms.GetCells()) != len(wantCells) {
		t.Fatalf("cells %v", ms.GetCells())
	}
	for i, c := range ms.GetCells() {
		if !proto.Equal(c, wantCells[i]) {
			t.Fatalf("cell %d = %v, want %v", i, c, wantCells[i])
		}
	}
	if ms.GetMinute() != m0 || ms.GetRevision() != 0 || len(ms.GetEventHashes()) != 0 {
		t.Fatalf("minute state %v", ms)
	}
	q, err = Restore(3, testOpts, s.Meta, s.Minutes, s.Late)
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Stats(); got != p.Stats() {
		t.Fatalf("restored stats %+v, want %+v (expired must survive)", got, p.Stats())
	}

	// Hashes are sorted and are those of the event ids.
	p = newTestPartition(t, testOpts)
	var clicks []click
	for i := range 50 {
		clicks = append(clicks, clickAt(fmt.Sprint("id", i), at(0, int64(i))))
	}
	apply(t, p, entry{id: "1-0", clicks: clicks})
	hs := decodeMinute(t, p.Snapshot(1).Minutes[m0]).GetEventHashes()
	if len(hs) != 50 || !slices.IsSorted(hs) {
		t.Fatalf("hashes %d sorted %v", len(hs), slices.IsSorted(hs))
	}
}

func TestRestoreErrors(t *testing.T) {
	p := newTestPartition(t, testOpts)
	apply(t, p, entry{id: "1-0", clicks: []click{clickAt("a", at(0, 0)), clickAt("b", at(0, 1)), clickAt("c", at(1, 0))}})
	s := p.Snapshot(1)
	good := s.Minutes[m0]
	ms := decodeMinute(t, good)

	mutate := func(f func(*clickaggv1.MinuteState)) []byte {
		c := proto.Clone(ms).(*clickaggv1.MinuteState)
		f(c)
		return encodeState(t, c)
	}
	if !bytes.Equal(mutate(func(*clickaggv1.MinuteState) {}), good) {
		t.Fatal("encodeState does not invert decodeMinute")
	}
	with := func(m int64, b []byte) map[int64][]byte {
		out := maps.Clone(s.Minutes)
		if b == nil {
			delete(out, m)
		} else {
			out[m] = b
		}
		return out
	}
	tests := []struct {
		name    string
		id      int
		opts    Options
		meta    []byte
		minutes map[int64][]byte
		corrupt bool
	}{
		{"other partition", 4, testOpts, s.Meta, s.Minutes, true},
		{"invalid options", 3, Options{}, s.Meta, s.Minutes, false},
		{"garbage meta", 3, testOpts, []byte{0xff, 0xff}, s.Minutes, false},
		{"listed minute missing", 3, testOpts, s.Meta, with(m0, nil), true},
		{"minute stored under the wrong key", 3, testOpts, s.Meta, with(m0, s.Minutes[m0+1]), true},
		{"garbage minute", 3, testOpts, s.Meta, with(m0, []byte{0xff}), false},
		{"hash missing", 3, testOpts, s.Meta, with(m0, mutate(func(m *clickaggv1.MinuteState) { m.EventHashes = m.EventHashes[1:] })), true},
		{"hash repeated", 3, testOpts, s.Meta, with(m0, mutate(func(m *clickaggv1.MinuteState) { m.EventHashes[1] = m.EventHashes[0] })), true},
		{"count too high", 3, testOpts, s.Meta, with(m0, mutate(func(m *clickaggv1.MinuteState) { m.Cells[0].Count++ })), true},
		{"zero count", 3, testOpts, s.Meta, with(m0, mutate(func(m *clickaggv1.MinuteState) { m.Cells[0].Count = 0 })), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := Restore(tt.id, tt.opts, tt.meta, tt.minutes, nil)
			if err == nil {
				t.Fatalf("Restore succeeded: %+v", q.Stats())
			}
			if errors.Is(err, ErrCorrupt) != tt.corrupt {
				t.Fatalf("error %v: corrupt = %v, want %v", err, errors.Is(err, ErrCorrupt), tt.corrupt)
			}
		})
	}
	// Extra minutes the meta does not list are ignored.
	extra := maps.Clone(s.Minutes)
	extra[m0-50] = []byte{0xff}
	if _, err := Restore(3, testOpts, s.Meta, extra, nil); err != nil {
		t.Fatalf("extra minute: %v", err)
	}
}
