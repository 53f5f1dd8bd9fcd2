package tally

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
)

// lateFormat is the first byte of an encoded late part. As with minutes
// (minuteFormat), format 1 is the same layout with hashes of event_ids
// alone, for the late events of a legacy minute.
const (
	lateFormat       = 2
	lateFormatLegacy = 1
)

// A late part holds the late events a complete minute counted since the
// store last took the minute whole, so that a snapshot writes those events
// instead of the whole minute again (see "Snapshots" in doc.go). It names
// the whole form it extends by its events and revision.
//
// Late part format 2 (and 1, see lateFormat), integers as in minute format
// 2:
//
//	byte     2 (the format)
//	varint   minute (zig-zag)
//	uvarint  events of the whole form it extends
//	uvarint  revision of the whole form it extends
//	uvarint  number of countries, then each: uvarint length, bytes;
//	         ascending
//	uvarint  number of ads, then each: uvarint length, bytes; in canonical
//	         order, ascending
//	uvarint  number of events n (each raised the revision by one), then
//	         each: uvarint ad index, uvarint country index; in log order
//	8 bytes  per event: xxhash of user_id, in the same order
//	8 bytes  per event: xxhash of ip, in the same order
//	8 bytes  per event: the click-identity hashes, ascending
//
// Everything is in an order fixed by the events and their log order, so
// the same late events give the same bytes in every process.

// lateOnly reports whether a snapshot may write only m's late part: m is
// complete and can still change, the store holds its whole form, its base
// is exactly that form (the base and the whole form count the same events
// of the minute, which only ever grows), and every event of its delta is
// late. A merge of the delta into the base makes the next snapshot write
// the minute whole; merges wait until the delta is an eighth of the base
// (mergeDue), so a late part is at most about that.
func (p *Partition) lateOnly(m *minute) bool {
	return m.delta != nil && !m.frozen && m.stored.events >= 0 &&
		minuteEnd(m.start) <= p.watermark &&
		len(m.base.users) == m.stored.events &&
		m.revision == m.stored.revision+int64(len(m.delta.users))
}

// encodeLate encodes m's delta as a late part (m must be lateOnly).
func (p *Partition) encodeLate(m *minute) []byte {
	d := m.delta
	var ads, countries []uint32
	adIdx := map[uint32]uint32{}
	countryIdx := map[uint32]uint32{}
	for _, k := range d.keys {
		if _, ok := adIdx[keyAd(k)]; !ok {
			adIdx[keyAd(k)] = 0
			ads = append(ads, keyAd(k))
		}
		if _, ok := countryIdx[keyCountry(k)]; !ok {
			countryIdx[keyCountry(k)] = 0
			countries = append(countries, keyCountry(k))
		}
	}
	slices.SortFunc(ads, p.cmpAd)
	slices.SortFunc(countries, func(x, y uint32) int { return strings.Compare(p.countries.str(x), p.countries.str(y)) })
	out := []byte{lateFormat}
	if m.legacyIDs {
		out[0] = lateFormatLegacy
	}
	out = binary.AppendVarint(out, m.start)
	out = binary.AppendUvarint(out, uint64(m.stored.events))
	out = binary.AppendUvarint(out, uint64(m.stored.revision))
	out = binary.AppendUvarint(out, uint64(len(countries)))
	for i, c := range countries {
		countryIdx[c] = uint32(i)
		out = appendString(out, p.countries.str(c))
	}
	out = binary.AppendUvarint(out, uint64(len(ads)))
	for i, a := range ads {
		adIdx[a] = uint32(i)
		out = appendString(out, p.ads.str(a))
	}
	out = binary.AppendUvarint(out, uint64(len(d.keys)))
	for _, k := range d.keys {
		out = binary.AppendUvarint(out, uint64(adIdx[keyAd(k)]))
		out = binary.AppendUvarint(out, uint64(countryIdx[keyCountry(k)]))
	}
	out = appendFixed(out, d.users)
	out = appendFixed(out, d.ips)
	hs := d.seen.appendTo(make([]uint64, 0, d.seen.len()))
	sortHashes(hs)
	return appendFixed(out, hs)
}

