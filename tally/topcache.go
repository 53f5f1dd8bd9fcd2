package tally

import (
	"cmp"
	"maps"
	"math"
	"slices"
	"sync"

	"github.com/clickagg/clickagg/topn"
)

// Top over a long window spends its time adding up minutes that no longer
// change much: once complete, a minute changes only by late events. So,
// like Druid's per-segment result cache for immutable segments, a
// partition caches for Top the per-ad sums of the complete minutes of a
// window, and a query adds to them only what differs, in
// O(|difference| + n):
//
//   - the minutes of its window that the entry does not cover (the
//     filling ones, those completed since, a slid window's new minutes),
//     added whole;
//   - the covered minutes outside its window, subtracted whole;
//   - the events counted in covered minutes since the entry was built,
//     read from the late journal.
//
// Exactness. An entry covers a set S of minutes that were complete when it
// was built, with their sums then. A complete minute changes its counts
// only by counting an event, and every event counted in a complete minute
// is late and appended to the journal (journalLate) at the moment it is
// counted; merging, freezing and snapshots change no count, and a minute
// that leaves memory can never come back (its events would be expired).
// So for each minute m of S, m now = m at build + the journal's events of
// m since the entry's position, and summing over the window gives:
//
//	window now = entry + journal(S) + Σ(window \ S) − Σ(S \ window)
//
// where Σ(S \ window) is taken now, which the journal term corrects. An
// entry is unusable once a minute of S left memory, or once the journal
// dropped events it needs; as a check of the journal itself, the late
// events it holds for S must match the rise of S's revisions (which count
// exactly the late events), or the query falls back to adding up every
// minute. Sums are indexed by ad id, and ids are freed only when no minute
// in memory uses them: an ad with clicks in S keeps its id while the entry
// is usable, and an id reused since for another ad finds a sum of 0, right
// for an ad that had no clicks in S.
//
// When the difference grows past an eighth of the window, the entry is
// replaced by one for the window's complete minutes now, derived as the
// same equation says: its sums are the old ones plus the difference
// without the minutes that are not complete.
//
// The answer is then exact whatever the difference: the ads the
// difference touches get their exact count (entry + difference) and are
// all candidates; every other ad keeps its entry count, so the best n of
// them are among the first n of the entry's ranking not touched and the
// ads tied with the n-th: the ranking holds the entry's best ads by count,
// every ad with a count of at least its last one, more than n since
// touched ones are skipped. When it runs out, every untouched ad of the
// entry is a candidate instead. Candidates are few, and ordered exactly,
// ad_id strings included, only once chosen.
//
// The cache is for unfiltered and country queries; ip and user_id queries
// read few events through the event indexes and are not cached.

// lateEvent is an event counted in a complete minute.
type lateEvent struct {
	start int64  // its minute
	key   uint64 // its row
}

// The cache's bounds; variables so that tests can exercise them on small
// workloads.
var (
	// maxTopEntries bounds the entries of a partition's cache, least
	// recently used first out.
	maxTopEntries = 4
	// maxLateJournal bounds the journal (16 bytes an event); when full it
	// drops its older half, and the entries that needed it.
	maxLateJournal = 1 << 14
	// minCachedKeys: windows whose complete minutes hold fewer keys are
	// added up directly; an entry would save little.
	minCachedKeys = 4096
	// minEntryShare: windows whose complete minutes' bases hold fewer rows
	// that the query reads than the ad table's size / minEntryShare are
	// added up directly too. An entry costs a pass over the ad table to
	// build, and as much memory; a country with few rows is cheaper to add
	// up than that, and its entry would evict those of the commonest
	// countries and of the unfiltered windows, which are worth keeping.
	minEntryShare = 4
	// rebuildSlack is added to the difference an entry may leave before a
	// new one is built: for small windows, rebuilding would save nothing.
	rebuildSlack = 512
	// maxCachedN: larger n are answered directly, since the ranking of an
	// entry holds more than n items.
	maxCachedN = 10_000
)

