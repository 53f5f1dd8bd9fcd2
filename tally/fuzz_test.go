package tally

import (
	"bytes"
	"errors"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// fuzzEntries are the seed entries of the log entry targets: a router's
// batch, a tick, and the clicks the rules tests use.
func fuzzEntries() []entry {
	return []entry{
		{id: "1-0", clicks: []click{clickAt("e1", at(0, 0)), {id: "é ✓", ad: "ad-ü", ms: at(1, 5), country: "DE", ip: "2001:db8::1", user: "u"}}},
		{id: "2-0", tick: end(0)},
		{id: "3-0", clicks: []click{{id: "e", ad: "a", ms: -1, country: "US", ip: "10.0.0.1", user: "u"}}, tick: at(2, 0)},
		{id: "4-0", clicks: []click{{}}},
	}
}

// FuzzDecodeEntry feeds the aggregator's log entry decoder arbitrary bytes.
// It must never panic, must accept exactly what proto.Unmarshal accepts as
// a LogEntry and read the same fields, and applying the bytes must leave
// the partition as applying the decoded message does: an undecodable entry
// changes nothing (the aggregator then stops the partition).
func FuzzDecodeEntry(f *testing.F) {
	for _, e := range fuzzEntries() {
		b, err := proto.Marshal(e.proto())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := NewPartition(3, testOpts)
		evs, tick, err := p.decode(data)
		var want clickaggv1.LogEntry
		werr := proto.Unmarshal(data, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("decode error %v, proto.Unmarshal error %v", err, werr)
		}
		if err != nil {
			if !errors.Is(err, ErrEntry) {
				t.Fatalf("decode error %v is not ErrEntry", err)
			}
			if _, err := p.ApplyEncoded("1-0", data, nil); err == nil || p.Offset() != "" || p.Stats() != (Stats{}) {
				t.Fatalf("ApplyEncoded of an undecodable entry: error %v, offset %q, stats %+v", err, p.Offset(), p.Stats())
			}
			return
		}
		if tick != want.GetTickMs() || len(evs) != len(want.GetEvents()) {
			t.Fatalf("decoded tick %d, %d events; want %d, %d", tick, len(evs), want.GetTickMs(), len(want.GetEvents()))
		}
		for i, w := range want.GetEvents() {
			if got := evs[i]; got != (rawEvent{eventID: w.EventId, adID: w.AdId, userID: w.UserId, ip: w.Ip, country: w.Country, ms: w.ClickTimeMs}) {
				t.Fatalf("event %d decoded as %+v, want %v", i, got, w)
			}
		}
		if _, err := p.ApplyEncoded("1-0", data, nil); err != nil {
			t.Fatal(err)
		}
		q := NewPartition(3, testOpts)
		q.Apply("1-0", &want)
		if p.Stats() != q.Stats() || p.Watermark() != q.Watermark() || !maps.EqualFunc(fullMinutes(p), fullMinutes(q), bytes.Equal) {
			t.Fatalf("ApplyEncoded and Apply differ: %+v %d vs %+v %d", p.Stats(), p.Watermark(), q.Stats(), q.Watermark())
		}
	})
}

// FuzzEntryRoundTrip builds a log entry from fuzzed fields, encodes it as
// a router does (the wire form of LogEntry) and checks that it decodes to
// exactly those fields.
func FuzzEntryRoundTrip(f *testing.F) {
	for _, e := range fuzzEntries() {
		for _, c := range e.clicks {
			f.Add("r1", c.id, c.ad, c.user, c.ip, c.country, c.ms, e.tick, uint8(1))
		}
	}
	f.Add("", "", "", "", "", "", int64(0), int64(0), uint8(0))
	f.Fuzz(func(t *testing.T, routerID, eventID, adID, userID, ip, country string, ms, tick int64, n uint8) {
		e := &clickaggv1.LogEntry{RouterId: routerID, TickMs: tick}
		for i := range int(n % 5) {
			// Events differ in their event_id, so that order is checked.
			e.Events = append(e.Events, &clickaggv1.LogEvent{EventId: eventID + string(rune('0'+i)), AdId: adID, ClickTimeMs: ms, UserId: userID, Ip: ip, Country: country})
		}
		b, err := proto.Marshal(e)
		if err != nil {
			// Only invalid UTF-8 fails, and no router encodes it.
			return
		}
		evs, gotTick, err := NewPartition(3, testOpts).decode(b)
		if err != nil {
			t.Fatalf("decode of a valid entry: %v", err)
		}
		if gotTick != tick || len(evs) != len(e.Events) {
			t.Fatalf("decoded tick %d, %d events; want %d, %d", gotTick, len(evs), tick, len(e.Events))
		}
		for i, w := range e.Events {
			if got := evs[i]; got != (rawEvent{eventID: w.EventId, adID: adID, userID: userID, ip: ip, country: country, ms: ms}) {
				t.Fatalf("event %d decoded as %+v, want %v", i, got, w)
			}
		}
	})
}

