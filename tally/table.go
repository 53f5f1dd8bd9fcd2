package tally

import "math/bits"

// countTable maps non-zero uint64 keys to uint32 counts with open addressing
// and linear probing: the rows of a minute while it is filling. Keys are
// small packed ids, so they are spread by a multiplicative hash; the table
// is a power of two, grown when 3/4 full.
type countTable struct {
	keys  []uint64 // 0: empty
	vals  []uint32
	n     int
	shift uint8 // 64 - log2(len(keys))
}

const fib = 0x9E3779B97F4A7C15

// home is the slot where the probe for k starts.
func (t *countTable) home(k uint64) int { return int((k * fib) >> t.shift) }

// add adds v to k's count, and returns the new count and whether k was
// new.
func (t *countTable) add(k uint64, v uint32) (uint32, bool) {
	if (t.n+1)*4 > len(t.keys)*3 {
		t.grow()
	}
	mask := len(t.keys) - 1
	for i := t.home(k); ; i = (i + 1) & mask {
		switch t.keys[i] {
		case k:
			t.vals[i] += v
			return t.vals[i], false
		case 0:
			t.keys[i] = k
			t.vals[i] = v
			t.n++
			return v, true
		}
	}
}

func (t *countTable) get(k uint64) uint32 {
	if t.n == 0 {
		return 0
	}
	mask := len(t.keys) - 1
	for i := t.home(k); ; i = (i + 1) & mask {
		switch t.keys[i] {
		case k:
			return t.vals[i]
		case 0:
			return 0
		}
	}
}

// reserve sizes an empty table for n keys.
func (t *countTable) reserve(n int) {
	size := 8
	for size*3 < n*4 {
		size *= 2
	}
	t.resize(size)
}

func (t *countTable) grow() { t.resize(max(8, 2*len(t.keys))) }

func (t *countTable) resize(size int) {
	oldK, oldV := t.keys, t.vals
	t.keys = make([]uint64, size)
	t.vals = make([]uint32, size)
	t.shift = uint8(64 - bits.Len(uint(size-1)))
	mask := size - 1
	for j, k := range oldK {
		if k == 0 {
			continue
		}
		i := t.home(k)
		for t.keys[i] != 0 {
			i = (i + 1) & mask
		}
		t.keys[i], t.vals[i] = k, oldV[j]
	}
}

func (t *countTable) memBytes() int { return 12 * cap(t.keys) }
