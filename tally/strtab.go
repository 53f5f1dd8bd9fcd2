package tally

// strtab interns strings as dense uint32 ids, so that the per-minute
// aggregates hold 4-byte keys instead of string headers, and an id can index
// a plain slice when a query adds counts up per ad.
//
// Every id is reference counted by the cells that use it. When the last
// minute using a string leaves memory its id is freed and reused, so the
// table holds only the strings of the minutes in memory instead of growing
// with every user and IP ever seen.
//
// Ids depend on the order in which strings arrived and were freed, so they
// never leave the package: snapshots and answers use the strings.
type strtab struct {
	ids  map[string]uint32
	strs []string
	refs []uint64
	free []uint32
}

func newStrtab() strtab {
	return strtab{ids: make(map[string]uint32)}
}

func (t *strtab) lookup(s string) (uint32, bool) {
	id, ok := t.ids[s]
	return id, ok
}

// intern returns the id of s, adding s if needed. The caller must incref the
// id before it next decrefs anything, or the new entry may never be freed.
func (t *strtab) intern(s string) uint32 {
	if id, ok := t.ids[s]; ok {
		return id
	}
	var id uint32
	if n := len(t.free); n > 0 {
		id = t.free[n-1]
		t.free = t.free[:n-1]
		t.strs[id] = s
	} else {
		id = uint32(len(t.strs))
		t.strs = append(t.strs, s)
		t.refs = append(t.refs, 0)
	}
	t.ids[s] = id
	return id
}

func (t *strtab) incref(id uint32) { t.refs[id]++ }

func (t *strtab) decref(id uint32) {
	t.refs[id]--
	if t.refs[id] == 0 {
		delete(t.ids, t.strs[id])
		t.strs[id] = ""
		t.free = append(t.free, id)
	}
}

// size is the number of ids in use or free: the bound of any id.
func (t *strtab) size() int { return len(t.strs) }

// live is the number of strings currently interned.
func (t *strtab) live() int { return len(t.ids) }
