package tally

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// ErrCorrupt is wrapped by Restore's errors when the snapshot contradicts
// itself: a minute listed but missing, counts that disagree with the dedup
// hashes, or another partition's meta.
var ErrCorrupt = errors.New("tally: corrupt snapshot")

// Snap is an encoded snapshot of a Partition, ready for the snapshot store.
type Snap struct {
	// Meta is the encoded clickaggv1.SnapshotMeta: offset, watermark, stats
	// and the list of every minute the snapshot comprises.
	Meta []byte
	// Minutes holds the encoded clickaggv1.MinuteState of every minute
	// changed since the last snapshot passed to MarkSaved (every minute the
	// first time), keyed by Unix minute.
	Minutes map[int64][]byte
	// Drop lists, ascending, the minutes that left memory since then; the
	// store no longer needs them as part of the snapshot.
	Drop []int64
	// Offset is the log entry ID the snapshot reflects, as in Meta.
	Offset string

	seq uint64 // the partition's change sequence when the snapshot was taken
}

var marshal = proto.MarshalOptions{Deterministic: true}

// Snapshot encodes the state for the snapshot store, writing epoch into the
// meta. The same state always encodes to the same bytes: cells and hashes
// are sorted, and no clock is read (the meta's written_unix_ms stays 0).
// Snapshot does not change what the next snapshot contains; MarkSaved does.
func (p *Partition) Snapshot(epoch uint64) Snap {
	p.mu.RLock()
	defer p.mu.RUnlock()
	meta := &clickaggv1.SnapshotMeta{
		Partition:         int32(p.id),
		Epoch:             epoch,
		Offset:            validUTF8(p.offset),
		WatermarkMs:       p.watermark,
		Minutes:           slices.Clone(p.order),
		EventsApplied:     p.stats.EventsApplied,
		DuplicatesDropped: p.stats.Duplicates,
		LateEvents:        p.stats.Late,
		EventsExpired:     p.stats.Expired,
	}
	s := Snap{
		Meta:    mustMarshal(meta),
		Minutes: make(map[int64][]byte),
		Drop:    slices.Sorted(maps.Keys(p.dropped)),
		Offset:  p.offset,
		seq:     p.seq,
	}
	for _, start := range p.order {
		if m := p.minutes[start]; m.seq > m.saved {
			s.Minutes[start] = p.encodeMinute(m)
		}
	}
	return s
}

// mustMarshal encodes a message built here. Marshal fails only on invalid
// UTF-8 in a string field, and none gets into the state.
func mustMarshal(m proto.Message) []byte {
	b, _ := marshal.Marshal(m)
	return b
}

// MarkSaved records that the store accepted s: the minutes in s are clean
// unless they changed after s was taken, and the minutes s dropped need not
// be dropped again.
func (p *Partition) MarkSaved(s Snap) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for start := range s.Minutes {
		if m := p.minutes[start]; m != nil && m.saved < s.seq {
			m.saved = s.seq
		}
	}
	for _, start := range s.Drop {
		if seq, ok := p.dropped[start]; ok && seq <= s.seq {
			delete(p.dropped, start)
		}
	}
}

// Restore rebuilds partition id from a snapshot as the store returns it: the
// encoded meta and the encoded MinuteState of (at least) every minute the
// meta lists. Minutes that the meta does not list are ignored. The result
// answers, deduplicates and snapshots exactly like the partition that took
// the snapshot, and all its minutes are clean.
func Restore(id int, opts Options, meta []byte, minutes map[int64][]byte) (*Partition, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	var mm clickaggv1.SnapshotMeta
	if err := proto.Unmarshal(meta, &mm); err != nil {
		return nil, fmt.Errorf("decode meta of partition %d: %w", id, err)
	}
	if int(mm.GetPartition()) != id {
		return nil, fmt.Errorf("%w: meta of partition %d restored as partition %d", ErrCorrupt, mm.GetPartition(), id)
	}
	p := NewPartition(id, opts)
	p.offset = mm.GetOffset()
	p.watermark = mm.GetWatermarkMs()
	p.stats = Stats{
		EventsApplied: mm.GetEventsApplied(),
		Duplicates:    mm.GetDuplicatesDropped(),
		Late:          mm.GetLateEvents(),
		Expired:       mm.GetEventsExpired(),
	}
	starts := slices.Sorted(slices.Values(mm.GetMinutes()))
	horizon := subSat(p.watermark, p.horizonMs)
	for i, start := range starts {
		if i > 0 && starts[i-1] == start {
			return nil, fmt.Errorf("%w: partition %d lists minute %d twice", ErrCorrupt, id, start)
		}
		b, ok := minutes[start]
		if !ok {
			return nil, fmt.Errorf("%w: partition %d: minute %d is listed but missing", ErrCorrupt, id, start)
		}
		m, err := p.restoreMinute(start, b, minuteEnd(start) <= horizon)
		if err != nil {
			return nil, fmt.Errorf("restore minute %d of partition %d: %w", start, id, err)
		}
		p.minutes[start] = m
		p.order = append(p.order, start)
		if m.seen == nil {
			p.released++
		}
	}
	// Only a snapshot taken under a shorter retention holds minutes that are
	// already due to leave; let them go the usual way.
	p.advance()
	return p, nil
}

// restoreMinute decodes one MinuteState into a minute. A minute past the
// dedup horizon gets no dedup set; if it still carried hashes (the horizon
// was shortened) it is marked changed, so that the store sheds them.
func (p *Partition) restoreMinute(start int64, b []byte, released bool) (*minute, error) {
	var ms clickaggv1.MinuteState
	if err := proto.Unmarshal(b, &ms); err != nil {
		return nil, err
	}
	if ms.GetMinute() != start {
		return nil, fmt.Errorf("%w: state is of minute %d", ErrCorrupt, ms.GetMinute())
	}
	m := newMinute(start)
	m.revision = ms.GetRevision()
	var total int64
	for _, c := range ms.GetCells() {
		if c.GetCount() <= 0 {
			return nil, fmt.Errorf("%w: cell of ad %q has count %d", ErrCorrupt, c.GetAdId(), c.GetCount())
		}
		k := cellKey{
			ad:      p.ads.intern(c.GetAdId()),
			country: p.attrs.intern(c.GetCountry()),
			ip:      p.attrs.intern(c.GetIp()),
			user:    p.attrs.intern(c.GetUserId()),
		}
		if m.add(k, c.GetCount()) {
			p.incref(k)
		}
		total += c.GetCount()
	}
	if released {
		m.freeze()
		if len(ms.GetEventHashes()) > 0 {
			p.seq++
			m.seq = p.seq
		}
		return m, nil
	}
	for _, h := range ms.GetEventHashes() {
		m.seen.add(h)
	}
	// Every counted event added exactly one hash, so the two must agree.
	if int64(m.seen.len()) != total {
		return nil, fmt.Errorf("%w: %d distinct event hashes for %d clicks", ErrCorrupt, m.seen.len(), total)
	}
	return m, nil
}