// topEntry is the sums of the minutes S for one filter, as they were when
// it was built. Once in the cache, only used changes, under the cache's
// lock.
type topEntry struct {
	country string    // the filter's country, "" for none
	n       int       // the n it was built for: its ranking suits n up to that
	starts  []int64   // S, ascending
	mins    []*minute // S's minutes
	revs    []int64   // S's revisions when built
	pos     uint64    // the journal's end when built
	// sums[ad] is the clicks of ad over S; ads past its end had none.
	// MaxUint32 stands for a sum in big.
	sums []uint32
	big  map[uint32]int64
	// ranked is the best ads of S by count, every ad with a count of at
	// least its last one, count descending (ties in no order: ordering
	// them compares strings, which only the few a query keeps need);
	// nonzero counts the ads with clicks.
	ranked  []topItem
	nonzero int
	used    uint64 // the cache's clock at its last use
}

func (e *topEntry) sum(ad uint32) int64 {
	if int(ad) >= len(e.sums) {
		return 0
	}
	if s := e.sums[ad]; s != math.MaxUint32 {
		return int64(s)
	}
	return e.big[ad]
}

func (e *topEntry) setSum(ad uint32, c int64) {
	if c < math.MaxUint32 {
		if e.sums[ad] == math.MaxUint32 {
			delete(e.big, ad)
		}
		e.sums[ad] = uint32(c)
		return
	}
	if e.big == nil {
		e.big = make(map[uint32]int64)
	}
	e.sums[ad] = math.MaxUint32
	e.big[ad] = c
}

func (e *topEntry) memBytes() int {
	return 128 + 4*cap(e.sums) + 16*len(e.big) + 16*cap(e.ranked) + 24*cap(e.starts)
}

// topCache holds a partition's entries. Queries share it under the
// partition's read lock, so it has its own lock; entries do not change but
// for their used stamp, and are read without it.
type topCache struct {
	mu      sync.Mutex
	entries []*topEntry
	clock   uint64
	stats   topCacheStats
}

// topCacheStats counts what the cache did, for tests.
type topCacheStats struct {
	hits, builds, derived, journaled, rejected int
	// light counts the answers topLight gave, lightMissed the times it
	// could not bound what it skipped.
	light, lightMissed int
}

func (c *topCache) empty() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries) == 0
}

func (c *topCache) memBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.entries {
		n += e.memBytes()
	}
	return n
}

// put adds e, replacing the entries it supersedes (same filter and
// minutes) and evicting the least recently used beyond maxTopEntries.
func (c *topCache) put(e *topEntry, derived bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock++
	e.used = c.clock
	c.entries = slices.DeleteFunc(c.entries, func(o *topEntry) bool {
		return o.country == e.country && slices.Equal(o.starts, e.starts)
	})
	if len(c.entries) >= maxTopEntries {
		lru := 0
		for i, o := range c.entries {
			if o.used < c.entries[lru].used {
				lru = i
			}
		}
		c.entries = slices.Delete(c.entries, lru, lru+1)
	}
	c.entries = append(c.entries, e)
	if derived {
		c.stats.derived++
	} else {
		c.stats.builds++
	}
}

func (c *topCache) hit(journaled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.hits++
	if journaled {
		c.stats.journaled++
	}
}

func (c *topCache) countLight(ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		c.stats.light++
	} else {
		c.stats.lightMissed++
	}
}

func (c *topCache) remove(e *topEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.rejected++
	c.entries = slices.DeleteFunc(c.entries, func(o *topEntry) bool { return o == e })
}

// dropUpTo removes the entries that cover a minute up to last, which has
// left memory. The writer calls it under the partition's lock.
func (c *topCache) dropUpTo(last int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = slices.DeleteFunc(c.entries, func(e *topEntry) bool { return e.starts[0] <= last })
}

// journalLate records an event counted in the complete minute start, row
// k. The writer calls it under the partition's lock.
func (p *Partition) journalLate(start int64, k uint64) {
	if p.tops.empty() {
		// No entry needs an event counted so far: entries built later
		// start at the journal's end.
		p.lateBase += uint64(len(p.late)) + 1
		p.late = p.late[:0]
		return
	}
	if len(p.late) >= maxLateJournal {
		p.trimJournal()
	}
	p.late = append(p.late, lateEvent{start: start, key: k})
}

