package tally

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"unicode/utf8"

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
	// Minutes holds the whole encoded state (minute format 1, see
	// encode.go) of every minute changed since the last snapshot passed to
	// MarkSaved (every minute the first time), keyed by Unix minute,
	// except those in Late. Each replaces the minute's stored state and
	// late part.
	Minutes map[int64][]byte
	// Late holds, for the complete minutes that changed only by late events
	// since the store took them whole, those events (a late part, see
	// late.go), keyed by Unix minute. Each replaces the minute's stored
	// late part and leaves its stored state as it is.
	Late map[int64][]byte
	// Drop lists, ascending, the minutes that left memory since then; the
	// store no longer needs them (or their late parts) as part of the
	// snapshot.
	Drop []int64
	// Offset is the log entry ID the snapshot reflects, as in Meta.
	Offset string

	seq   uint64              // the partition's change sequence when the snapshot was taken
	whole map[int64]wholeForm // what each minute of Minutes holds
}

var marshal = proto.MarshalOptions{Deterministic: true}

// Snapshot encodes the state for the snapshot store, writing epoch into the
// meta. The same state always encodes to the same bytes: a minute's parts
// are in an order fixed by its content, and no clock is read (the meta's
// written_unix_ms stays 0).
// Snapshot does not change what the next snapshot contains; MarkSaved does.
func (p *Partition) Snapshot(epoch uint64) Snap {
	// The complete minutes this snapshot writes whole would have their
	// deltas merged for the encoding anyway; merge them, so that the next
	// snapshot and every query read a compact base. Merging changes no
	// answer and no byte. The merges are built under the read lock, so
	// queries go on meanwhile, and only installed under the write lock:
	// only the goroutine that applies calls Snapshot, so nothing changes
	// between the locks. A minute whose late part is written keeps its
	// delta: that is the late part.
	var ms []*minute
	var bases []base
	p.mu.RLock()
	for _, start := range p.order[:p.completed] {
		if m := p.minutes[start]; m.seq > m.saved && m.delta != nil && !p.lateOnly(m) {
			ms = append(ms, m)
			bases = append(bases, p.merged(m))
		}
	}
	p.mu.RUnlock()
	if len(ms) > 0 {
		p.mu.Lock()
		for i, m := range ms {
			m.base, m.delta = bases[i], nil
		}
		p.mu.Unlock()
	}

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
		Late:    make(map[int64][]byte),
		Drop:    slices.Sorted(maps.Keys(p.dropped)),
		Offset:  p.offset,
		seq:     p.seq,
		whole:   make(map[int64]wholeForm),
	}
	var scratch []byte
	for _, start := range p.order {
		m := p.minutes[start]
		switch {
		case m.seq <= m.saved:
		case p.lateOnly(m):
			s.Late[start] = p.encodeLate(m)
		default:
			s.Minutes[start] = p.encodeMinuteWith(m, &scratch)
			s.whole[start] = wholeForm{events: m.events(), revision: m.revision}
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
// unless they changed after s was taken, the store holds the whole forms s
// wrote, and the minutes s dropped need not be dropped again.
func (p *Partition) MarkSaved(s Snap) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for start, w := range s.whole {
		if m := p.minutes[start]; m != nil {
			m.stored = w
		}
	}
	for _, written := range []map[int64][]byte{s.Minutes, s.Late} {
		for start := range written {
			if m := p.minutes[start]; m != nil && m.saved < s.seq {
				m.saved = s.seq
			}
		}
	}
	for _, start := range s.Drop {
		if seq, ok := p.dropped[start]; ok && seq <= s.seq {
			delete(p.dropped, start)
		}
	}
}

// Restore rebuilds partition id from a snapshot as the store returns it: the
// encoded meta, the encoded state of (at least) every minute the meta
// lists, in minute format 2, 1 or 0 (earlier builds' formats), and the
// minutes' late parts (nil if none). Minutes that the meta does not list
// are ignored, and so is a late part that extends another state of its
// minute than the stored one (a save that failed halfway, after it wrote
// the minute whole, left it; the minute already counts its events). The
// result answers, deduplicates and snapshots exactly like the partition
// that took the snapshot, and all its minutes are clean, except minutes
// read in the previous format, which the next snapshot rewrites.
func Restore(id int, opts Options, meta []byte, minutes, late map[int64][]byte) (*Partition, error) {
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
		m, err := p.restoreMinute(start, b, late[start], minuteEnd(start) <= horizon)
		if err != nil {
			return nil, fmt.Errorf("restore minute %d of partition %d: %w", start, id, err)
		}
		p.minutes[start] = m
		p.order = append(p.order, start)
		if m.frozen {
			p.released++
		}
		if minuteEnd(start) <= p.watermark {
			p.completed++
		}
	}
	// Only a snapshot taken under a shorter retention holds minutes that are
	// already due to leave; let them go the usual way.
	p.advance()
	return p, nil
}

