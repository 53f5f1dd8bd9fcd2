package tally

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrEntry: ApplyEncoded was given bytes that are not a valid
// clickaggv1.LogEntry.
var ErrEntry = errors.New("tally: malformed log entry")

// rawEvent is a LogEvent as ApplyEncoded decodes it: its strings alias the
// entry's bytes and live only during the call.
type rawEvent struct {
	eventID, adID, userID, ip, country string
	ms                                 int64
}

// Field numbers of clickaggv1.LogEntry and LogEvent
// (proto/clickagg/v1/log.proto); TestApplyEncodedMatchesApply keeps them
// true.
const (
	entryRouterID = 1
	entryEvents   = 2
	entryTick     = 3

	evEventID = 1
	evAdID    = 2
	evClickMs = 3
	evUserID  = 4
	evIP      = 5
	evCountry = 6
)

// ApplyEncoded is Apply of the entry whose wire form (clickaggv1.LogEntry)
// is data, without building the message: no event and no string is
// allocated, and nothing the state keeps refers to data (strings are
// interned as copies, the others hashed). It also appends the ad_id of
// each of the entry's events to ads, for the caller's heavy-hitter sketch;
// those strings alias data, so they are valid while data is not modified.
//
// Like proto.Unmarshal, it refuses (ErrEntry, and applies nothing) bytes
// that are not a valid encoding or hold invalid UTF-8 in a string field,
// and skips unknown fields and known fields of another wire type.
//
// The events are applied warmChunk at a time, each chunk's cache misses
// taken together first (see warm); the state is the same as if they were
// applied one by one.
func (p *Partition) ApplyEncoded(id string, data []byte, ads []string) ([]string, error) {
	evs, tick, err := p.decode(data)
	if err != nil {
		return ads, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.offset = id
	ads = p.applyRaw(evs, ads)
	if tick != 0 {
		if wm := subSat(tick, p.latenessMs); wm > p.watermark {
			p.watermark = wm
			p.advance()
		}
	}
	return ads, nil
}

// applyRaw applies events, warmChunk at a time, each chunk warmed first,
// and appends their ad_ids to ads. p.mu must be held.
func (p *Partition) applyRaw(evs []rawEvent, ads []string) []string {
	for len(evs) > 0 {
		chunk := evs[:min(len(evs), warmChunk)]
		evs = evs[len(chunk):]
		p.warm(chunk)
		for i := range chunk {
			ev := &chunk[i]
			p.applyFields(ev.eventID, ev.adID, ev.ms, ev.userID, ev.ip, ev.country)
			ads = append(ads, ev.adID)
		}
	}
	return ads
}

// warmChunk is the number of events warm prepares at a time: enough for
// many cache misses to overlap, few enough that what it loads is still in
// the cache when the events are applied.
const warmChunk = 64

// warm reads, for up to warmChunk events about to be applied, the memory
// applyFields will read at random for them: the home slot of the event id
// in its minute's dedup set, the ad's slot in the index, its hash, span,
// reference count and text, and its row and ad slots in the minute's
// tables (for an ad not yet in the table, those its id will likely have).
// Each event's reads depend on each other, but different events' do not,
// so done in passes over the events they are in flight together, where
// applying the events one by one would wait for each miss in turn.
//
// It changes nothing: applyFields does all the work again, and a guess
// gone wrong (a slot that moved, an ad found at another slot, a table that
// grows meanwhile) costs only time.
func (p *Partition) warm(evs []rawEvent) {
	var w warming
	evs = evs[:min(len(evs), warmChunk)]
	w.dedupSlots(p, evs)
	if len(p.ads.index) > 0 {
		w.adSlots(&p.ads, evs)
		w.tableSlots(p, evs)
	}
	p.ads.sink = w.sink
}

// warming is what warm finds for each event of a chunk, pass after pass.
// The passes that read memory are tight loops over addresses found
// beforehand, so that the processor can issue the reads of many events
// before the first one returns.
type warming struct {
	deltas  [warmChunk]*delta
	seen    [warmChunk]*uint64 // the event id's home slot
	seenEnd [warmChunk]*uint64 // 7 slots on
	adHash  [warmChunk]uint64
	adID    [warmChunk]uint32
	adNext  [warmChunk]uint32
	text    [warmChunk]*byte
	rowK    [warmChunk]*uint64 // the row's home slot in the minute's table
	rowV    [warmChunk]*uint32
	adK     [warmChunk]*uint64 // the ad's
	adV     [warmChunk]*uint32
	sink    uint64
}

// dedupSlots hashes the events' ads, finds their minutes' deltas, and
// reads the home slots of their click ids in the deltas' dedup sets.
func (w *warming) dedupSlots(p *Partition, evs []rawEvent) {
	for i := range evs {
		w.adHash[i] = xxhash.Sum64String(evs[i].adID)
	}
	var m *minute
	var start int64
	for i := range evs {
		ev := &evs[i]
		if s := MinuteOf(ev.ms); i == 0 || s != start {
			start, m = s, p.minutes[s]
		}
		if m == nil || m.delta == nil {
			continue
		}
		d := m.delta
		w.deltas[i] = d
		if n := len(d.seen.slots); n > 0 {
			// A new id probes on from its home slot, often into the
			// next cache line.
			id := clickID(w.adHash[i], ev.eventID)
			if m.legacyIDs {
				id = xxhash.Sum64String(ev.eventID)
			}
			j := d.seen.home(id)
			w.seen[i], w.seenEnd[i] = &d.seen.slots[j], &d.seen.slots[min(j+7, n-1)]
		}
	}
	for i := range evs {
		if s := w.seen[i]; s != nil {
			w.sink += *s + *w.seenEnd[i]
		}
	}
}

// adSlots reads the events' ads' slots in the index (not empty) and their
// hashes, and sets adID to the id each ad has or will likely get.
func (w *warming) adSlots(ads *strtab, evs []rawEvent) {
	// The ad's home slot, and the next one, where it is when its home is
	// taken: both are likely in the same cache line.
	mask := len(ads.index) - 1
	for i := range evs {
		j := int(w.adHash[i] >> ads.shift)
		w.adID[i] = ads.index[j]
		w.adNext[i] = ads.index[(j+1)&mask]
	}
	for i := range evs {
		w.sink += ads.hashes[w.adID[i]] + ads.hashes[w.adNext[i]]
	}
	// An ad not in the table will take the id insert gives it: the last
	// free one, or a new one.
	free, next := len(ads.free), uint32(len(ads.spans))
	for i := range evs {
		id := ads.guess(w.adHash[i])
		if id != 0 {
			w.sink += ads.spans[id] + uint64(ads.refs[id])
		} else if free > 0 {
			free--
			id = ads.free[free]
			w.sink += uint64(ads.refs[id])
		} else {
			id = next
			next++
		}
		w.adID[i] = id
	}
}

// tableSlots reads the text of the events' ads (adID) and their row and
// ad slots in their deltas' tables.
func (w *warming) tableSlots(p *Partition, evs []rawEvent) {
	ads := &p.ads
	for i := range evs {
		id := w.adID[i]
		if int(id) < len(ads.spans) {
			if sp := ads.spans[id]; uint32(sp) > 0 {
				w.text[i] = &ads.data[sp>>32]
			}
		}
		d := w.deltas[i]
		if d == nil {
			continue
		}
		if c, ok := p.countries.lookup(evs[i].country); ok && len(d.rows.keys) > 0 {
			j := d.rows.home(rowKey(id, c))
			w.rowK[i], w.rowV[i] = &d.rows.keys[j], &d.rows.vals[j]
		}
		if len(d.ads.keys) > 0 {
			j := d.ads.home(uint64(id))
			w.adK[i], w.adV[i] = &d.ads.keys[j], &d.ads.vals[j]
		}
	}
	for i := range evs {
		if t := w.text[i]; t != nil {
			w.sink += uint64(*t)
		}
		if k := w.rowK[i]; k != nil {
			w.sink += *k + uint64(*w.rowV[i])
		}
		if k := w.adK[i]; k != nil {
			w.sink += *k + uint64(*w.adV[i])
		}
	}
}

// decode decodes a whole entry into p.decoded before anything is applied,
// so that a malformed entry changes nothing. Only the applying goroutine
// calls it.
func (p *Partition) decode(b []byte) ([]rawEvent, int64, error) {
	evs := p.decoded[:0]
	var tick int64
	for len(b) > 0 {
		// The usual event: a one-byte tag and a one-byte length.
		if n := len(b); n >= 2 && b[0] == entryEvents<<3|byte(protowire.BytesType) && b[1] < 0x80 && int(b[1]) <= n-2 {
			v := b[2 : 2+int(b[1])]
			evs = append(evs, rawEvent{})
			if err := decodeEvent(&evs[len(evs)-1], v); err != nil {
				return nil, 0, fmt.Errorf("%w: event %d: %v", ErrEntry, len(evs)-1, err)
			}
			b = b[2+len(v):]
			continue
		}
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, 0, fmt.Errorf("%w: %v", ErrEntry, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == entryRouterID && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, 0, fmt.Errorf("%w: router_id: %v", ErrEntry, protowire.ParseError(n))
			}
			if !utf8.Valid(v) {
				return nil, 0, fmt.Errorf("%w: router_id is not valid UTF-8", ErrEntry)
			}
			b = b[n:]
		case num == entryEvents && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, 0, fmt.Errorf("%w: event %d: %v", ErrEntry, len(evs), protowire.ParseError(n))
			}
			evs = append(evs, rawEvent{})
			if err := decodeEvent(&evs[len(evs)-1], v); err != nil {
				return nil, 0, fmt.Errorf("%w: event %d: %v", ErrEntry, len(evs)-1, err)
			}
			b = b[n:]
		case num == entryTick && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, 0, fmt.Errorf("%w: tick_ms: %v", ErrEntry, protowire.ParseError(n))
			}
			tick = int64(v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, 0, fmt.Errorf("%w: field %d: %v", ErrEntry, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	p.decoded = evs[:0]
	return evs, tick, nil
}

// errCodeFieldNumber is protowire's code for an invalid field number:
// protowire.ParseError(errCodeFieldNumber) says so.
const errCodeFieldNumber = -2

// consumeTag is protowire.ConsumeTag, which reads field numbers above
// protowire.MaxValidNumber, but refuses them as proto.Unmarshal does: an
// entry this decoder counted must be one every other reader of the log
// (the archive, tools using proto.Unmarshal) can read too.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, errCodeFieldNumber
	}
	return num, typ, n
}