// trimJournal drops the journal's older half, or more if no entry needs
// it, and the entries that needed what was dropped.
func (p *Partition) trimJournal() {
	c := &p.tops
	c.mu.Lock()
	defer c.mu.Unlock()
	end := p.lateBase + uint64(len(p.late))
	oldest := end
	for _, e := range c.entries {
		oldest = min(oldest, e.pos)
	}
	base := max(oldest, p.lateBase+uint64(len(p.late)/2))
	p.late = append(p.late[:0], p.late[base-p.lateBase:]...)
	p.lateBase = base
	c.entries = slices.DeleteFunc(c.entries, func(e *topEntry) bool { return e.pos < base })
}

// topCached answers Top from a cache entry for window, building one if
// none fits. It returns false when the window is better added up directly.
func (p *Partition) topCached(window []int64, n int, country string, q *query, s *topScratch) ([]AdCount, bool) {
	if n > maxCachedN {
		return nil, false
	}
	// The complete minutes of the window, which come first: an entry
	// covers only those.
	complete := 0
	for complete < len(window) && minuteEnd(window[complete]) <= p.watermark {
		complete++
	}
	rest := 0
	for _, start := range window[complete:] {
		rest += p.minutes[start].keys()
	}
	S, F := window[:complete], window[complete:]
	// above reports whether the complete minutes hold more than x keys,
	// counted by keysOf. It reads only as many minutes as it needs:
	// reading the keys of every minute of an hour, in every partition, was
	// a fifth of the time of a Top over it.
	above := func(x int, keysOf func(m *minute) int) bool {
		keys := 0
		for _, start := range S {
			if keys += keysOf(p.minutes[start]); keys > x {
				return true
			}
		}
		return false
	}
	keysAbove := func(x int) bool { return above(x, (*minute).keys) }
	// The minutes that are not complete are added to any entry (or
	// bounded, see topLight): when they hold as much as the complete ones,
	// an entry saves too little. Nor is one worth it when the bases of
	// the complete minutes hold few rows that q reads (a country's only;
	// their deltas hold only late events): see minEntryShare.
	baseKeys := func(m *minute) int { return m.baseKeys(q) }
	if complete == 0 || !keysAbove(max(minCachedKeys-1, rest-1)) || !above(p.ads.size()/minEntryShare-1, baseKeys) {
		return nil, false
	}
	e, cost := p.bestEntry(window, n, country)
	switch {
	case e == nil:
		e = p.buildEntry(S, F, n, country, q, s)
		p.tops.put(e, false)
	case cost > rest+rebuildSlack && !keysAbove(8*(cost-rest-rebuildSlack)-1):
		// That is, cost > rest + keys/8 + rebuildSlack.
		// A difference of more than an eighth of the window beyond what
		// a new entry would leave is worth a new entry, made from this
		// one: its cost comes back after a few queries.
		d, ok := p.deriveEntry(e, S, F, q, s)
		if !ok {
			p.tops.remove(e)
			d = p.buildEntry(S, F, n, country, q, s)
		}
		e = d
		p.tops.put(e, ok)
	default:
		p.tops.hit(e.pos < p.lateBase+uint64(len(p.late)))
	}
	out, ok := p.topFrom(e, window, n, q, s)
	if !ok {
		p.tops.remove(e)
	}
	return out, ok
}

// bestEntry returns the usable entry for window that leaves the least to
// add, and that cost in keys and journal events, or nil.
func (p *Partition) bestEntry(window []int64, n int, country string) (*topEntry, int) {
	c := &p.tops
	c.mu.Lock()
	defer c.mu.Unlock()
	var best *topEntry
	bestCost := 0
	for _, e := range c.entries {
		if e.country != country || e.n < n || e.pos < p.lateBase || !p.holds(e) {
			continue
		}
		cost := int(p.lateBase + uint64(len(p.late)) - e.pos)
		i, j := 0, 0
		for i < len(window) || j < len(e.starts) {
			switch {
			case j == len(e.starts) || i < len(window) && window[i] < e.starts[j]:
				cost += p.minutes[window[i]].keys()
				i++
			case i == len(window) || e.starts[j] < window[i]:
				cost += e.mins[j].keys()
				j++
			default:
				i++
				j++
			}
		}
		if best == nil || cost < bestCost {
			best, bestCost = e, cost
		}
	}
	if best != nil {
		c.clock++
		best.used = c.clock
	}
	return best, bestCost
}

