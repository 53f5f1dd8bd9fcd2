package hotkey

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"time"
)

// The sketch's sliding window: the current 10s slot and the five before it.
const (
	sketchSlots = 6
	sketchSlot  = 10 * time.Second
	// SketchWindow is the longest span a Sketch reports on.
	SketchWindow = sketchSlots * sketchSlot
)

// maxSketchCapacity bounds Config.SketchCapacity: a Top reads every counter
// of six slots.
const maxSketchCapacity = 10_000

// Sketch finds the heaviest ads of a stream over the last minute of
// processing time, with bounded memory: Space-Saving (Metwally, Agrawal,
// El Abbadi 2005) with k counters per 10-second slot, six slots rotated by
// the time passed to Add, merged when read.
//
// Guarantees, for the N events of the slots a Top covers: every reported
// Count is an upper bound of the ad's true count, Count − Err a lower
// bound, and Count exceeds the true count by at most N/k. Any ad with more
// than N/k events has a counter in some slot, so Top ranks it (Top ranks at
// most 6k ads).
//
// Add costs a map lookup and an increment in the common case (an ad that
// already has a counter) and allocates nothing. Sketch is safe for
// concurrent use: one goroutine feeds it, others read it.
type Sketch struct {
	k int

	mu      sync.Mutex
	slots   [sketchSlots]ssSlot
	cur     int64 // slot number (Unix time / 10s) being filled
	started int64 // Unix ns of the first Add; 0 before
}

// ssSlot is the Space-Saving summary of one slot.
type ssSlot struct {
	num      int64            // slot number it holds; stale when outside the window
	idx      map[string]int32 // ad → index in counters
	counters []counter        // stable positions, at most k
	heap     []int32          // indexes of counters, a min-heap by count
	total    int64
}

type counter struct {
	ad    string
	count int64
	err   int64 // count overestimates the ad's true count by at most err
	at    int32 // position in heap
}

// NewSketch returns a sketch with k counters per slot (see
// Config.SketchCapacity); k below 1 is taken as 1.
func NewSketch(k int) *Sketch {
	k = max(k, 1)
	s := &Sketch{k: k, cur: -1}
	for i := range s.slots {
		s.slots[i] = ssSlot{
			num:      -1,
			idx:      make(map[string]int32, k),
			counters: make([]counter, 0, k),
			heap:     make([]int32, 0, k),
		}
	}
	return s
}

func slotOf(t time.Time) int64 { return t.UnixNano() / int64(sketchSlot) }

// Add counts one event of adID processed at now.
//
// The aggregator's consumer calls it for every event of every log entry it
// applies, with the time it read the entries at (see AddAds).
func (s *Sketch) Add(now time.Time, adID string) {
	n := slotOf(now)
	s.mu.Lock()
	s.slot(n, now).add(adID, s.k)
	s.mu.Unlock()
}

// AddAds counts one event of each ad in ads, processed at now, under one
// lock. The aggregator's consumer calls it with the ads of each log entry
// right after applying it (tally.ApplyEncoded reports them), with now read
// once per batch of entries. The sketch keeps copies of the ads it counts,
// so ads may alias the entry's bytes.
func (s *Sketch) AddAds(now time.Time, ads []string) {
	if len(ads) == 0 {
		return
	}
	n := slotOf(now)
	s.mu.Lock()
	sl := s.slot(n, now)
	for _, ad := range ads {
		sl.add(ad, s.k)
	}
	s.mu.Unlock()
}

// slot returns the slot being filled at slot number n, rotating when n is
// past it; s.mu is held. A clock that went back adds to the current slot.
func (s *Sketch) slot(n int64, now time.Time) *ssSlot {
	if s.started == 0 {
		s.started = now.UnixNano()
	}
	if n > s.cur {
		s.cur = n
		sl := &s.slots[n%sketchSlots]
		sl.reset(n)
	}
	return &s.slots[s.cur%sketchSlots]
}

func (sl *ssSlot) reset(n int64) {
	sl.num = n
	clear(sl.idx)
	sl.counters = sl.counters[:0]
	sl.heap = sl.heap[:0]
	sl.total = 0
}

