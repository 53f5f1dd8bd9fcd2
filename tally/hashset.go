package tally

// hashSet is a set of 64-bit event-id hashes with open addressing and linear
// probing. A Go map[uint64]struct{} costs about twice the memory per id;
// here a slot is 8 bytes and the table is kept between 3/8 and 3/4 full, so
// an id costs 11 to 21 bytes, about 14 on average.
//
// Zero marks an empty slot, so the hash 0 is kept in a flag of its own.
type hashSet struct {
	slots   []uint64
	n       int // non-zero hashes in slots
	hasZero bool
}

const hashSetMinSlots = 8

// add inserts h and reports whether it was new.
func (s *hashSet) add(h uint64) bool {
	if h == 0 {
		if s.hasZero {
			return false
		}
		s.hasZero = true
		return true
	}
	if (s.n+1)*4 > len(s.slots)*3 {
		s.grow()
	}
	mask := uint64(len(s.slots) - 1)
	// xxhash mixes all input bits into the low bits, so they index well.
	for i := h & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case h:
			return false
		case 0:
			s.slots[i] = h
			s.n++
			return true
		}
	}
}

func (s *hashSet) contains(h uint64) bool {
	if h == 0 {
		return s.hasZero
	}
	if len(s.slots) == 0 {
		return false
	}
	mask := uint64(len(s.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case h:
			return true
		case 0:
			return false
		}
	}
}

func (s *hashSet) len() int {
	if s.hasZero {
		return s.n + 1
	}
	return s.n
}

func (s *hashSet) grow() {
	old := s.slots
	s.slots = make([]uint64, max(hashSetMinSlots, 2*len(old)))
	mask := uint64(len(s.slots) - 1)
	for _, h := range old {
		if h == 0 {
			continue
		}
		i := h & mask
		for s.slots[i] != 0 {
			i = (i + 1) & mask
		}
		s.slots[i] = h
	}
}

// appendTo appends every hash in the set, in no particular order.
func (s *hashSet) appendTo(dst []uint64) []uint64 {
	if s.hasZero {
		dst = append(dst, 0)
	}
	for _, h := range s.slots {
		if h != 0 {
			dst = append(dst, h)
		}
	}
	return dst
}

// memBytes is the memory the set holds, for tests and benchmarks.
func (s *hashSet) memBytes() int { return 8 * cap(s.slots) }
