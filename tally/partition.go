package tally

import (
	"math"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"

	"github.com/clickagg/clickagg/breakage"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/topn"
)

// AdCount is the number of clicks of one ad.
type AdCount = topn.AdCount

// Filter restricts a query to the clicks whose fields equal the set values.
// Empty fields do not filter; set fields combine with AND.
type Filter struct {
	Country, IP, UserID string
}

// Stats counts what Apply did with the events it was given.
type Stats struct {
	// EventsApplied counts the events that were counted, late ones included.
	EventsApplied int64
	// Duplicates counts events whose event_id had already been counted in
	// their minute.
	Duplicates int64
	// Late counts the events counted after their minute had completed; each
	// raised that minute's revision.
	Late int64
	// Expired counts events refused because their minute had left the dedup
	// horizon.
	Expired int64
}

const minuteMs = 60_000

// Partition is the aggregate state of one partition: per-minute counts, the
// dedup sets, the watermark and the log offset they reflect. It is a pure
// function of the log entries applied to it, in order.
//
// One goroutine may call Apply, Snapshot and MarkSaved; any number of
// goroutines may call the query methods at the same time.
type Partition struct {
	id          int
	opts        Options
	latenessMs  int64
	horizonMs   int64
	retentionMs int64

	mu        sync.RWMutex
	offset    string
	watermark int64
	stats     Stats

	ads       strtab // ad ids
	countries strtab

	minutes map[int64]*minute
	// order lists the minutes in memory in ascending order. Its first
	// released minutes have left the dedup horizon, and its first completed
	// minutes are complete: both sets grow with the start of a minute, so
	// they always form prefixes.
	order     []int64
	released  int
	completed int
	last      *minute // the minute of the previous event, to skip a map lookup

	// seq counts changes: every change of a minute, and every minute
	// leaving memory, takes the next number.
	seq uint64
	// dropped holds the minutes that left memory and the seq at which they
	// did, until a snapshot telling the store to drop them is saved.
	dropped map[int64]uint64

	scratch sync.Pool // *topScratch, for Top
	// tops caches per-ad sums over complete minutes for Top, and late
	// journals the events counted in complete minutes since the oldest of
	// them was built: late[i] is the lateBase+i-th such event (see
	// topcache.go).
	tops     topCache
	late     []lateEvent
	lateBase uint64
	// decoded holds ApplyEncoded's decoded events between calls; only the
	// applying goroutine uses it.
	decoded []rawEvent
}

// NewPartition returns the empty state of partition id. opts must be valid
// (see Options.Validate).
func NewPartition(id int, opts Options) *Partition {
	return &Partition{
		id:          id,
		opts:        opts,
		latenessMs:  opts.AllowedLateness.Milliseconds(),
		horizonMs:   opts.DedupHorizon.Milliseconds(),
		retentionMs: opts.Retention.Milliseconds(),
		ads:         newStrtab(),
		countries:   newStrtab(),
		minutes:     make(map[int64]*minute),
		dropped:     make(map[int64]uint64),
	}
}

// MinuteOf returns the Unix minute that contains the Unix millisecond ms,
// rounding down for times before 1970 as well: the minute a click at ms
// counts in. Every package that names minutes uses it, so that a split,
// a query window and a published minute start where the counts do.
func MinuteOf(ms int64) int64 {
	m := ms / minuteMs
	if ms%minuteMs < 0 {
		m--
	}
	return m
}

// minuteEnd returns the first millisecond after minute m, saturating at
// MaxInt64 for the last minutes an int64 of milliseconds can express.
func minuteEnd(m int64) int64 {
	if m >= math.MaxInt64/minuteMs {
		return math.MaxInt64
	}
	return (m + 1) * minuteMs
}

// subSat returns a-b for b >= 0, saturating at MinInt64.
func subSat(a, b int64) int64 {
	if a < math.MinInt64+b {
		return math.MinInt64
	}
	return a - b
}

// Apply applies the log entry with stream ID id. The events are applied
// first, in order, then the tick: the tick is the router's frontier after it
// wrote the batch, so it must not make the batch's own events late.
func (p *Partition) Apply(id string, e *clickaggv1.LogEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.offset = id
	for _, ev := range e.GetEvents() {
		p.applyEvent(ev)
	}
	if tick := e.GetTickMs(); tick != 0 {
		if wm := subSat(tick, p.latenessMs); wm > p.watermark {
			p.watermark = wm
			p.advance()
		}
	}
}

func (p *Partition) applyEvent(ev *clickaggv1.LogEvent) {
	p.applyFields(ev.GetEventId(), ev.GetAdId(), ev.GetClickTimeMs(), ev.GetUserId(), ev.GetIp(), ev.GetCountry())
}

