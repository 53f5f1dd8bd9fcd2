package tally

import "math/bits"

// hashSet is a set of 64-bit event-id hashes with open addressing and linear
// probing: the dedup set of a minute that is still filling, or the ids a
// complete minute has counted since its last merge (see base.hashes).
//
// A slot is 8 bytes. The table grows by half when it is 3/4 full, so it is
// kept between 1/2 and 3/4 full and an id costs 10.7 to 16 bytes. Table
// sizes are not powers of two, so a hash picks its slot by the high half of
// hash × size ("fastrange"), which uses all of the hash's bits.
//
// Zero marks an empty slot, so the hash 0 is kept in a flag of its own.
type hashSet struct {
	slots   []uint64
	n       int // non-zero hashes in slots
	hasZero bool
}

const hashSetMinSlots = 8

func (s *hashSet) home(h uint64) int {
	hi, _ := bits.Mul64(h, uint64(len(s.slots)))
	return int(hi)
}

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
	for i := s.home(h); ; {
		switch s.slots[i] {
		case h:
			return false
		case 0:
			s.slots[i] = h
			s.n++
			return true
		}
		if i++; i == len(s.slots) {
			i = 0
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
	for i := s.home(h); ; {
		switch s.slots[i] {
		case h:
			return true
		case 0:
			return false
		}
		if i++; i == len(s.slots) {
			i = 0
		}
	}
}

func (s *hashSet) len() int {
	if s.hasZero {
		return s.n + 1
	}
	return s.n
}

// reserve sizes an empty set for n hashes, at a load of 2/3.
func (s *hashSet) reserve(n int) {
	if n > 0 {
		s.slots = make([]uint64, max(hashSetMinSlots, n+n/2))
	}
}

func (s *hashSet) grow() {
	old := s.slots
	s.slots = make([]uint64, max(hashSetMinSlots, len(old)+len(old)/2))
	for _, h := range old {
		if h == 0 {
			continue
		}
		i := s.home(h)
		for s.slots[i] != 0 {
			if i++; i == len(s.slots) {
				i = 0
			}
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
