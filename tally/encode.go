package tally

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// minuteFormat is the first byte of an encoded minute. Field number 0 is
// invalid in protobuf, so no encoded message (the clickaggv1.MinuteState
// that format 0 was) starts with it, and the two cannot be confused.
//
// Formats 1 and 2 have one layout; they differ in what a dedup hash
// identifies. In format 2 it is a click (clickID: the pair ad_id,
// event_id); in format 1, which earlier builds wrote, the event_id alone.
// A minute restored from format 1 with its hashes keeps deduplicating by
// the event_id alone (minute.legacyIDs) and is written in format 1 until
// it leaves the dedup horizon: its hashes cannot be turned into the
// pairs', and mixing the two would count a retry of an earlier click
// again.
const (
	minuteFormat       = 2
	minuteFormatLegacy = 1
)

// ErrFormat is wrapped by Restore's errors when a minute is in a format this
// build does not read.
var ErrFormat = errors.New("tally: unknown minute format")

// errTruncated is returned for a minute that ends early or has stray bytes.
var errTruncated = errors.New("truncated or malformed minute")

// Minute format 2 (and 1, see minuteFormat), all integers little-endian,
// varints as in encoding/binary:
//
//	byte     2 (the format)
//	varint   minute (zig-zag)
//	uvarint  revision
//	uvarint  flags: 1 = the minute still has its dedup hashes
//	uvarint  number of countries, then each: uvarint length, bytes;
//	         ascending
//	uvarint  number of ads, then each: uvarint length, bytes; in canonical
//	         order (xxhash of the ad_id, then the ad_id), ascending
//	uvarint  number of rows, then each: uvarint ad index minus the previous
//	         row's (0 or 1), uvarint country index, uvarint clicks (> 0);
//	         ascending by (ad, country), every ad used
//	8 bytes  per counted event: xxhash of user_id, the events grouped by
//	         row in row order (the sum of the clicks), log order within a
//	         row
//	8 bytes  per counted event: xxhash of ip, in the same order
//	         if flags has 1: uvarint number of hashes (= counted events),
//	         then 8 bytes each: the click-identity hashes (clickID),
//	         ascending
//
// Everything is in an order fixed by the minute's content, so the same
// minute gives the same bytes in every process.

// encodeMinute encodes m in minute format 2 (1 for a legacy minute).
func (p *Partition) encodeMinute(m *minute) []byte {
	return p.encodeMinuteWith(m, nil)
}

// encodeMinuteWith is encodeMinute with a scratch buffer for the parts
// before the fixed-size columns (nil: one of its own). Those parts are
// built first, so that the encoding, mostly fixed-size columns, is
// allocated once at its exact size and its strings are read once.
func (p *Partition) encodeMinuteWith(m *minute, scratch *[]byte) []byte {
	b := p.merged(m)

	// The minute's countries, ascending, and each one's index.
	var cids []uint32
	local := make([]uint32, p.countries.size()) // index+1, 0: not seen
	for r := range b.countries {
		c := b.country(r)
		if local[c] == 0 {
			local[c] = 1
			cids = append(cids, c)
		}
	}
	slices.SortFunc(cids, func(x, y uint32) int { return strings.Compare(p.countries.str(x), p.countries.str(y)) })
	for i, c := range cids {
		local[c] = uint32(i + 1)
	}

	var head []byte
	if scratch != nil {
		head = (*scratch)[:0]
	}
	// Room for the usual sizes: short strings, one-byte indexes and counts.
	head = slices.Grow(head, 64+8*len(cids)+24*len(b.ads)+5*len(b.counts))
	head = append(head, p.minuteFormatOf(m))
	head = binary.AppendVarint(head, m.start)
	head = binary.AppendUvarint(head, uint64(m.revision))
	var flags uint64
	if !m.frozen {
		flags = 1
	}
	head = binary.AppendUvarint(head, flags)
	head = binary.AppendUvarint(head, uint64(len(cids)))
	for _, c := range cids {
		head = appendString(head, p.countries.str(c))
	}
	head = binary.AppendUvarint(head, uint64(len(b.ads)))
	for _, ad := range b.ads {
		head = appendString(head, p.ads.str(ad))
	}
	head = binary.AppendUvarint(head, uint64(len(b.counts)))
	r := 0
	for i := range b.ads {
		for end := r + b.rowsOf(i); r < end; r++ {
			var step byte
			if r > 0 && r == end-b.rowsOf(i) {
				step = 1
			}
			head = append(head, step)
			head = binary.AppendUvarint(head, uint64(local[b.country(r)]-1))
			head = binary.AppendUvarint(head, uint64(b.count(r)))
		}
	}
	if scratch != nil {
		*scratch = head
	}

	size := len(head) + 16*len(b.users)
	if !m.frozen {
		size += uvarintLen(uint64(len(b.hashes))) + 8*len(b.hashes)
	}
	out := make([]byte, 0, size)
	out = append(out, head...)
	out = appendFixed(out, b.users)
	out = appendFixed(out, b.ips)
	if !m.frozen {
		out = binary.AppendUvarint(out, uint64(len(b.hashes)))
		out = appendFixed(out, b.hashes)
	}
	return out
}