// applyFields applies one event. It keeps none of its strings: the ad and
// country are interned as copies, the others hashed (see ApplyEncoded).
func (p *Partition) applyFields(eventID, adID string, clickMs int64, userID, ip, country string) {
	start := MinuteOf(clickMs)
	end := minuteEnd(start)
	if end <= subSat(p.watermark, p.horizonMs) {
		p.stats.Expired++
		return
	}
	m := p.last
	if m == nil || m.start != start {
		m = p.minutes[start]
		if m == nil {
			m = p.newMinute(start)
		}
		p.last = m
	}
	adHash := xxhash.Sum64String(adID)
	id := clickID(adHash, eventID)
	if m.legacyIDs {
		id = xxhash.Sum64String(eventID)
	}
	if breakage.On(breakage.DedupOff) {
		// Broken on purpose: a click is counted once however often it
		// is delivered (docs/architecture.md, invariant 2). The identity becomes the delivery, the event's
		// place in the log (its number among the events this partition
		// was given), so every re-sent copy is new. Replay gives the same
		// numbers, so the snapshots stay consistent and only the counts
		// are wrong.
		id ^= uint64(p.stats.EventsApplied+p.stats.Duplicates+p.stats.Expired+1) * 0x9e3779b97f4a7c15
	}
	if m.seenOrAdd(id) {
		p.stats.Duplicates++
		return
	}
	k := rowKey(p.ads.internHashed(adID, adHash), p.countries.intern(country))
	p.add(m, k, hashField(userID), hashField(ip))
	p.stats.EventsApplied++
	if end <= p.watermark {
		p.stats.Late++
		m.revision++
		p.journalLate(start, k)
		if m.mergeDue() {
			p.compact(m)
		}
	}
	p.seq++
	m.seq = p.seq
}

// hashField hashes a user_id or ip for the filter columns. Like an interned
// string before, it is made valid UTF-8 first, so a value equals what a
// query for its valid form asks.
func hashField(s string) uint64 {
	return xxhash.Sum64String(validUTF8(s))
}

// validUTF8 replaces invalid UTF-8 with U+FFFD. Entries decoded from the
// log are always valid, since protobuf checks string fields; this keeps a
// hand-built entry from producing a snapshot that Restore cannot decode.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// newMinute adds an empty minute. Minutes are created inside the dedup
// horizon, so start sorts after every released minute.
func (p *Partition) newMinute(start int64) *minute {
	m := newMinute(start)
	p.minutes[start] = m
	i, _ := slices.BinarySearch(p.order, start)
	p.order = slices.Insert(p.order, i, start)
	if minuteEnd(start) <= p.watermark {
		// Complete already, so it sorts among the complete minutes.
		p.completed++
	} else if i > 0 && p.order[i-1] == start-1 {
		// A new filling minute will likely count about as many events as
		// the one before it: size its tables for that, so that they do not
		// grow (and copy) a dozen times while it fills.
		prev := p.minutes[p.order[i-1]]
		m.delta = newDelta(prev.events(), prev.rows(), len(prev.base.ads))
	}
	return m
}

// advance applies a new watermark: minutes that left the dedup horizon
// release their dedup sets (and are written again without them), and
// minutes that left the retention window leave memory.
func (p *Partition) advance() {
	for p.completed < len(p.order) && minuteEnd(p.order[p.completed]) <= p.watermark {
		// A complete minute changes little: merge it into its compact form.
		// The encoding does not change, so neither does seq.
		p.compact(p.minutes[p.order[p.completed]])
		p.completed++
	}
	horizon := subSat(p.watermark, p.horizonMs)
	for p.released < len(p.order) && minuteEnd(p.order[p.released]) <= horizon {
		m := p.minutes[p.order[p.released]]
		p.freeze(m)
		p.seq++
		m.seq = p.seq
		p.released++
	}
	retain := subSat(p.watermark, p.retentionMs)
	n := 0
	for n < len(p.order) && minuteEnd(p.order[n]) <= retain {
		start := p.order[n]
		m := p.minutes[start]
		p.compact(m)
		b := &m.base
		r := 0
		for i, ad := range b.ads {
			for end := r + b.rowsOf(i); r < end; r++ {
				p.decref(rowKey(ad, b.country(r)))
			}
		}
		delete(p.minutes, start)
		if p.last == m {
			p.last = nil
		}
		p.seq++
		p.dropped[start] = p.seq
		n++
	}
	if n > 0 {
		// Cached sums over minutes that left would keep them alive, and
		// could never be used again.
		p.tops.dropUpTo(p.order[n-1])
		p.order = slices.Delete(p.order, 0, n)
		// Retention >= DedupHorizon, so every minute that left was released,
		// and complete.
		p.released -= n
		p.completed -= n
	}
}

// Offset returns the ID of the last log entry applied, "" before any.
func (p *Partition) Offset() string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.offset
}