// restoreAllocSlack is what Restore may allocate beyond restoreAllocPerByte
// per input byte: the empty partition and the fuzzing engine's own garbage.
const (
	restoreAllocSlack   = 8 << 20
	restoreAllocPerByte = 64
)

// FuzzRestore feeds Restore an arbitrary meta, and one arbitrary minute
// and late part for every minute the meta lists: every format it reads
// (minute formats 2, 1 and 0, late formats). It must never panic, must
// allocate in proportion to its input however large the lengths the input
// declares, and a partition it restores must restore again, from its own
// encoding, to the same state.
func FuzzRestore(f *testing.F) {
	_, snaps := lateScenario(f)
	for _, s := range snaps {
		meta := decodeMeta(f, s.Meta)
		for _, m := range meta.GetMinutes() {
			f.Add(s.Meta, s.Minutes[m], s.Late[m])
		}
	}
	whole := snaps[0]
	f.Add(whole.Meta, whole.Minutes[m0], snaps[1].Late[m0])
	legacy, err := proto.Marshal(&clickaggv1.MinuteState{Minute: m0, Revision: 3, Cells: []*clickaggv1.Cell{
		{AdId: "a", Country: "US", Ip: hx("10.0.0.1"), UserId: hx("u"), Count: 2},
	}, EventHashes: []uint64{1, 2}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(whole.Meta, legacy, []byte(nil))
	f.Fuzz(func(t *testing.T, meta, minute, late []byte) {
		var mm clickaggv1.SnapshotMeta
		minutes, lates := map[int64][]byte{}, map[int64][]byte{}
		if proto.Unmarshal(meta, &mm) == nil {
			for _, m := range mm.GetMinutes() {
				minutes[m] = minute
				if late != nil {
					lates[m] = late
				}
			}
		}
		id := int(mm.GetPartition())
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		p, err := Restore(id, testOpts, meta, minutes, lates)
		runtime.ReadMemStats(&after)
		size := len(meta) + len(minute) + len(late)
		if a := after.TotalAlloc - before.TotalAlloc; a > uint64(restoreAllocSlack+restoreAllocPerByte*size) {
			t.Fatalf("Restore of %d bytes allocated %d bytes", size, a)
		}
		if err != nil {
			return
		}
		full := fullMinutes(p)
		q, err := Restore(id, testOpts, p.Snapshot(mm.GetEpoch()).Meta, full, nil)
		if err != nil {
			t.Fatalf("restore of a restored partition's encoding: %v", err)
		}
		if q.Stats() != p.Stats() || q.Watermark() != p.Watermark() || q.Offset() != p.Offset() || !maps.EqualFunc(fullMinutes(q), full, bytes.Equal) {
			t.Fatal("restore of a restored partition's encoding differs from it")
		}
	})
}

// FuzzSnapshotRoundTrip drives a partition through a log generated from
// the fuzzed bytes, saving an incremental snapshot midway and one at the
// end into a store as the snapshot store merges them, and checks that
// Restore from the store gives back the same state and answers.
func FuzzSnapshotRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint16(200), uint8(3))
	f.Add(uint64(7), uint16(2000), uint8(12))
	f.Add(uint64(0), uint16(0), uint8(0))
	f.Fuzz(func(t *testing.T, seed uint64, events uint16, minutes uint8) {
		entries := genLog(genConfig{seed: seed, events: 1 + int(events%3000), minutes: int(minutes%16) + 1, ads: 50, dupRate: 0.1, sharedIDRate: 0.05})
		p := NewPartition(3, snapOpts)
		var st store
		half := len(entries) / 2
		for i, e := range entries {
			apply(t, p, e)
			if i == half {
				s := p.Snapshot(1)
				st.save(s)
				p.MarkSaved(s)
			}
		}
		st.save(p.Snapshot(2))
		q, err := Restore(3, snapOpts, st.meta, st.minutes, st.late)
		if err != nil {
			t.Fatal(err)
		}
		if q.Stats() != p.Stats() || q.Watermark() != p.Watermark() || q.Offset() != p.Offset() {
			t.Fatalf("restored %+v %d %q, want %+v %d %q", q.Stats(), q.Watermark(), q.Offset(), p.Stats(), p.Watermark(), p.Offset())
		}
		if !maps.EqualFunc(fullMinutes(q), fullMinutes(p), bytes.Equal) {
			t.Fatal("restored minutes differ")
		}
		r := rand.New(rand.NewPCG(seed, 1))
		for range 5 {
			f := Filter{Country: []string{"", "DE", "US"}[r.IntN(3)]}
			if got, want := q.Top(-1<<62, 1<<62, 10, f), p.Top(-1<<62, 1<<62, 10, f); !slices.Equal(got, want) {
				t.Fatalf("Top(%+v) = %v, want %v", f, got, want)
			}
		}
	})
}
