package tally

import (
	"cmp"
	"slices"
	"sort"
	"sync/atomic"
)

// stride is the spacing of base's sparse indexes: from a key to its first
// row, and from a row to its first event.
const stride = 64

// esc in a narrow column of base says that the value does not fit and is in
// base.big. Counts of 255 and more clicks per (ad, country) in a minute, 255
// and more countries per ad, and more than 65534 country ids are rare (the
// last never happens, since the router admits only the ISO codes), so the
// columns are a byte or two wide and the state stays exact.
const (
	esc8  = 0xff
	esc16 = 0xffff
)

// Kinds of escaped values, the high half of a key of base.big.
const (
	bigRows uint64 = iota << 32
	bigCountry
	bigCount
	bigTotal
)

// base is the compact, canonical form of a minute's state up to its last
// merge. Its keys (ads) and, within each, its rows (countries) are in
// canonical order (see Partition.cmpAd), and its events are grouped by row
// in that order, in log order within a row, so the row of an event is
// implied by its position and encoding a snapshot is a copy. A key costs 6
// bytes, a row 3 bytes, plus a sixteenth of 4 bytes each for the indexes.
type base struct {
	ads       []uint32 // per key: the ad, in canonical order
	nrows     []uint8  // per key: its number of rows, or esc8
	totals    []uint8  // per key: its clicks, or esc8
	countries []uint16 // per row: the country id, or esc16
	counts    []uint8  // per row: clicks (> 0), or esc8
	big       map[uint64]uint32
	keyRows   []uint32 // keyRows[j]: the first row of key j*stride
	rowEvents []uint32 // rowEvents[j]: the first event of row j*stride
	users     []uint64 // per counted event: xxhash of user_id, grouped by row
	ips       []uint64 // per counted event: xxhash of ip, grouped by row
	// hashes are the sorted event-id hashes counted up to the merge; nil
	// once the minute has left the dedup horizon.
	hashes []uint64

	// index holds the events sorted by user and by ip hash, built on the
	// first query that needs them; nil while the base has no events.
	index *eventIndex

	// While the base is being built: the rows and clicks of the last key.
	lastRows, lastTotal int
}

// eventIndex lists a base's events (their positions) sorted by the hash of
// their user_id, and by that of their ip, so that a filtered query finds a
// user's or an ip's events by bisection instead of a scan. Each costs 4
// bytes per event, and is built only for bases that such a query reads;
// the base never changes, so neither does an index once built.
//
// It also holds the base's rows by country (countryIndex), built by the
// first country query that reads the base.
type eventIndex struct {
	byUser, byIP atomic.Pointer[[]uint32]
	byCountry    atomic.Pointer[countryIndex]
}

// countryIndex lists a base's rows grouped by country, each with its ad
// and clicks, so that a country query reads its country's rows alone
// instead of scanning every row and walking every key to them: the
// average query's country holds a few percent of the rows. 8 bytes per
// row, for bases that a country query has read.
type countryIndex struct {
	countries []uint32 // the base's country ids, ascending
	starts    []uint32 // countries[k]'s rows are at [starts[k], starts[k+1])
	ads       []uint32 // per row, grouped by country: its ad
	counts    []uint32 // per row, grouped by country: its clicks
}

// ofCountry returns the ads and clicks of c's rows.
func (x *countryIndex) ofCountry(c uint32) (ads, counts []uint32) {
	if x == nil {
		return nil, nil
	}
	k, ok := slices.BinarySearch(x.countries, c)
	if !ok {
		return nil, nil
	}
	return x.ads[x.starts[k]:x.starts[k+1]], x.counts[x.starts[k]:x.starts[k+1]]
}