func (sl *ssSlot) add(ad string, k int) {
	sl.total++
	if i, ok := sl.idx[ad]; ok {
		c := &sl.counters[i]
		c.count++
		sl.down(int(c.at))
		return
	}
	if len(sl.counters) < k {
		i := int32(len(sl.counters))
		ad = strings.Clone(ad)
		sl.counters = append(sl.counters, counter{ad: ad, count: 1, at: int32(len(sl.heap))})
		sl.heap = append(sl.heap, i)
		sl.idx[ad] = i
		sl.up(len(sl.heap) - 1)
		return
	}
	// Space-Saving: the ad takes over the smallest counter, whose count
	// becomes its error bound.
	i := sl.heap[0]
	c := &sl.counters[i]
	delete(sl.idx, c.ad)
	ad = strings.Clone(ad)
	c.ad, c.err = ad, c.count
	c.count++
	sl.idx[ad] = i
	sl.down(0)
}

func (sl *ssSlot) less(a, b int) bool {
	return sl.counters[sl.heap[a]].count < sl.counters[sl.heap[b]].count
}

func (sl *ssSlot) swap(a, b int) {
	sl.heap[a], sl.heap[b] = sl.heap[b], sl.heap[a]
	sl.counters[sl.heap[a]].at = int32(a)
	sl.counters[sl.heap[b]].at = int32(b)
}

func (sl *ssSlot) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !sl.less(i, parent) {
			return
		}
		sl.swap(i, parent)
		i = parent
	}
}

func (sl *ssSlot) down(i int) {
	n := len(sl.heap)
	for {
		small := i
		for _, c := range [2]int{2*i + 1, 2*i + 2} {
			if c < n && sl.less(c, small) {
				small = c
			}
		}
		if small == i {
			return
		}
		sl.swap(i, small)
		i = small
	}
}

// floor is the largest count an ad without a counter can have in the slot.
func (sl *ssSlot) floor(k int) int64 {
	if len(sl.counters) < k || len(sl.heap) == 0 {
		return 0
	}
	return sl.counters[sl.heap[0]].count
}

// Hitter is one heavy ad over a Heavy's window.
type Hitter struct {
	AdID string
	// Count bounds the ad's events from above; Count − Err from below.
	Count, Err int64
	// Rate is Count per second of the window.
	Rate float64
}

// Heavy is what Top reports.
type Heavy struct {
	// Window is the processing time the counts cover: up to SketchWindow,
	// less right after the sketch started.
	Window time.Duration
	// Total is the number of events in the window.
	Total int64
	// Hitters are the heaviest ads by Count, then AdID.
	Hitters []Hitter
}

// Rate is Total per second of the window.
func (h Heavy) Rate() float64 {
	if h.Window <= 0 {
		return 0
	}
	return float64(h.Total) / h.Window.Seconds()
}

// Top returns the n heaviest ads of the last minute before now.
func (s *Sketch) Top(now time.Time, n int) Heavy {
	cur := slotOf(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started == 0 || n < 1 {
		return Heavy{}
	}
	var in []*ssSlot
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.num > cur-sketchSlots && sl.num <= cur {
			in = append(in, sl)
		}
	}
	start := max((cur-sketchSlots+1)*int64(sketchSlot), s.started)
	h := Heavy{Window: time.Duration(now.UnixNano() - start)}
	if h.Window <= 0 {
		h.Window = time.Nanosecond
	}
	type bounds struct{ upper, lower int64 }
	all := map[string]*bounds{}
	for _, sl := range in {
		h.Total += sl.total
		for _, c := range sl.counters {
			if all[c.ad] == nil {
				all[c.ad] = &bounds{}
			}
		}
	}
	for ad, b := range all {
		for _, sl := range in {
			if i, ok := sl.idx[ad]; ok {
				c := sl.counters[i]
				b.upper += c.count
				b.lower += c.count - c.err
			} else {
				b.upper += sl.floor(s.k)
			}
		}
	}
	h.Hitters = make([]Hitter, 0, len(all))
	for ad, b := range all {
		h.Hitters = append(h.Hitters, Hitter{AdID: ad, Count: b.upper, Err: b.upper - b.lower, Rate: float64(b.upper) / h.Window.Seconds()})
	}
	slices.SortFunc(h.Hitters, func(a, b Hitter) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.AdID, b.AdID))
	})
	h.Hitters = slices.Clip(h.Hitters[:min(n, len(h.Hitters))])
	return h
}