// restoreMinute decodes one encoded minute and its late part (nil if
// none). A minute past the dedup horizon gets no dedup hashes; if it still
// carried them (the horizon was shortened) it is marked changed, so that
// the store sheds them.
func (p *Partition) restoreMinute(start int64, enc, late []byte, released bool) (*minute, error) {
	v, legacy, err := parseStoredMinute(enc)
	if err != nil {
		return nil, err
	}
	if v.start != start {
		return nil, fmt.Errorf("%w: state is of minute %d", ErrCorrupt, v.start)
	}
	lv, extends, err := parseLateOf(start, late, v, legacy)
	if err != nil {
		return nil, err
	}
	m := newMinute(start)
	m.revision = v.revision
	m.legacyIDs = v.legacyIDs
	if err := p.restoreBase(&m.base, v); err != nil {
		return nil, err
	}
	changed := legacy
	if !released {
		if !v.hasHashes {
			return nil, fmt.Errorf("%w: minute inside the dedup horizon has no event hashes", ErrCorrupt)
		}
		m.base.hashes = decodeFixed(v.hashes)
	}
	if !legacy {
		m.stored = wholeForm{events: v.events, revision: v.revision}
	}
	if extends {
		if err := p.restoreLate(m, lv); err != nil {
			return nil, err
		}
	}
	if released {
		// It can no longer change: merge what it counted late, and write
		// it again if that, or its hashes, changed what the store holds.
		m.frozen = true
		m.legacyIDs = false
		changed = changed || v.hasHashes || extends
		p.compact(m)
	}
	if changed {
		// Write it again in the current format, or frozen.
		p.seq++
		m.seq = p.seq
	}
	return m, nil
}

// parseStoredMinute parses an encoded minute in the current format, or
// in format 0 (legacy), which it converts first.
func parseStoredMinute(enc []byte) (v minuteView, legacy bool, err error) {
	v, err = parseMinute(enc)
	if errors.Is(err, ErrFormat) {
		conv, ok, lerr := legacyMinute(enc)
		switch {
		case lerr != nil:
			return v, false, lerr
		case ok:
			legacy = true
			v, err = parseMinute(conv)
		}
	}
	return v, legacy, err
}

// parseLateOf parses the late part of minute start (nil if none), and
// reports whether it extends v, the stored whole form: a part that
// extends another form, or a minute read in format 0, is ignored.
func parseLateOf(start int64, late []byte, v minuteView, legacy bool) (lateView, bool, error) {
	if late == nil {
		return lateView{}, false, nil
	}
	lv, err := parseLate(late)
	if err != nil {
		return lv, false, err
	}
	if lv.start != start {
		return lv, false, fmt.Errorf("%w: late part is of minute %d", ErrCorrupt, lv.start)
	}
	extends := !legacy && lv.baseEvents == v.events && lv.baseRevision == v.revision
	return lv, extends, nil
}

// restoreBase fills b, empty, with the rows and events of v, and takes the
// references of its rows.
func (p *Partition) restoreBase(b *base, v minuteView) error {
	// Allocated here, where they do not escape: small ones stay on the
	// stack.
	countries, ads := make([]uint32, len(v.countries)), make([]uint32, len(v.ads))
	if err := p.internView(v, countries, ads); err != nil {
		return err
	}
	b.ads = make([]uint32, 0, len(ads))
	b.nrows = make([]uint8, 0, len(ads))
	b.totals = make([]uint8, 0, len(ads))
	b.countries = make([]uint16, 0, len(v.rows))
	b.counts = make([]uint8, 0, len(v.rows))
	e := 0
	for _, r := range v.rows {
		b.appendRow(ads[r.ad], countries[r.country], int(r.count), e)
		p.incref(rowKey(ads[r.ad], countries[r.country]))
		e += int(r.count)
	}
	b.clip()
	b.users, b.ips = decodeFixed(v.users), decodeFixed(v.ips)
	return nil
}

// internView interns v's countries and ads into countries and ads, of
// their lengths, and checks that they are in order as the state holds them.
func (p *Partition) internView(v minuteView, countries, ads []uint32) error {
	// parseMinute checked the order of the strings as stored; interning
	// makes them valid UTF-8, so check it again on what the state holds.
	for i, c := range v.countries {
		countries[i] = p.countries.internBytes(c)
		if i > 0 && p.countries.str(countries[i-1]) >= p.countries.str(countries[i]) {
			return fmt.Errorf("%w: countries out of order", ErrCorrupt)
		}
	}
	valid := true
	for i, a := range v.ads {
		ads[i] = p.ads.internBytes(a)
		valid = valid && utf8.Valid(a)
	}
	if !valid {
		// parseMinute checked the order of the bytes as stored, which are
		// the strings the state holds unless interning had to make them
		// valid UTF-8.
		for i := 1; i < len(ads); i++ {
			if p.cmpAd(ads[i-1], ads[i]) >= 0 {
				return fmt.Errorf("%w: ads out of order", ErrCorrupt)
			}
		}
	}
	return nil
}