// byCountry returns b's country index, building it if needed; nil when the
// base has no rows. Concurrent queries may build it at the same time; one
// of the equal results is kept.
func (b *base) byCountry() *countryIndex {
	if b.index == nil {
		return nil
	}
	if x := b.index.byCountry.Load(); x != nil {
		return x
	}
	// A counting sort by country id: ids are dense and few.
	maxID := uint32(0)
	for r := range b.countries {
		maxID = max(maxID, b.country(r))
	}
	pos := make([]uint32, maxID+2)
	for r := range b.countries {
		pos[b.country(r)+1]++
	}
	x := &countryIndex{ads: make([]uint32, len(b.countries)), counts: make([]uint32, len(b.countries))}
	for c := range maxID + 1 {
		if pos[c+1] > 0 {
			x.countries = append(x.countries, c)
			x.starts = append(x.starts, pos[c])
		}
		pos[c+1] += pos[c]
	}
	x.starts = append(x.starts, uint32(len(b.countries)))
	r := 0
	for i, ad := range b.ads {
		for end := r + b.rowsOf(i); r < end; r++ {
			c := b.country(r)
			x.ads[pos[c]], x.counts[pos[c]] = ad, uint32(b.count(r))
			pos[c]++
		}
	}
	b.index.byCountry.CompareAndSwap(nil, x)
	return b.index.byCountry.Load()
}

// matching returns the events of b whose user hash (ip false) or ip hash
// (ip true) is h, building the index if needed. Concurrent queries may build
// it at the same time; one of the equal results is kept.
func (b *base) matching(ip bool, h uint64) []uint32 {
	if b.index == nil {
		return nil
	}
	col, slot := b.users, &b.index.byUser
	if ip {
		col, slot = b.ips, &b.index.byIP
	}
	idx := slot.Load()
	if idx == nil {
		perm := make([]uint32, len(col))
		for i := range perm {
			perm[i] = uint32(i)
		}
		slices.SortFunc(perm, func(x, y uint32) int { return cmp.Compare(col[x], col[y]) })
		slot.CompareAndSwap(nil, &perm)
		idx = slot.Load()
	}
	ix := *idx
	lo := searchUniform(len(ix), func(i int) uint64 { return col[ix[i]] }, h)
	hi := lo
	for hi < len(ix) && col[ix[hi]] == h {
		hi++
	}
	return ix[lo:hi]
}

// rowOf returns the row of event e.
func (b *base) rowOf(e int) int {
	j := sort.Search(len(b.rowEvents), func(j int) bool { return int(b.rowEvents[j]) > e }) - 1
	r, first := j*stride, int(b.rowEvents[j])
	for first+b.count(r) <= e {
		first += b.count(r)
		r++
	}
	return r
}

// keyOf returns the key of row r.
func (b *base) keyOf(r int) int {
	j := sort.Search(len(b.keyRows), func(j int) bool { return int(b.keyRows[j]) > r }) - 1
	i, first := j*stride, int(b.keyRows[j])
	for first+b.rowsOf(i) <= r {
		first += b.rowsOf(i)
		i++
	}
	return i
}

func (b *base) rowsOf(i int) int {
	if n := b.nrows[i]; n != esc8 {
		return int(n)
	}
	return int(b.big[bigRows|uint64(i)])
}

func (b *base) total(i int) int {
	if n := b.totals[i]; n != esc8 {
		return int(n)
	}
	return int(b.big[bigTotal|uint64(i)])
}

func (b *base) country(r int) uint32 {
	if c := b.countries[r]; c != esc16 {
		return uint32(c)
	}
	return b.big[bigCountry|uint64(r)]
}

func (b *base) count(r int) int {
	if c := b.counts[r]; c != esc8 {
		return int(c)
	}
	return int(b.big[bigCount|uint64(r)])
}

// isCountry reports whether row r is of country c.
func (b *base) isCountry(r int, c uint32) bool {
	if c < esc16 {
		return b.countries[r] == uint16(c)
	}
	return b.countries[r] == esc16 && b.big[bigCountry|uint64(r)] == c
}

func (b *base) setBig(kind uint64, i int, v uint32) {
	if b.big == nil {
		b.big = make(map[uint64]uint32)
	}
	b.big[kind|uint64(i)] = v
}