// deriveEntry returns the entry for the complete minutes S of a window
// whose other minutes are rest, made from e and the difference: it costs
// the difference and a pass over the ads, where buildEntry adds up every
// minute again. It returns false if the journal does not account for
// every late event of e's minutes.
func (p *Partition) deriveEntry(e *topEntry, S, rest []int64, q *query, s *topScratch) (*topEntry, bool) {
	ok := p.diff(e, S, q, s, false)
	if !ok {
		s.clear()
		return nil, false
	}
	d := p.newEntry(S, e.n, e.country)
	d.sums = make([]uint32, p.ads.size())
	copy(d.sums, e.sums)
	if len(e.big) > 0 {
		d.big = maps.Clone(e.big)
	}
	for _, ad := range s.touched {
		d.setSum(ad, e.sum(ad)+s.acc[ad])
	}
	s.clear()
	items := s.items[:0]
	for ad := range d.sums {
		if c := d.sum(uint32(ad)); c > 0 {
			items = append(items, topItem{ad: uint32(ad), count: c})
		}
	}
	s.items = items
	p.rank(d, items, rest)
	return d, true
}

// newEntry returns an entry for the complete minutes S, without its sums.
func (p *Partition) newEntry(S []int64, n int, country string) *topEntry {
	e := &topEntry{
		country: country,
		n:       n,
		starts:  slices.Clone(S),
		mins:    make([]*minute, len(S)),
		revs:    make([]int64, len(S)),
		pos:     p.lateBase + uint64(len(p.late)),
	}
	for i, start := range S {
		m := p.minutes[start]
		e.mins[i], e.revs[i] = m, m.revision
	}
	return e
}

// rank sets e's ranking from items, its ads with clicks, which it
// reorders.
func (p *Partition) rank(e *topEntry, items []topItem, rest []int64) {
	e.nonzero = len(items)
	// Queries skip the ranked ads that their difference touches: mostly
	// the ads of the filling minutes, which are among the best. Rank
	// enough to skip them all twice over.
	touched := 0
	for _, start := range rest {
		touched += p.minutes[start].keys()
	}
	if k := e.n + 2*touched + 64; k < len(items) {
		least := nthCount(items, k)
		items = slices.DeleteFunc(items, func(it topItem) bool { return it.count < least })
	}
	slices.SortFunc(items, func(a, b topItem) int { return cmp.Compare(b.count, a.count) })
	e.ranked = slices.Clone(items)
}

// holds reports whether every minute e covers is still in memory. Entries
// are removed when one of their minutes leaves (dropUpTo); this check keeps
// a mistake there from giving a wrong answer.
func (p *Partition) holds(e *topEntry) bool {
	for j, start := range e.starts {
		if p.minutes[start] != e.mins[j] {
			return false
		}
	}
	return true
}

// buildEntry adds up the complete minutes S of a window whose other minutes
// are rest.
func (p *Partition) buildEntry(S, rest []int64, n int, country string, q *query, s *topScratch) *topEntry {
	e := p.newEntry(S, n, country)
	for _, m := range e.mins {
		accumulate(m, q, s.acc, nil, false)
	}
	size := p.ads.size()
	e.sums = make([]uint32, size)
	items := s.items[:0]
	for ad, c := range s.acc[:size] {
		if c != 0 {
			e.setSum(uint32(ad), c)
			items = append(items, topItem{ad: uint32(ad), count: c})
			s.acc[ad] = 0
		}
	}
	s.items = items
	p.rank(e, items, rest)
	return e
}

