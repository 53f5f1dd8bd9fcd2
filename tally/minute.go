package tally

import (
	"cmp"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// A row key packs an interned ad id and country id: ad<<32 | country. Ad
// ids start at 1, so a key is never 0.
func rowKey(ad, country uint32) uint64 { return uint64(ad)<<32 | uint64(country) }
func keyAd(k uint64) uint32            { return uint32(k >> 32) }
func keyCountry(k uint64) uint32       { return uint32(k) }

// clickID is the 64-bit hash that stands for a click's identity in the
// dedup sets: the pair (ad_id, event_id), given the xxhash of the ad_id.
// Two events are the same click when both are equal (and they fall in the
// same minute, whose set is searched). That does not depend on which
// partition an ad hashes to or where a split sends it: before, the
// event_id alone was the key of a partition's set, so the same event_id on
// two ads collided only when the ads shared a partition.
//
// The ad's hash is mixed by a bijection (an odd multiplier, a rotation)
// before it is combined, so that pairs with their fields swapped do not
// cancel out; two different pairs collide with the chance of two random
// 64-bit values (see "Hashes stand for strings" in doc.go).
func clickID(adHash uint64, eventID string) uint64 {
	return xxhash.Sum64String(eventID) ^ bits.RotateLeft64(adHash*0x9e3779b97f4a7c15, 32)
}

// delta is what a minute counted since its last merge: everything while
// it is filling, then the late events. Rows are hash tables, events are
// appended in log order.
type delta struct {
	rows  countTable // (ad, country) → clicks
	ads   countTable // ad → clicks
	keys  []uint64   // per counted event: its row
	users []uint64
	ips   []uint64
	seen  hashSet // click-identity hashes (clickID), not in base.hashes
	// heavyRows and heavyAds list, in the order they got there, the rows
	// and ads that reached heavyAt clicks: every other one has fewer,
	// which lets Top skip them (topLight).
	heavyRows []uint64
	heavyAds  []uint32
}

// heavyAt is the count at which a delta lists a row or ad as heavy. With
// Zipf popularity few ads of a minute get that many clicks, so the lists
// stay short, and a bound of heavyAt-1 clicks on all the others is small
// against the counts of a top 100 over a long window. A variable, so that
// tests can exercise it on small workloads.
var heavyAt uint32 = 64

// minute is the state of one Unix minute of one partition: base, plus the
// delta since base was merged.
type minute struct {
	start    int64 // Unix minute
	revision int64 // events counted after the minute had completed

	// seq is the partition's change sequence at the minute's last change;
	// saved is the sequence of the last snapshot the store accepted with it.
	// The minute must be written again while seq > saved.
	seq, saved uint64

	base  base
	delta *delta // nil when empty
	// frozen: the minute has left the dedup horizon and can no longer
	// change; it has no dedup hashes and no delta.
	frozen bool
	// legacyIDs: the minute was restored from minute format 1 with its
	// dedup hashes, which identify event_ids alone; it goes on
	// deduplicating that way until it is frozen (see minuteFormat).
	legacyIDs bool

	// stored is the whole form of the minute that the store holds, as far
	// as the last snapshot the store accepted with it says; late parts
	// extend it (late.go).
	stored wholeForm
}

// wholeForm names a state of a minute by its events and revision: the
// minute only grows, one event at a time, so its events alone tell its
// states apart, and the revision is a check.
type wholeForm struct {
	events   int // -1: none
	revision int64
}

func newMinute(start int64) *minute { return &minute{start: start, stored: wholeForm{events: -1}} }

// newDelta returns a delta sized for about this many events, rows and ads.
func newDelta(events, rows, ads int) *delta {
	d := &delta{
		keys:  make([]uint64, 0, events),
		users: make([]uint64, 0, events),
		ips:   make([]uint64, 0, events),
	}
	d.seen.reserve(events)
	d.rows.reserve(rows)
	d.ads.reserve(ads)
	return d
}

// rows is the number of rows of the minute, counting a row in both base
// and delta twice.
func (m *minute) rows() int {
	n := len(m.base.counts)
	if m.delta != nil {
		n += m.delta.rows.n
	}
	return n
}

// events is the number of events counted in the minute.
func (m *minute) events() int {
	n := len(m.base.users)
	if m.delta != nil {
		n += len(m.delta.users)
	}
	return n
}

// seenOrAdd reports whether the event-id hash h was counted in the minute,
// and remembers it if not.
func (m *minute) seenOrAdd(h uint64) bool {
	if hs := m.base.hashes; len(hs) > 0 {
		if i := searchUniform(len(hs), func(i int) uint64 { return hs[i] }, h); i < len(hs) && hs[i] == h {
			return true
		}
	}
	if m.delta == nil {
		m.delta = &delta{}
	}
	return !m.delta.seen.add(h)
}

// cmpAd orders ads canonically: by the xxhash of the ad_id, then by the
// ad_id. It does not depend on the ids, so every process that holds the
// same minute orders it the same way, and sorting compares integers.
func (p *Partition) cmpAd(a, b uint32) int {
	if a == b {
		return 0
	}
	if c := cmp.Compare(p.ads.hashes[a], p.ads.hashes[b]); c != 0 {
		return c
	}
	return strings.Compare(p.ads.str(a), p.ads.str(b))
}

// cmpKey orders rows canonically: by ad (cmpAd), then by country string.
func (p *Partition) cmpKey(a, b uint64) int {
	if c := p.cmpAd(keyAd(a), keyAd(b)); c != 0 {
		return c
	}
	if a == b {
		return 0
	}
	return strings.Compare(p.countries.str(keyCountry(a)), p.countries.str(keyCountry(b)))
}

// findAd returns the position of ad among b's keys, and whether it is there.
func (p *Partition) findAd(b *base, ad uint32) (int, bool) {
	hashes, ads := p.ads.hashes, b.ads
	h := hashes[ad]
	lo := searchUniform(len(ads), func(i int) uint64 { return hashes[ads[i]] }, h)
	for i := lo; i < len(ads) && hashes[ads[i]] == h; i++ {
		if ads[i] == ad {
			return i, true
		}
	}
	return lo, false
}

// searchUniform returns the first i in [0, n) with at(i) >= h, or n, for a
// non-decreasing at whose values are uniform hashes. It interpolates: it
// guesses where h falls between the values at the ends of the range, and
// needs about log log n probes instead of log n. After a few guesses it
// bisects, which bounds the probes if the guesses go wrong.
func searchUniform(n int, at func(int) uint64, h uint64) int {
	// Every value before lo is below h, every value from hi on at or
	// above; vlo and vhi bound them (as if at(-1) = 0, at(n) = 2⁶⁴-1).
	lo, hi := 0, n
	vlo, vhi := uint64(0), uint64(math.MaxUint64)
	for step := 0; lo < hi; step++ {
		mid := lo + (hi-lo)/2
		if step < 4 && vhi > vlo {
			f := float64(h-vlo) / float64(vhi-vlo)
			mid = lo + int(f*float64(hi-lo))
			mid = min(max(mid, lo), hi-1)
		}
		if v := at(mid); v < h {
			lo, vlo = mid+1, v
		} else {
			hi, vhi = mid, v
		}
	}
	return lo
}

// hasRow reports whether b has the row k.
func (p *Partition) hasRow(b *base, k uint64) bool {
	i, ok := p.findAd(b, keyAd(k))
	if !ok {
		return false
	}
	r := b.firstRow(i)
	for end := r + b.rowsOf(i); r < end; r++ {
		if b.isCountry(r, keyCountry(k)) {
			return true
		}
	}
	return false
}

// add counts one event of row k, by user and ip hashes, in m's delta. It
// increfs the row's ad and country when the row is new to the minute.
func (p *Partition) add(m *minute, k, user, ip uint64) {
	d := m.delta
	if d == nil {
		d = &delta{}
		m.delta = d
	}
	c, isNew := d.rows.add(k, 1)
	if isNew && (len(m.base.ads) == 0 || !p.hasRow(&m.base, k)) {
		p.incref(k)
	}
	if c == heavyAt {
		d.heavyRows = append(d.heavyRows, k)
	}
	if c, _ := d.ads.add(uint64(keyAd(k)), 1); c == heavyAt {
		d.heavyAds = append(d.heavyAds, keyAd(k))
	}
	d.keys = append(d.keys, k)
	d.users = append(d.users, user)
	d.ips = append(d.ips, ip)
}

func (p *Partition) incref(k uint64) {
	p.ads.incref(keyAd(k))
	p.countries.incref(keyCountry(k))
}

func (p *Partition) decref(k uint64) {
	p.ads.decref(keyAd(k))
	p.countries.decref(keyCountry(k))
}

// mergeDue reports whether a complete minute's delta has grown enough to be
// merged: merges copy the base, so they wait until the delta is a fair
// share of it.
func (m *minute) mergeDue() bool {
	return m.delta != nil && len(m.delta.users) > 64+len(m.base.users)/8
}

// compact merges the delta into the base.
func (p *Partition) compact(m *minute) {
	if m.delta != nil {
		m.base = p.merged(m)
		m.delta = nil
	}
}

// freeze releases what only a changing minute needs: the delta and the dedup
// hashes.
func (p *Partition) freeze(m *minute) {
	p.compact(m)
	m.base.hashes = nil
	m.frozen = true
	m.legacyIDs = false
}

// minuteFormatOf is the format m is encoded in.
func (p *Partition) minuteFormatOf(m *minute) byte {
	if m.legacyIDs {
		return minuteFormatLegacy
	}
	return minuteFormat
}

// merged returns m's base with its delta merged in, in new slices; m is not
// changed, so a snapshot can merge under the read lock.
func (p *Partition) merged(m *minute) base {
	d := m.delta
	if d == nil {
		return m.base
	}
	// Allocated here, where they do not escape: small ones stay on the
	// stack.
	rows := p.sortedDeltaRows(d, make([]deltaRow, 0, d.rows.n))
	du, di := make([]uint64, len(d.users)), make([]uint64, len(d.users))
	groupByRow(d, rows, du, di)
	out := p.mergeRows(&m.base, d, rows, du, di)
	if !m.frozen {
		dh := d.seen.appendTo(make([]uint64, 0, d.seen.len()))
		sortHashes(dh)
		out.hashes = mergeSorted(m.base.hashes, dh)
	}
	return out
}

// deltaRow is a row of a delta: the hash of its ad, which orders rows
// first, its key, and its slot in the delta's row table.
type deltaRow struct {
	h    uint64
	key  uint64
	slot int32
}

// sortedDeltaRows appends d's rows to rows, empty, in canonical order.
func (p *Partition) sortedDeltaRows(d *delta, rows []deltaRow) []deltaRow {
	for s, k := range d.rows.keys {
		if k != 0 {
			rows = append(rows, deltaRow{h: p.ads.hashes[keyAd(k)], key: k, slot: int32(s)})
		}
	}
	slices.SortFunc(rows, func(a, b deltaRow) int {
		if a.h != b.h {
			return cmp.Compare(a.h, b.h)
		}
		return p.cmpKey(a.key, b.key)
	})
	return rows
}

// groupByRow copies d's users and ips into users and ips, grouped by row,
// the rows in the order of rows (sortedDeltaRows), and in log order within
// a row.
func groupByRow(d *delta, rows []deltaRow, users, ips []uint64) {
	// For each table slot the row's position in rows, and the next event
	// of each row in the grouped order.
	pos := make([]int32, len(d.rows.keys))
	cur := make([]int32, len(rows)+1)
	for j, r := range rows {
		pos[r.slot] = int32(j)
		cur[j+1] = cur[j] + int32(d.rows.vals[r.slot])
	}
	mask := len(d.rows.keys) - 1
	for e, k := range d.keys {
		s := int((k * fib) >> d.rows.shift)
		for d.rows.keys[s] != k {
			s = (s + 1) & mask
		}
		j := pos[s]
		users[cur[j]], ips[cur[j]] = d.users[e], d.ips[e]
		cur[j]++
	}
}

// mergeRows merges b's rows and events with those of the delta d: its
// rows in canonical order and their events grouped by row (du, di, from
// groupByRow). The result has no dedup hashes.
func (p *Partition) mergeRows(b *base, d *delta, rows []deltaRow, du, di []uint64) base {
	nrows := len(b.counts) + len(rows)
	events := len(b.users) + len(d.users)
	out := base{
		ads:       make([]uint32, 0, len(b.ads)+len(rows)),
		nrows:     make([]uint8, 0, len(b.ads)+len(rows)),
		totals:    make([]uint8, 0, len(b.ads)+len(rows)),
		countries: make([]uint16, 0, nrows),
		counts:    make([]uint8, 0, nrows),
		users:     make([]uint64, 0, events),
		ips:       make([]uint64, 0, events),
	}
	emit := func(k uint64, c int, us, is, us2, is2 []uint64) {
		out.appendRow(keyAd(k), keyCountry(k), c, len(out.users))
		out.users = append(append(out.users, us...), us2...)
		out.ips = append(append(out.ips, is...), is2...)
	}
	bo, do := 0, 0   // next event of base, of the grouped delta
	i, j := 0, 0     // next row of base, of the delta
	a, left := -1, 0 // key of row i, and its rows from i on
	for i < len(b.counts) || j < len(rows) {
		var bk uint64
		if i < len(b.counts) {
			for left == 0 {
				a++
				left = b.rowsOf(a)
			}
			bk = rowKey(b.ads[a], b.country(i))
		}
		var c int
		switch {
		case j == len(rows):
			c = -1
		case i == len(b.counts):
			c = 1
		case bk == rows[j].key:
			c = 0
		default:
			c = p.cmpKey(bk, rows[j].key)
		}
		switch {
		case c < 0:
			n := b.count(i)
			emit(bk, n, b.users[bo:bo+n], b.ips[bo:bo+n], nil, nil)
			bo += n
			i++
			left--
		case c > 0:
			n := int(d.rows.vals[rows[j].slot])
			emit(rows[j].key, n, du[do:do+n], di[do:do+n], nil, nil)
			do += n
			j++
		default:
			n, dn := b.count(i), int(d.rows.vals[rows[j].slot])
			emit(bk, n+dn, b.users[bo:bo+n], b.ips[bo:bo+n], du[do:do+dn], di[do:do+dn])
			bo += n
			do += dn
			i++
			left--
			j++
		}
	}
	out.clip()
	return out
}

// mergeSorted merges two sorted slices of distinct values into a new one.
func mergeSorted(a, b []uint64) []uint64 {
	out := make([]uint64, len(a)+len(b))
	i, j, k := 0, 0, 0
	for i < len(a) && j < len(b) {
		if a[i] < b[j] {
			out[k] = a[i]
			i++
		} else {
			out[k] = b[j]
			j++
		}
		k++
	}
	k += copy(out[k:], a[i:])
	copy(out[k:], b[j:])
	return out
}

// sortHashes sorts uint64s with an LSD radix sort on bytes: the hashes are
// uniform, and eight counting passes beat a comparison sort.
func sortHashes(a []uint64) {
	if len(a) < 256 {
		slices.Sort(a)
		return
	}
	tmp := make([]uint64, len(a))
	src, dst := a, tmp
	var count [256]int
	for shift := uint(0); shift < 64; shift += 8 {
		clear(count[:])
		for _, v := range src {
			count[(v>>shift)&0xff]++
		}
		sum := 0
		for i, c := range count {
			count[i] = sum
			sum += c
		}
		for _, v := range src {
			d := (v >> shift) & 0xff
			dst[count[d]] = v
			count[d]++
		}
		src, dst = dst, src
	}
	// An even number of passes: the result is back in a.
}

// query is a Filter resolved for matching: the country as an interned id,
// the ip and user_id as hashes. A set field whose value cannot match makes
// the whole query match nothing, which the caller handles before building
// a query.
type query struct {
	country                    uint32
	ip, user                   uint64
	hasCountry, hasIP, hasUser bool
}

func (q *query) byEvent() bool { return q.hasIP || q.hasUser }

// filterHash is the hash to look events up by: the user's if set, else
// the ip's.
func (q *query) filterHash() uint64 {
	if q.hasUser {
		return q.user
	}
	return q.ip
}

func (q *query) matchEvent(user, ip uint64) bool {
	return (!q.hasUser || user == q.user) && (!q.hasIP || ip == q.ip)
}

// count returns the clicks of ad in m that match q.
func (p *Partition) countMinute(m *minute, ad uint32, q *query) int64 {
	var n int64
	b := &m.base
	if i, ok := p.findAd(b, ad); ok {
		first := b.firstRow(i)
		end := first + b.rowsOf(i)
		events := 0
		if q.byEvent() {
			events = b.total(i)
		}
		switch {
		case events > 64:
			// Many events of ad: those of the user or ip are fewer.
			for _, e := range b.matching(!q.hasUser, q.filterHash()) {
				if !q.matchEvent(b.users[e], b.ips[e]) {
					continue
				}
				if r := b.rowOf(int(e)); first <= r && r < end && (!q.hasCountry || b.isCountry(r, q.country)) {
					n++
				}
			}
		case q.byEvent():
			e := b.firstEvent(first)
			for r := first; r < end; r++ {
				c := b.count(r)
				if !q.hasCountry || b.isCountry(r, q.country) {
					for x := e; x < e+c; x++ {
						if q.matchEvent(b.users[x], b.ips[x]) {
							n++
						}
					}
				}
				e += c
			}
		case q.hasCountry:
			// The ad's rows are in country order: bisect them.
			want := p.countries.str(q.country)
			lo, hi := first, end
			for lo < hi {
				mid := int(uint(lo+hi) >> 1)
				if p.countries.str(b.country(mid)) < want {
					lo = mid + 1
				} else {
					hi = mid
				}
			}
			if lo < end && b.isCountry(lo, q.country) {
				n += int64(b.count(lo))
			}
		default:
			n += int64(b.total(i))
		}
	}
	if d := m.delta; d != nil {
		switch {
		case q.byEvent():
			for e, k := range d.keys {
				if keyAd(k) == ad && (!q.hasCountry || keyCountry(k) == q.country) && q.matchEvent(d.users[e], d.ips[e]) {
					n++
				}
			}
		case q.hasCountry:
			n += int64(d.rows.get(rowKey(ad, q.country)))
		default:
			n += int64(d.ads.get(uint64(ad)))
		}
	}
	return n
}

// accumulate adds the clicks of every ad in m that match q to acc, indexed
// by ad id, and if track, appends ads seen for the first time to touched.
func accumulate(m *minute, q *query, acc []int64, touched []uint32, track bool) []uint32 {
	b := &m.base
	r := 0
	switch {
	case q.byEvent() && b.index != nil:
		for _, e := range b.matching(!q.hasUser, q.filterHash()) {
			if !q.matchEvent(b.users[e], b.ips[e]) {
				continue
			}
			r := b.rowOf(int(e))
			if q.hasCountry && !b.isCountry(r, q.country) {
				continue
			}
			ad := b.ads[b.keyOf(r)]
			if track && acc[ad] == 0 {
				touched = append(touched, ad)
			}
			acc[ad]++
		}
	case q.byEvent():
		e := 0
		for i, ad := range b.ads {
			for end := r + b.rowsOf(i); r < end; r++ {
				c := b.count(r)
				if !q.hasCountry || b.isCountry(r, q.country) {
					for x := e; x < e+c; x++ {
						if q.matchEvent(b.users[x], b.ips[x]) {
							if track && acc[ad] == 0 {
								touched = append(touched, ad)
							}
							acc[ad]++
						}
					}
				}
				e += c
			}
		}
	case q.hasCountry:
		// The country's rows, from the base's country index.
		ads, counts := b.byCountry().ofCountry(q.country)
		for k, ad := range ads {
			if track && acc[ad] == 0 {
				touched = append(touched, ad)
			}
			acc[ad] += int64(counts[k])
		}
	default:
		for i, ad := range b.ads {
			n := int64(b.totals[i])
			if n == esc8 {
				n = int64(b.total(i))
			}
			if track && acc[ad] == 0 {
				touched = append(touched, ad)
			}
			acc[ad] += n
		}
	}
	d := m.delta
	if d == nil {
		return touched
	}
	switch {
	case q.byEvent():
		for e, k := range d.keys {
			if (!q.hasCountry || keyCountry(k) == q.country) && q.matchEvent(d.users[e], d.ips[e]) {
				ad := keyAd(k)
				if track && acc[ad] == 0 {
					touched = append(touched, ad)
				}
				acc[ad]++
			}
		}
	case q.hasCountry:
		for s, k := range d.rows.keys {
			// An empty slot's key, 0, has country id 0, which no
			// country has.
			if keyCountry(k) == q.country {
				ad := keyAd(k)
				if track && acc[ad] == 0 {
					touched = append(touched, ad)
				}
				acc[ad] += int64(d.rows.vals[s])
			}
		}
	default:
		for s, k := range d.ads.keys {
			if k != 0 {
				ad := uint32(k)
				if track && acc[ad] == 0 {
					touched = append(touched, ad)
				}
				acc[ad] += int64(d.ads.vals[s])
			}
		}
	}
	return touched
}