// Watermark returns the watermark in Unix milliseconds: the largest tick
// applied minus the allowed lateness, and 0 before any tick raised it.
func (p *Partition) Watermark() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.watermark
}

// Stats returns the event counters.
func (p *Partition) Stats() Stats {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.stats
}

// resolve turns f into a query. It returns false when a set field has a
// value that nothing in memory can match.
func (p *Partition) resolve(f Filter) (query, bool) {
	var q query
	var ok bool
	if f.Country != "" {
		if q.country, ok = p.countries.lookup(f.Country); !ok {
			return q, false
		}
		q.hasCountry = true
	}
	// Stored values are valid UTF-8, so an invalid one matches nothing.
	if f.IP != "" {
		if !utf8.ValidString(f.IP) {
			return q, false
		}
		q.ip, q.hasIP = xxhash.Sum64String(f.IP), true
	}
	if f.UserID != "" {
		if !utf8.ValidString(f.UserID) {
			return q, false
		}
		q.user, q.hasUser = xxhash.Sum64String(f.UserID), true
	}
	return q, true
}

// window returns the minutes in memory within [from, to).
func (p *Partition) window(from, to int64) []int64 {
	if from >= to {
		return nil
	}
	i, _ := slices.BinarySearch(p.order, from)
	j, _ := slices.BinarySearch(p.order, to)
	return p.order[i:j]
}

// Count returns the clicks of adID in the minutes [fromMinute, toMinute)
// that match f. It reads only the minutes in memory; older minutes are the
// caller's to read from the snapshot store.
func (p *Partition) Count(adID string, fromMinute, toMinute int64, f Filter) int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	ad, ok := p.ads.lookup(adID)
	if !ok {
		return 0
	}
	q, ok := p.resolve(f)
	if !ok {
		return 0
	}
	var n int64
	for _, start := range p.window(fromMinute, toMinute) {
		n += p.countMinute(p.minutes[start], ad, &q)
	}
	return n
}

type topScratch struct {
	acc     []int64 // clicks per ad id; all zero between uses
	mark    []bool  // per ad id: in touched (cached path); all false between uses
	touched []uint32
	items   []topItem // candidates
	// For topLight: the light minutes, the ads taken (marked in cand, all
	// false between uses) and the best counts.
	light  []*minute
	cand   []bool
	listed []uint32
	best   []int64
}

// fit makes s's arrays by ad id hold size ids.
func (s *topScratch) fit(size int) {
	if len(s.acc) < size {
		s.acc = make([]int64, size+size/4)
		s.mark = make([]bool, size+size/4)
		s.cand = make([]bool, size+size/4)
	}
}