// uvarintLen is the length of x as a uvarint.
func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// littleEndian is true where a []uint64 in memory is already its
// little-endian encoding, so the fixed-size columns (most of a minute's
// bytes) are copied as they are instead of a word at a time.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// asBytes is the memory of vs as bytes.
func asBytes(vs []uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(vs))), 8*len(vs))
}

func appendFixed(b []byte, vs []uint64) []byte {
	if littleEndian {
		return append(b, asBytes(vs)...)
	}
	n := len(b)
	b = slices.Grow(b, 8*len(vs))[:n+8*len(vs)]
	for i, v := range vs {
		binary.LittleEndian.PutUint64(b[n+8*i:], v)
	}
	return b
}

// minuteView is a parsed encoded minute. Its strings and fixed-size columns
// point into the encoding.
type minuteView struct {
	start, revision int64
	hasHashes       bool
	// legacyIDs: format 1, whose hashes identify event_ids alone.
	legacyIDs  bool
	countries  [][]byte
	ads        [][]byte
	rows       []viewRow
	events     int
	users, ips []byte // 8 bytes per event
	hashes     []byte // 8 bytes per hash
}

type viewRow struct{ ad, country, count uint32 }

// decoder reads the parts of an encoded minute.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	// Most varints of a minute (row steps, indexes, counts) are one byte.
	if len(d.b) > 0 && d.b[0] < 0x80 {
		v := uint64(d.b[0])
		d.b = d.b[1:]
		return v
	}
	return d.uvarintLong()
}

func (d *decoder) uvarintLong() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// count reads a number of items that take at least min bytes each.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errTruncated
	}
	d.b = nil
}

// newDecoder checks that b starts with format or legacy, the versions of
// what it encodes that this build reads, and returns a decoder of the rest
// and whether b is in the legacy format.
func newDecoder(b []byte, format, legacy byte, what string) (decoder, bool, error) {
	if len(b) == 0 || b[0] != format && b[0] != legacy {
		f := -1
		if len(b) > 0 {
			f = int(b[0])
		}
		return decoder{}, false, fmt.Errorf("%w: %s's first byte %d, this build reads formats %d and %d", ErrFormat, what, f, legacy, format)
	}
	return decoder{b: b[1:]}, b[0] == legacy, nil
}

// countriesAndAds reads the countries, ascending, then the ads, in canonical
// order, as minute format 1 and late parts list them.
func (d *decoder) countriesAndAds() (countries, ads [][]byte, err error) {
	countries = make([][]byte, d.count(1))
	for i := range countries {
		countries[i] = d.bytes(d.uvarint())
		if i > 0 && d.err == nil && bytes.Compare(countries[i-1], countries[i]) >= 0 {
			return nil, nil, fmt.Errorf("%w: countries out of order", ErrCorrupt)
		}
	}
	ads = make([][]byte, d.count(1))
	var prevHash uint64
	for i := range ads {
		ads[i] = d.bytes(d.uvarint())
		h := xxhash.Sum64(ads[i])
		if i > 0 && d.err == nil && (h < prevHash || h == prevHash && bytes.Compare(ads[i-1], ads[i]) >= 0) {
			return nil, nil, fmt.Errorf("%w: ads out of order", ErrCorrupt)
		}
		prevHash = h
	}
	return countries, ads, nil
}