// decodeEvent decodes event b into ev, which is zero.
func decodeEvent(ev *rawEvent, b []byte) error {
	if decodeEventFast(ev, b) {
		return nil
	}
	*ev = rawEvent{}
	return decodeEventSlow(ev, b)
}

// decodeEventFast decodes the form every router writes: one-byte tags of
// the event's fields with their own wire types, strings shorter than 128
// bytes, all ASCII, which is valid UTF-8. It reports false, leaving ev
// garbage, for anything else, which decodeEventSlow then decodes as
// proto.Unmarshal would.
func decodeEventFast(ev *rawEvent, b []byte) bool {
	var high uint64 // the strings' bytes ORed: bit 7 set if one is not ASCII
	for len(b) >= 2 {
		tag, n := b[0], int(b[1])
		if tag == evClickMs<<3|byte(protowire.VarintType) {
			v, m := protowire.ConsumeVarint(b[1:])
			if m < 0 {
				return false
			}
			ev.ms = int64(v)
			b = b[1+m:]
			continue
		}
		if tag&7 != byte(protowire.BytesType) || n >= 0x80 || n > len(b)-2 {
			return false
		}
		v := b[2 : 2+n]
		high |= orBytes(v)
		s := unsafe.String(unsafe.SliceData(v), n)
		switch tag >> 3 {
		case evEventID:
			ev.eventID = s
		case evAdID:
			ev.adID = s
		case evUserID:
			ev.userID = s
		case evIP:
			ev.ip = s
		case evCountry:
			ev.country = s
		default:
			return false
		}
		b = b[2+n:]
	}
	return len(b) == 0 && high&0x8080808080808080 == 0
}

// orBytes returns the bytes of b ORed together, in some byte of the
// result: only bit 7 of each byte matters to the caller.
func orBytes(b []byte) uint64 {
	if n := len(b); n >= 8 {
		// The last 8 bytes, overlapping the words before them.
		x := binary.LittleEndian.Uint64(b[n-8:])
		for ; n > 8; n -= 8 {
			x |= binary.LittleEndian.Uint64(b)
			b = b[8:]
		}
		return x
	}
	var x byte
	for _, c := range b {
		x |= c
	}
	return uint64(x)
}

func decodeEventSlow(ev *rawEvent, b []byte) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var s *string
		switch num {
		case evEventID:
			s = &ev.eventID
		case evAdID:
			s = &ev.adID
		case evUserID:
			s = &ev.userID
		case evIP:
			s = &ev.ip
		case evCountry:
			s = &ev.country
		}
		switch {
		case s != nil && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if !utf8.Valid(v) {
				return fmt.Errorf("field %d is not valid UTF-8", num)
			}
			*s = unsafe.String(unsafe.SliceData(v), len(v))
			b = b[n:]
		case num == evClickMs && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			ev.ms = int64(v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return nil
}