// Top returns the n ads with the most clicks in the minutes
// [fromMinute, toMinute) that match f, ordered by count descending, then
// ad_id ascending. Like Count it reads only the minutes in memory.
// Unfiltered and country queries over many keys start from cached sums of
// complete minutes, with the same answers (topcache.go).
func (p *Partition) Top(fromMinute, toMinute int64, n int, f Filter) []AdCount {
	if n <= 0 {
		return nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	q, ok := p.resolve(f)
	if !ok {
		return nil
	}
	window := p.window(fromMinute, toMinute)
	if len(window) == 0 {
		return nil
	}
	s, _ := p.scratch.Get().(*topScratch)
	if s == nil {
		s = &topScratch{}
	}
	s.fit(p.ads.size())
	var out []AdCount
	cached := false
	if !q.byEvent() {
		out, cached = p.topCached(window, n, f.Country, &q, s)
	}
	if !cached {
		out = p.topDirect(window, n, &q, s)
	}
	p.scratch.Put(s)
	return out
}

// topDirect adds up every minute of window.
func (p *Partition) topDirect(window []int64, n int, q *query, s *topScratch) []AdCount {
	// Tracking which ads were touched costs a hard-to-predict branch per
	// key; when the window holds keys for much of the ad table, finding
	// them afterwards by a scan of acc is cheaper. For a country, the
	// bases' rows of it stand for the keys: the deltas' rows of every
	// country are read, but few match.
	keys := 0
	for _, start := range window {
		if q.hasCountry {
			keys += p.minutes[start].baseKeys(q)
		} else {
			keys += p.minutes[start].keys()
		}
	}
	size := p.ads.size()
	track := q.byEvent() || keys < size/2
	touched := s.touched[:0]
	for _, start := range window {
		touched = accumulate(p.minutes[start], q, s.acc, touched, track)
	}
	if !track {
		for ad, c := range s.acc[:size] {
			if c != 0 {
				touched = append(touched, uint32(ad))
			}
		}
	}
	items := s.items[:0]
	for _, ad := range touched {
		items = append(items, topItem{ad: ad, count: s.acc[ad]})
		s.acc[ad] = 0
	}
	s.touched, s.items = touched, items
	return p.ads.answer(p.ads.best(items, n))
}

// keys is the number of (ad, minute) keys of m, counting a key in both
// base and delta twice: what adding m up costs.
func (m *minute) keys() int {
	n := len(m.base.ads)
	if m.delta != nil {
		n += m.delta.ads.n
	}
	return n
}

// baseKeys is the keys of m's base that q (without ip or user_id) reads:
// all, or for a country the country's rows.
func (m *minute) baseKeys(q *query) int {
	if !q.hasCountry {
		return len(m.base.ads)
	}
	ads, _ := m.base.byCountry().ofCountry(q.country)
	return len(ads)
}

type topItem struct {
	ad    uint32
	count int64
}

// cmpTop orders items best first: more clicks, then the smaller ad_id.
// Strings are compared only between equal counts.
func (t *strtab) cmpTop(a, b topItem) int {
	switch {
	case a.count > b.count:
		return -1
	case a.count < b.count:
		return 1
	case a.ad == b.ad:
		return 0
	}
	return strings.Compare(t.str(a.ad), t.str(b.ad))
}

// best returns the best n of items (of distinct ads) in order, reordering
// items. It finds the n-th largest count T by a quickselect on the counts
// alone, moves the items above T to the front, and compares strings only
// within the group of items with count T, to pick the ones that make up
// n; then it sorts those n. A bounded heap, which this replaces, moved
// hundreds of items down a dozen levels, and, in short windows where
// hundreds of ads tie, compared their strings at every level.
func (t *strtab) best(items []topItem, n int) []topItem {
	if n < len(items) {
		T := nthCount(items, n)
		above, ties := 0, 0
		// Three groups in one pass: count > T, count == T, count < T.
		for i, it := range items {
			switch {
			case it.count > T:
				items[i] = items[above+ties]
				items[above+ties] = items[above]
				items[above] = it
				above++
			case it.count == T:
				items[i] = items[above+ties]
				items[above+ties] = it
				ties++
			}
		}
		if tied := items[above : above+ties]; above+ties > n {
			t.selectTies(tied, n-above)
		}
		items = items[:n]
	}
	slices.SortFunc(items, t.cmpTop)
	return items
}

// nthCount returns the n-th largest count of items (0 < n < len(items)),
// reordering them, in O(len(items)) expected time: a quickselect that
// parts the items three ways around a pivot count, so that ties, common
// among small counts, end the search instead of slowing it.
func nthCount(items []topItem, n int) int64 {
	lo, hi, k := 0, len(items), n-1
	for seed := uint64(len(items)); ; {
		if hi-lo == 1 {
			return items[lo].count
		}
		// A pseudo-random pivot: inputs often come in runs already in
		// order.
		seed = seed*6364136223846793005 + 1442695040888963407
		pivot := items[lo+int((seed>>33)%uint64(hi-lo))].count
		// items[lo:gt] > pivot, [gt:i] == pivot, [lt:hi] < pivot.
		gt, i, lt := lo, lo, hi
		for i < lt {
			switch c := items[i].count; {
			case c > pivot:
				items[gt], items[i] = items[i], items[gt]
				gt++
				i++
			case c < pivot:
				lt--
				items[lt], items[i] = items[i], items[lt]
			default:
				i++
			}
		}
		switch {
		case k < gt:
			hi = gt
		case k >= lt:
			lo = lt
		default:
			return pivot
		}
	}
}

// selectTies reorders items of equal counts so that the first r are the r
// with the smallest ad_ids (0 < r < len(items)).
func (t *strtab) selectTies(items []topItem, r int) {
	lo, hi := 0, len(items)
	for depth := 2 * bits.Len(uint(len(items))); hi-lo > 1; depth-- {
		if depth == 0 {
			// Pivots kept going wrong: sorting the rest bounds the time.
			slices.SortFunc(items[lo:hi], t.cmpTop)
			return
		}
		m := lo + (hi-lo)/2
		items[m], items[hi-1] = items[hi-1], items[m]
		pivot, k := t.str(items[hi-1].ad), lo
		for i := lo; i < hi-1; i++ {
			if t.str(items[i].ad) < pivot {
				items[i], items[k] = items[k], items[i]
				k++
			}
		}
		items[k], items[hi-1] = items[hi-1], items[k]
		// items[lo:k] sort before the pivot at k, the rest after it.
		switch {
		case k == r || k == r-1:
			return
		case k < r:
			lo = k + 1
		default:
			hi = k
		}
	}
}

// answer copies items out of the partition's strings.
func (t *strtab) answer(items []topItem) []AdCount {
	out := make([]AdCount, len(items))
	for i, it := range items {
		out[i] = AdCount{AdID: strings.Clone(t.str(it.ad)), Count: it.count}
	}
	return out
}