// lateView is a parsed late part; its strings and columns point into the
// encoding.
type lateView struct {
	start              int64
	baseEvents         int
	baseRevision       int64
	countries, ads     [][]byte
	events             [][2]uint32 // ad index, country index
	users, ips, hashes []byte      // 8 bytes per event
	legacyIDs          bool        // format 1: hashes of event_ids alone
}

// parseLate parses and checks an encoded late part: everything the format
// promises that does not need the minute it extends.
func parseLate(b []byte) (lateView, error) {
	var v lateView
	d, legacyIDs, err := newDecoder(b, lateFormat, lateFormatLegacy, "late part")
	if err != nil {
		return v, err
	}
	v.legacyIDs = legacyIDs
	v.start = d.varint()
	baseEvents, baseRevision := d.uvarint(), d.uvarint()
	if v.countries, v.ads, err = d.countriesAndAds(); err != nil {
		return v, err
	}
	// An event takes 2 bytes of indexes and 24 of hashes.
	v.events = make([][2]uint32, d.count(26))
	adUsed, countryUsed := make([]bool, len(v.ads)), make([]bool, len(v.countries))
	for i := range v.events {
		ad, country := d.uvarint(), d.uvarint()
		if d.err != nil {
			break
		}
		if ad >= uint64(len(v.ads)) || country >= uint64(len(v.countries)) {
			return v, fmt.Errorf("%w: late event %d refers to a missing ad or country", ErrCorrupt, i)
		}
		v.events[i] = [2]uint32{uint32(ad), uint32(country)}
		adUsed[ad], countryUsed[country] = true, true
	}
	n := uint64(len(v.events))
	v.users = d.bytes(8 * n)
	v.ips = d.bytes(8 * n)
	v.hashes = d.bytes(8 * n)
	if d.err == nil && len(d.b) > 0 {
		d.fail()
	}
	if d.err != nil {
		return v, d.err
	}
	if slices.Contains(adUsed, false) || slices.Contains(countryUsed, false) {
		return v, fmt.Errorf("%w: late part lists an ad or country without events", ErrCorrupt)
	}
	if baseEvents > math.MaxInt32 || baseRevision > math.MaxInt64-n {
		return v, fmt.Errorf("%w: late part extends %d events at revision %d", ErrCorrupt, baseEvents, baseRevision)
	}
	for i := 8; i < len(v.hashes); i += 8 {
		if binary.LittleEndian.Uint64(v.hashes[i-8:]) >= binary.LittleEndian.Uint64(v.hashes[i:]) {
			return v, fmt.Errorf("%w: late event hashes repeated or out of order", ErrCorrupt)
		}
	}
	v.baseEvents, v.baseRevision = int(baseEvents), int64(baseRevision)
	return v, nil
}

// restoreLate counts the events of the late part v in m, whose base is the
// whole form v extends, as they were counted: into its delta, in log order.
func (p *Partition) restoreLate(m *minute, v lateView) error {
	if v.legacyIDs != m.legacyIDs {
		return fmt.Errorf("%w: late part and minute identify clicks differently (formats differ)", ErrCorrupt)
	}
	ads := make([]uint32, len(v.ads))
	for i, a := range v.ads {
		ads[i] = p.ads.internBytes(a)
	}
	countries := make([]uint32, len(v.countries))
	for i, c := range v.countries {
		countries[i] = p.countries.internBytes(c)
	}
	n := len(v.events)
	m.delta = newDelta(n, n, n)
	users, ips := decodeFixed(v.users), decodeFixed(v.ips)
	for i, e := range v.events {
		p.add(m, rowKey(ads[e[0]], countries[e[1]]), users[i], ips[i])
	}
	for _, h := range decodeFixed(v.hashes) {
		if m.seenOrAdd(h) {
			return fmt.Errorf("%w: a late event's id hash is already counted in the minute", ErrCorrupt)
		}
	}
	m.revision = v.baseRevision + int64(n)
	return nil
}
