package tally

import (
	"math/bits"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// strtab interns strings as dense uint32 ids, so that the per-minute rows
// hold 4-byte references instead of string headers, and an id can index a
// plain slice when a query adds counts up per ad. Id 0 is never used, so a
// packed row key (ad<<32 | country) is never 0, the empty slot of a table.
//
// Every id is reference counted by the rows that use it. When the last
// minute using a string leaves memory its id is freed and reused, so the
// table holds only the strings of the minutes in memory.
//
// Ids depend on the order in which strings arrived and were freed, so they
// never leave the package: snapshots and answers use the strings. The
// xxhash of each string is kept beside it: it finds the string's id in
// index, and it orders a minute's rows the same way in every process (see
// Partition.cmpAd).
type strtab struct {
	// index is an open-addressing table of ids (0: empty slot) placed by
	// the high bits of their string's hash, a power of two kept at most 3/4
	// full; it costs 5 to 11 bytes per string where a map[string]uint32
	// costs about 40.
	index []uint32
	shift uint8 // 64 - log2(len(index))
	n     int   // live strings
	// data holds the strings back to back, and spans[id] the offset<<32 |
	// length of string id in it: 8 bytes per string and its length, where
	// a Go string costs a 16-byte header and an allocation rounded up.
	// Freed strings leave garbage, dropped when it is half of data.
	data    []byte
	spans   []uint64
	garbage int
	hashes  []uint64
	refs    []uint32
	free    []uint32
	// sink receives what Partition.warm reads, so that its loads are not
	// optimized away.
	sink uint64
}

func newStrtab() strtab {
	return strtab{spans: []uint64{0}, hashes: []uint64{0}, refs: []uint32{0}}
}

// str returns string id. It points into the table, so it is valid only
// until the table next changes: it must not outlive the partition's lock,
// and answers must copy it.
func (t *strtab) str(id uint32) string {
	sp := t.spans[id]
	off, n := int(sp>>32), int(uint32(sp))
	if n == 0 {
		return ""
	}
	return unsafe.String(&t.data[off], n)
}

// find returns the slot holding s, or the empty slot where it would go.
func (t *strtab) find(s string, h uint64) (int, bool) {
	mask := len(t.index) - 1
	for i := int(h >> t.shift); ; i = (i + 1) & mask {
		id := t.index[i]
		if id == 0 {
			return i, false
		}
		if t.hashes[id] == h && t.str(id) == s {
			return i, true
		}
	}
}

// guess returns the id of a string whose hash is h, or 0: the id of the
// string of hash h if there is one, unless another string has the same
// hash. The index must not be empty.
func (t *strtab) guess(h uint64) uint32 {
	mask := len(t.index) - 1
	for i := int(h >> t.shift); ; i = (i + 1) & mask {
		id := t.index[i]
		if id == 0 || t.hashes[id] == h {
			return id
		}
	}
}

func (t *strtab) lookup(s string) (uint32, bool) {
	if t.n == 0 {
		return 0, false
	}
	i, ok := t.find(s, xxhash.Sum64String(s))
	return t.index[i], ok
}

// intern returns the id of s, adding a copy of s, made valid UTF-8, if
// needed. The caller must incref the id before it next decrefs anything, or
// a new entry may never be freed.
func (t *strtab) intern(s string) uint32 {
	return t.internHashed(s, xxhash.Sum64String(s))
}

// internHashed is intern for a string whose xxhash h the caller has.
func (t *strtab) internHashed(s string, h uint64) uint32 {
	i := -1
	if t.n > 0 {
		var ok bool
		if i, ok = t.find(s, h); ok {
			return t.index[i]
		}
	}
	if v := validUTF8(s); v != s {
		return t.add(v)
	}
	return t.insert(s, h, i)
}

// internBytes is intern for a string in a decoded snapshot.
func (t *strtab) internBytes(b []byte) uint32 {
	// The string does not outlive the call; add copies it.
	return t.intern(unsafe.String(unsafe.SliceData(b), len(b)))
}

// add adds a copy of s, which the table does not hold yet unless s is the
// valid form of a string that was not found.
func (t *strtab) add(s string) uint32 {
	h := xxhash.Sum64String(s)
	i := -1
	if t.n > 0 {
		var ok bool
		if i, ok = t.find(s, h); ok {
			return t.index[i]
		}
	}
	return t.insert(s, h, i)
}

// insert adds a copy of s, whose hash is h and which the table does not
// hold, at slot i, the empty slot find returned for it, or -1 if find was
// not called.
func (t *strtab) insert(s string, h uint64, i int) uint32 {
	if (t.n+1)*4 > len(t.index)*3 {
		t.grow()
		i = -1
	}
	if i < 0 {
		i, _ = t.find(s, h)
	}
	sp := uint64(len(t.data))<<32 | uint64(len(s))
	t.data = append(t.data, s...)
	var id uint32
	if n := len(t.free); n > 0 {
		id = t.free[n-1]
		t.free = t.free[:n-1]
		t.spans[id], t.hashes[id] = sp, h
	} else {
		id = uint32(len(t.spans))
		t.spans = append(t.spans, sp)
		t.hashes = append(t.hashes, h)
		t.refs = append(t.refs, 0)
	}
	t.index[i] = id
	t.n++
	return id
}

func (t *strtab) grow() {
	old := t.index
	size := max(8, 2*len(old))
	t.index = make([]uint32, size)
	t.shift = uint8(64 - bits.Len(uint(size-1)))
	mask := size - 1
	for _, id := range old {
		if id == 0 {
			continue
		}
		i := int(t.hashes[id] >> t.shift)
		for t.index[i] != 0 {
			i = (i + 1) & mask
		}
		t.index[i] = id
	}
}

func (t *strtab) incref(id uint32) { t.refs[id]++ }

func (t *strtab) decref(id uint32) {
	t.refs[id]--
	if t.refs[id] != 0 {
		return
	}
	// Remove id from the index by shifting back the entries after it that
	// would otherwise be cut off from their home slot: linear probing
	// without tombstones.
	mask := len(t.index) - 1
	i := int(t.hashes[id] >> t.shift)
	for t.index[i] != id {
		i = (i + 1) & mask
	}
	for j := (i + 1) & mask; t.index[j] != 0; j = (j + 1) & mask {
		home := int(t.hashes[t.index[j]] >> t.shift)
		// Move the entry at j to the hole at i unless its home lies
		// cyclically in (i, j].
		if (j-home)&mask >= (j-i)&mask {
			t.index[i] = t.index[j]
			i = j
		}
	}
	t.index[i] = 0
	t.n--
	t.garbage += int(uint32(t.spans[id]))
	t.spans[id] = 0
	t.hashes[id] = 0
	t.free = append(t.free, id)
	if t.garbage > 4096 && 2*t.garbage > len(t.data) {
		t.compactData()
	}
}

// compactData copies the live strings to a new data, dropping the garbage.
func (t *strtab) compactData() {
	data := make([]byte, 0, len(t.data)-t.garbage)
	for id, sp := range t.spans {
		if n := int(uint32(sp)); n > 0 {
			off := int(sp >> 32)
			t.spans[id] = uint64(len(data))<<32 | uint64(n)
			data = append(data, t.data[off:off+n]...)
		}
	}
	t.data, t.garbage = data, 0
}

// size is the number of ids in use or free, plus the unused id 0: the
// bound of any id.
func (t *strtab) size() int { return len(t.spans) }

// live is the number of strings currently interned.
func (t *strtab) live() int { return t.n }

// memBytes is the memory the table holds, strings included.
func (t *strtab) memBytes() int {
	return cap(t.index)*4 + cap(t.data) + cap(t.spans)*8 + cap(t.hashes)*8 + cap(t.refs)*4 + cap(t.free)*4
}