// diff adds to s.acc what window holds beyond entry e (see the top of the
// file), marking and listing in s.touched the ads it adds to. It returns
// false if the journal does not account for every late event of e's
// minutes; the caller clears s either way (s.clear).
//
// With light, the minutes of window that are light (still filling and
// all delta) are not added but listed in s.light, for topLight.
func (p *Partition) diff(e *topEntry, window []int64, q *query, s *topScratch, light bool) bool {
	acc, mark := s.acc, s.mark
	touched := s.touched[:0]
	s.light = s.light[:0]
	i, j := 0, 0
	for i < len(window) || j < len(e.starts) {
		switch {
		case j == len(e.starts) || i < len(window) && window[i] < e.starts[j]:
			if m := p.minutes[window[i]]; !light || minuteEnd(m.start) <= p.watermark || len(m.base.ads) > 0 {
				touched = addRows(m, q, 1, acc, mark, touched)
			} else if m.delta != nil {
				s.light = append(s.light, m)
			}
			i++
		case i == len(window) || e.starts[j] < window[i]:
			touched = addRows(e.mins[j], q, -1, acc, mark, touched)
			j++
		default:
			i++
			j++
		}
	}
	var late int64
	if len(e.starts) > 0 {
		first, last := e.starts[0], e.starts[len(e.starts)-1]
		for _, ev := range p.late[e.pos-p.lateBase:] {
			if ev.start < first || ev.start > last {
				continue
			}
			if _, ok := slices.BinarySearch(e.starts, ev.start); !ok {
				continue
			}
			late++
			if q.hasCountry && keyCountry(ev.key) != q.country {
				continue
			}
			ad := keyAd(ev.key)
			if !mark[ad] {
				mark[ad] = true
				touched = append(touched, ad)
			}
			acc[ad]++
		}
	}
	for k, m := range e.mins {
		late -= m.revision - e.revs[k]
	}
	s.touched = touched
	return late == 0
}

// clear zeroes what diff left in s.
func (s *topScratch) clear() {
	for _, ad := range s.touched {
		s.acc[ad] = 0
		s.mark[ad] = false
	}
	s.touched = s.touched[:0]
}

// topFrom answers Top over window from entry e. It returns false if the
// journal does not account for every late event of e's minutes.
func (p *Partition) topFrom(e *topEntry, window []int64, n int, q *query, s *topScratch) ([]AdCount, bool) {
	if !p.diff(e, window, q, s, true) {
		s.clear()
		return nil, false
	}
	// topLight walks the ranking down to T-b, so it pays only when the
	// counts the top n has are well above b; when they are not (small
	// windows, small countries) it would walk the whole ranking and fail.
	if len(s.light) > 0 {
		bound := int64(len(s.light)) * int64(heavyAt-1)
		if len(e.ranked) >= n && e.ranked[n-1].count > 2*bound {
			out, ok := p.topLight(e, n, bound, q, s)
			p.tops.countLight(ok)
			if ok {
				s.clear()
				return out, true
			}
		}
		for _, m := range s.light {
			s.touched = addRows(m, q, 1, s.acc, s.mark, s.touched)
		}
	}
	mark := s.mark
	items := s.items[:0]
	// The first n untouched ads of the ranking, and those tied with the
	// last of them, if it holds them: then an ad with a smaller count
	// cannot make the top n, so that count bounds the touched ads worth a
	// candidate, and the untouched ones past it.
	untouched, end := 0, len(e.ranked)
	least := int64(1)
	for k, it := range e.ranked {
		if untouched == n {
			if it.count < least {
				end = k
				break
			}
		} else if !mark[it.ad] {
			if untouched++; untouched == n {
				least = it.count
			}
		}
	}
	if untouched == n || len(e.ranked) == e.nonzero {
		// The ranking holds every ad with at least its last count, so
		// none past end has least.
		for _, it := range e.ranked[:end] {
			if !mark[it.ad] {
				items = append(items, it)
			}
		}
	} else {
		// The ranking ran out: every untouched ad is a candidate.
		for ad := range e.sums {
			if !mark[ad] {
				if c := e.sum(uint32(ad)); c > 0 {
					items = append(items, topItem{ad: uint32(ad), count: c})
				}
			}
		}
	}
	for _, ad := range s.touched {
		if c := e.sum(ad) + s.acc[ad]; c >= least {
			items = append(items, topItem{ad: ad, count: c})
		}
	}
	s.clear()
	s.items = items
	return p.ads.answer(p.ads.best(items, n)), true
}