// firstRow returns the first row of key i.
func (b *base) firstRow(i int) int {
	j := i / stride
	r := int(b.keyRows[j])
	for k := j * stride; k < i; k++ {
		r += b.rowsOf(k)
	}
	return r
}

// firstEvent returns the first event of row r.
func (b *base) firstEvent(r int) int {
	j := r / stride
	e := int(b.rowEvents[j])
	for k := j * stride; k < r; k++ {
		e += b.count(k)
	}
	return e
}

// appendRow appends a row of ad and country with count clicks, whose
// first event is the event-th.
func (b *base) appendRow(ad, country uint32, count, event int) {
	r := len(b.counts)
	if n := len(b.ads); n == 0 || b.ads[n-1] != ad {
		if n%stride == 0 {
			b.keyRows = append(b.keyRows, uint32(r))
		}
		b.ads = append(b.ads, ad)
		b.nrows = append(b.nrows, 0)
		b.totals = append(b.totals, 0)
		b.lastRows, b.lastTotal = 0, 0
	}
	i := len(b.ads) - 1
	b.lastTotal += count
	if b.lastTotal < esc8 {
		b.totals[i] = uint8(b.lastTotal)
	} else {
		b.totals[i] = esc8
		b.setBig(bigTotal, i, uint32(b.lastTotal))
	}
	b.lastRows++
	if b.lastRows < esc8 {
		b.nrows[i] = uint8(b.lastRows)
	} else {
		b.nrows[i] = esc8
		b.setBig(bigRows, i, uint32(b.lastRows))
	}
	if r%stride == 0 {
		b.rowEvents = append(b.rowEvents, uint32(event))
	}
	if country < esc16 {
		b.countries = append(b.countries, uint16(country))
	} else {
		b.countries = append(b.countries, esc16)
		b.setBig(bigCountry, r, country)
	}
	if count < esc8 {
		b.counts = append(b.counts, uint8(count))
	} else {
		b.counts = append(b.counts, esc8)
		b.setBig(bigCount, r, uint32(count))
	}
}

// clip drops the spare capacity of the columns built by appendRow.
func (b *base) clip() {
	clip := func(n, c int) bool { return c > n+n/32 }
	if clip(len(b.ads), cap(b.ads)) {
		b.ads = append([]uint32(nil), b.ads...)
		b.nrows = append([]uint8(nil), b.nrows...)
		b.totals = append([]uint8(nil), b.totals...)
	}
	if clip(len(b.counts), cap(b.counts)) {
		b.countries = append([]uint16(nil), b.countries...)
		b.counts = append([]uint8(nil), b.counts...)
	}
	b.keyRows = append([]uint32(nil), b.keyRows...)
	b.rowEvents = append([]uint32(nil), b.rowEvents...)
	if len(b.counts) > 0 {
		b.index = &eventIndex{}
	}
}

// memBytes is the memory of the rows, for tests and benchmarks.
func (b *base) memBytes() int {
	return 4*cap(b.ads) + cap(b.nrows) + cap(b.totals) + 2*cap(b.countries) + cap(b.counts) + 4*cap(b.keyRows) + 4*cap(b.rowEvents) + 16*len(b.big)
}

// indexBytes is the memory of the event indexes built so far.
func (b *base) indexBytes() int {
	n := 0
	if b.index != nil {
		for _, idx := range []*[]uint32{b.index.byUser.Load(), b.index.byIP.Load()} {
			if idx != nil {
				n += 4 * cap(*idx)
			}
		}
	}
	return n
}

// countryIndexBytes is the memory of the country index, if built.
func (b *base) countryIndexBytes() int {
	if b.index == nil {
		return 0
	}
	x := b.index.byCountry.Load()
	if x == nil {
		return 0
	}
	return 4 * (cap(x.countries) + cap(x.starts) + cap(x.ads) + cap(x.counts))
}