// parseMinute parses and checks an encoded minute: everything the format
// promises that does not need the partition's state.
func parseMinute(b []byte) (minuteView, error) {
	var v minuteView
	d, legacyIDs, err := newDecoder(b, minuteFormat, minuteFormatLegacy, "minute")
	if err != nil {
		return v, err
	}
	v.legacyIDs = legacyIDs
	v.start = d.varint()
	rev := d.uvarint()
	flags := d.uvarint()
	if v.countries, v.ads, err = d.countriesAndAds(); err != nil {
		return v, err
	}
	used := make([]bool, len(v.countries))
	v.rows = make([]viewRow, d.count(3))
	var ad uint64
	var events uint64
	for i := range v.rows {
		step, country, count := d.uvarint(), d.uvarint(), d.uvarint()
		if d.err != nil {
			break
		}
		if i == 0 && step != 0 || step > 1 {
			return v, fmt.Errorf("%w: row %d skips an ad", ErrCorrupt, i)
		}
		ad += step
		switch {
		case ad >= uint64(len(v.ads)) || country >= uint64(len(v.countries)):
			return v, fmt.Errorf("%w: row %d refers to a missing ad or country", ErrCorrupt, i)
		case count == 0 || count > math.MaxUint32:
			return v, fmt.Errorf("%w: row %d has count %d", ErrCorrupt, i, count)
		case i > 0 && step == 0 && country <= uint64(v.rows[i-1].country):
			return v, fmt.Errorf("%w: rows out of order", ErrCorrupt)
		}
		v.rows[i] = viewRow{ad: uint32(ad), country: uint32(country), count: uint32(count)}
		used[country] = true
		events += count
	}
	if d.err == nil && (len(v.ads) > 0 && ad != uint64(len(v.ads)-1) || slices.Contains(used, false)) {
		return v, fmt.Errorf("%w: ads or countries without rows", ErrCorrupt)
	}
	if events > uint64(len(d.b)/16) {
		d.fail()
	}
	v.events = int(events)
	v.users = d.bytes(8 * events)
	v.ips = d.bytes(8 * events)
	if flags&1 != 0 {
		v.hasHashes = true
		n := d.count(8)
		v.hashes = d.bytes(8 * uint64(n))
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail()
	}
	if d.err != nil {
		return v, d.err
	}
	if flags > 1 || rev > math.MaxInt64 {
		return v, fmt.Errorf("%w: flags %d, revision %d", ErrCorrupt, flags, rev)
	}
	v.revision = int64(rev)
	if v.hasHashes {
		// Every counted event added exactly one hash, so the two must agree.
		if len(v.hashes)/8 != v.events {
			return v, fmt.Errorf("%w: %d event hashes for %d clicks", ErrCorrupt, len(v.hashes)/8, v.events)
		}
		for i := 8; i < len(v.hashes); i += 8 {
			if binary.LittleEndian.Uint64(v.hashes[i-8:]) >= binary.LittleEndian.Uint64(v.hashes[i:]) {
				return v, fmt.Errorf("%w: event hashes repeated or out of order", ErrCorrupt)
			}
		}
	}
	return v, nil
}

// decodeFixed returns the little-endian uint64s that b holds. On a
// little-endian machine it appends b's words as they are to a nil slice:
// append allocates without zeroing the memory it is about to overwrite,
// where make would first zero the columns of every minute a recovery reads
// (about 5% of its CPU at 10M keys). The words in b may be unaligned: they
// are only copied, by memmove, never loaded through the slice.
func decodeFixed(b []byte) []uint64 {
	n := len(b) / 8
	if littleEndian {
		if n == 0 {
			return []uint64{}
		}
		words := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), n)
		out := append([]uint64(nil), words...)
		return out[:n:n]
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return out
}