// topLight answers Top from e when the window's minutes beyond e include
// light ones (s.light: still filling, all delta), without adding those
// up: a filling minute holds a key for most ads in play, and reading all
// of them, for every query of every partition, was most of the time of a
// Top over the last hour.
//
// Exactness. Outside its heavy lists (heavyAt), an ad has at most
// heavyAt-1 clicks in a light minute, so with L light minutes an ad that
// diff did not touch and that is heavy in none has at most its entry count
// + b, b = L·(heavyAt-1) (bound, which the caller passes). The candidates
// are the touched ads, the heavy ones, and the ranking's ads in order,
// each with its exact count (the light minutes' tables give its clicks
// there), until the ranking's count + b falls below the n-th best exact
// count T so far: every ad not taken has at most its entry count + b < T,
// no more than a ranked ad's passed, or, past the end of the ranking, than
// the ads outside it have (fewer than its last). It returns false when the
// ranking ran out before that; the caller then adds the light minutes up.
func (p *Partition) topLight(e *topEntry, n int, bound int64, q *query, s *topScratch) ([]AdCount, bool) {
	light := s.light
	cand := s.cand
	listed := s.listed[:0]
	items := s.items[:0]
	best := s.best[:0] // a min-heap of the n best counts taken
	take := func(ad uint32) {
		if cand[ad] {
			return
		}
		cand[ad] = true
		listed = append(listed, ad)
		c := e.sum(ad) + s.acc[ad]
		for _, m := range light {
			if q.hasCountry {
				c += int64(m.delta.rows.get(rowKey(ad, q.country)))
			} else {
				c += int64(m.delta.ads.get(uint64(ad)))
			}
		}
		if c <= 0 {
			return
		}
		items = append(items, topItem{ad: ad, count: c})
		best = topn.KeepLargest(best, n, c)
	}
	for _, ad := range s.touched {
		take(ad)
	}
	for _, m := range light {
		if q.hasCountry {
			for _, k := range m.delta.heavyRows {
				if keyCountry(k) == q.country {
					take(keyAd(k))
				}
			}
		} else {
			for _, ad := range m.delta.heavyAds {
				take(ad)
			}
		}
	}
	done := false
	for _, it := range e.ranked {
		if len(best) == n && it.count+bound < best[0] {
			done = true
			break
		}
		take(it.ad)
	}
	if !done {
		var outside int64 // the most clicks in e of an ad outside its ranking
		if len(e.ranked) < e.nonzero {
			outside = e.ranked[len(e.ranked)-1].count - 1
		}
		done = len(best) == n && outside+bound < best[0]
	}
	for _, ad := range listed {
		cand[ad] = false
	}
	s.listed, s.best, s.items = listed, best, items
	if !done {
		return nil, false
	}
	return p.ads.answer(p.ads.best(items, n)), true
}

// addRows adds sign times the clicks of every ad in m that match q (a
// query without ip or user_id) to acc, appending the ads not marked yet to
// touched and marking them.
func addRows(m *minute, q *query, sign int64, acc []int64, mark []bool, touched []uint32) []uint32 {
	touch := func(ad uint32, c int64) {
		if !mark[ad] {
			mark[ad] = true
			touched = append(touched, ad)
		}
		acc[ad] += sign * c
	}
	b := &m.base
	if q.hasCountry {
		ads, counts := b.byCountry().ofCountry(q.country)
		for k, ad := range ads {
			touch(ad, int64(counts[k]))
		}
	} else {
		for i, ad := range b.ads {
			touch(ad, int64(b.total(i)))
		}
	}
	if d := m.delta; d != nil {
		if q.hasCountry {
			for s, k := range d.rows.keys {
				// An empty slot's key, 0, has country id 0, which no
				// country has.
				if keyCountry(k) == q.country {
					touch(keyAd(k), int64(d.rows.vals[s]))
				}
			}
		} else {
			for s, k := range d.ads.keys {
				if k != 0 {
					touch(uint32(k), int64(d.ads.vals[s]))
				}
			}
		}
	}
	return touched
}
