package tally

// counter sums int64 counts per key. Keys and counts live in parallel slices
// in insertion order, so that a query can scan them without walking a map;
// idx finds a key's position while the minute can still change.
type counter[K comparable] struct {
	idx    map[K]int32
	keys   []K
	counts []int64
}

func newCounter[K comparable]() counter[K] {
	return counter[K]{idx: make(map[K]int32)}
}

// add adds n to k's count and returns k's position and whether k was new.
func (c *counter[K]) add(k K, n int64) (int32, bool) {
	if i, ok := c.idx[k]; ok {
		c.counts[i] += n
		return i, false
	}
	i := int32(len(c.keys))
	c.idx[k] = i
	c.keys = append(c.keys, k)
	c.counts = append(c.counts, n)
	return i, true
}

func (c *counter[K]) get(k K) int64 {
	if i, ok := c.idx[k]; ok {
		return c.counts[i]
	}
	return 0
}

// cellKey is one (ad, country, ip, user_id) combination, as interned ids:
// ad from Partition.ads, the others from Partition.attrs.
type cellKey struct {
	ad, country, ip, user uint32
}

// cellList is the head of a linked list of cells, threaded through
// minute.nextByIP or minute.nextByUser. The lists hold no pointers, so the
// garbage collector never scans them, and adding a cell allocates nothing.
type cellList struct {
	first int32 // position of the newest cell, -1 when empty
	n     int32
}

// minute is the state of one Unix minute of one partition.
//
// cells is the source of truth; ads and byCountry are rollups of it that
// answer unfiltered and country-filtered queries without scanning cells, and
// byIP and byUser list the cells of each ip and user for the other filters.
type minute struct {
	start    int64 // Unix minute
	revision int64 // events counted after the minute had completed

	// seq is the partition's change sequence at the minute's last change;
	// saved is the sequence of the last snapshot the store accepted with it.
	// The minute must be written again while seq > saved.
	seq, saved uint64

	ads        counter[uint32]             // ad → clicks
	byCountry  map[uint32]*counter[uint32] // country → ad → clicks
	cells      counter[cellKey]
	byIP       map[uint32]cellList // ip → its cells
	byUser     map[uint32]cellList // user → its cells
	nextByIP   []int32             // per cell: the next cell of the same ip, or -1
	nextByUser []int32             // per cell: the next cell of the same user, or -1

	// seen holds the hashes of the event ids counted in this minute; nil once
	// the minute has left the dedup horizon and can no longer change.
	seen *hashSet
}

func newMinute(start int64) *minute {
	return &minute{
		start:     start,
		ads:       newCounter[uint32](),
		byCountry: make(map[uint32]*counter[uint32]),
		cells:     newCounter[cellKey](),
		byIP:      make(map[uint32]cellList),
		byUser:    make(map[uint32]cellList),
		seen:      &hashSet{},
	}
}

// add counts n clicks of cell k and reports whether k is a new cell.
func (m *minute) add(k cellKey, n int64) bool {
	pos, created := m.cells.add(k, n)
	m.ads.add(k.ad, n)
	c := m.byCountry[k.country]
	if c == nil {
		cc := newCounter[uint32]()
		c = &cc
		m.byCountry[k.country] = c
	}
	c.add(k.ad, n)
	if created {
		m.nextByIP = append(m.nextByIP, push(m.byIP, k.ip, pos))
		m.nextByUser = append(m.nextByUser, push(m.byUser, k.user, pos))
	}
	return created
}

// push makes cell pos the head of key's list and returns the old head.
func push(lists map[uint32]cellList, key uint32, pos int32) int32 {
	l, ok := lists[key]
	if !ok {
		l.first = -1
	}
	next := l.first
	lists[key] = cellList{first: pos, n: l.n + 1}
	return next
}

// freeze releases what only a changing minute needs: the dedup set and the
// cell index. The rollup indexes stay, since queries look ads up in them.
func (m *minute) freeze() {
	m.seen = nil
	m.cells.idx = nil
}

// query is a Filter resolved to interned ids. A set field whose value the
// partition has never seen makes the whole query match nothing, which the
// caller handles before building a query.
type query struct {
	country, ip, user          uint32
	hasCountry, hasIP, hasUser bool
}

// cellsOf returns the list of cells the ip or user filter selects, choosing
// the shorter list when both are set, with the next-links to walk it, and
// false when neither is set.
func (m *minute) cellsOf(q *query) (cellList, []int32, bool) {
	switch {
	case q.hasIP && q.hasUser:
		a, b := m.list(m.byIP, q.ip), m.list(m.byUser, q.user)
		if b.n < a.n {
			return b, m.nextByUser, true
		}
		return a, m.nextByIP, true
	case q.hasIP:
		return m.list(m.byIP, q.ip), m.nextByIP, true
	case q.hasUser:
		return m.list(m.byUser, q.user), m.nextByUser, true
	}
	return cellList{}, nil, false
}

func (m *minute) list(lists map[uint32]cellList, key uint32) cellList {
	if l, ok := lists[key]; ok {
		return l
	}
	return cellList{first: -1}
}

func (q *query) match(k cellKey) bool {
	return (!q.hasCountry || k.country == q.country) &&
		(!q.hasIP || k.ip == q.ip) &&
		(!q.hasUser || k.user == q.user)
}

// count returns the clicks of ad in this minute that match q.
func (m *minute) count(ad uint32, q *query) int64 {
	if l, next, ok := m.cellsOf(q); ok {
		var n int64
		for i := l.first; i >= 0; i = next[i] {
			if k := m.cells.keys[i]; k.ad == ad && q.match(k) {
				n += m.cells.counts[i]
			}
		}
		return n
	}
	if q.hasCountry {
		if c := m.byCountry[q.country]; c != nil {
			return c.get(ad)
		}
		return 0
	}
	return m.ads.get(ad)
}

// accumulate adds the clicks of every ad in this minute that match q to acc,
// indexed by ad id, and appends ads seen for the first time to touched.
func (m *minute) accumulate(q *query, acc []int64, touched []uint32) []uint32 {
	if l, next, ok := m.cellsOf(q); ok {
		for i := l.first; i >= 0; i = next[i] {
			k := m.cells.keys[i]
			if !q.match(k) {
				continue
			}
			if acc[k.ad] == 0 {
				touched = append(touched, k.ad)
			}
			acc[k.ad] += m.cells.counts[i]
		}
		return touched
	}
	c := &m.ads
	if q.hasCountry {
		if c = m.byCountry[q.country]; c == nil {
			return touched
		}
	}
	for i, ad := range c.keys {
		if acc[ad] == 0 {
			touched = append(touched, ad)
		}
		acc[ad] += c.counts[i]
	}
	return touched
}
