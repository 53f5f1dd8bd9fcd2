package hotkey

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/tally"
)

// Errors of table changes.
var (
	// ErrInvalid wraps a change or a table this package refuses.
	ErrInvalid = errors.New("hotkey: invalid split")
	// ErrAlreadySplit: the ad has a split that is open, or that ends after
	// the minute a new split would start.
	ErrAlreadySplit = errors.New("hotkey: ad is already split")
	// ErrNotSplit: the ad has no open split to end.
	ErrNotSplit = errors.New("hotkey: ad is not split")
)

const minuteMs = 60_000

// Interval spreads one ad over Partitions for the click minutes
// [FromMinute, ToMinute); ToMinute 0 means the interval is open.
type Interval struct {
	AdID       string `json:"ad_id"`
	Partitions []int  `json:"partitions"`
	FromMinute int64  `json:"from_minute"`
	ToMinute   int64  `json:"to_minute"`
	// Members owned the partitions when the split was made; they are only
	// reported to operators, routing never reads them.
	Members []string `json:"members,omitempty"`
}

// Open reports whether the interval has no end yet.
func (iv Interval) Open() bool { return iv.ToMinute == 0 }

// From is the first instant the interval covers.
func (iv Interval) From() time.Time { return time.UnixMilli(iv.FromMinute * minuteMs).UTC() }

// To is the first instant after the interval, zero while it is open.
func (iv Interval) To() time.Time {
	if iv.Open() {
		return time.Time{}
	}
	return time.UnixMilli(iv.ToMinute * minuteMs).UTC()
}

// contains reports whether minute m is in the interval.
func (iv Interval) contains(m int64) bool {
	return m >= iv.FromMinute && (iv.Open() || m < iv.ToMinute)
}

// overlaps reports whether the interval shares a minute with [from, to).
func (iv Interval) overlaps(from, to int64) bool {
	return iv.FromMinute < to && (iv.Open() || iv.ToMinute > from)
}

func (iv Interval) clone() Interval {
	iv.Partitions = slices.Clone(iv.Partitions)
	iv.Members = slices.Clone(iv.Members)
	return iv
}

// Table is one version of the split table. A Table is immutable once built
// by NewTable: routers share it between requests without locks.
type Table struct {
	version uint64
	splits  []Interval            // by ad, then FromMinute
	byAd    map[string][]Interval // sub-slices of splits
}

// NewTable validates splits and returns the table of version. Intervals of
// one ad must not overlap; partitions must be distinct and in
// [0, partitions). splits is copied.
func NewTable(version uint64, splits []Interval, partitions int) (*Table, error) {
	ss := make([]Interval, len(splits))
	for i, iv := range splits {
		ss[i] = iv.clone()
	}
	slices.SortFunc(ss, func(a, b Interval) int {
		return cmp.Or(cmp.Compare(a.AdID, b.AdID), cmp.Compare(a.FromMinute, b.FromMinute))
	})
	t := &Table{version: version, splits: ss, byAd: make(map[string][]Interval)}
	for i := 0; i < len(ss); {
		j := i + 1
		for j < len(ss) && ss[j].AdID == ss[i].AdID {
			j++
		}
		for k := i; k < j; k++ {
			if err := validInterval(ss[k], partitions); err != nil {
				return nil, err
			}
			// Sorted by FromMinute: only an earlier interval that is open or
			// ends after this one starts can overlap it.
			if k > i && (ss[k-1].Open() || ss[k-1].ToMinute > ss[k].FromMinute) {
				return nil, fmt.Errorf("%w: ad %q: intervals from minute %d and %d overlap", ErrInvalid, ss[k].AdID, ss[k-1].FromMinute, ss[k].FromMinute)
			}
		}
		t.byAd[ss[i].AdID] = ss[i:j:j]
		i = j
	}
	return t, nil
}

func validInterval(iv Interval, partitions int) error {
	switch {
	case iv.AdID == "":
		return fmt.Errorf("%w: empty ad_id", ErrInvalid)
	case len(iv.Partitions) == 0:
		return fmt.Errorf("%w: ad %q: no partitions", ErrInvalid, iv.AdID)
	case !iv.Open() && iv.ToMinute <= iv.FromMinute:
		return fmt.Errorf("%w: ad %q: interval [%d, %d) is empty", ErrInvalid, iv.AdID, iv.FromMinute, iv.ToMinute)
	}
	seen := make(map[int]bool, len(iv.Partitions))
	for _, p := range iv.Partitions {
		if p < 0 || p >= partitions {
			return fmt.Errorf("%w: ad %q: partition %d is not in [0, %d)", ErrInvalid, iv.AdID, p, partitions)
		}
		if seen[p] {
			return fmt.Errorf("%w: ad %q: partition %d listed twice", ErrInvalid, iv.AdID, p)
		}
		seen[p] = true
	}
	return nil
}

// Version grows with every write of the table; 0 is the empty table that
// exists before the first write.
func (t *Table) Version() uint64 {
	if t == nil {
		return 0
	}
	return t.version
}

// Splits returns a copy of every interval, by ad then start.
func (t *Table) Splits() []Interval {
	if t == nil {
		return nil
	}
	out := make([]Interval, len(t.splits))
	for i, iv := range t.splits {
		out[i] = iv.clone()
	}
	return out
}

// Intervals returns a copy of adID's intervals, oldest first.
func (t *Table) Intervals(adID string) []Interval {
	if t == nil {
		return nil
	}
	ivs := t.byAd[adID]
	out := make([]Interval, len(ivs))
	for i, iv := range ivs {
		out[i] = iv.clone()
	}
	return out
}

// Route returns the partition of an event: for an ad split over the event's
// click minute, partitions[xxhash(eventID) % len(partitions)] of that
// interval, else the ad's own partition. A retried event (same event_id,
// same click_time) therefore lands where its first copy did, as long as
// every router uses the same intervals for that minute, which the change
// protocol (Publisher) guarantees. A nil table routes every event to its
// ad's partition.
func (t *Table) Route(parts *ring.Partitioner, adID, eventID string, clickMs int64) int {
	if t != nil && len(t.byAd) != 0 {
		if ivs, ok := t.byAd[adID]; ok {
			m := tally.MinuteOf(clickMs)
			for _, iv := range ivs {
				if iv.contains(m) {
					return iv.Partitions[xxhash.Sum64String(eventID)%uint64(len(iv.Partitions))]
				}
			}
		}
	}
	return parts.Partition(adID)
}

// Partitions returns, sorted, every partition that may hold clicks of adID
// in the minutes [from, to): its own partition and those of every interval
// overlapping the window. Each click lives in exactly one of them, so the
// sum of the ad's counts over them is its exact count.
func (t *Table) Partitions(parts *ring.Partitioner, adID string, from, to int64) []int {
	ps := []int{parts.Partition(adID)}
	if t != nil {
		for _, iv := range t.byAd[adID] {
			if iv.overlaps(from, to) {
				ps = append(ps, iv.Partitions...)
			}
		}
	}
	slices.Sort(ps)
	return slices.Compact(ps)
}

// SplitAds returns, sorted, the ads with an interval overlapping the minutes
// [from, to): the ads whose clicks in that window may be spread over
// several partitions.
func (t *Table) SplitAds(from, to int64) []string {
	if t == nil {
		return nil
	}
	var out []string
	for ad, ivs := range t.byAd {
		for _, iv := range ivs {
			if iv.overlaps(from, to) {
				out = append(out, ad)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// Open returns adID's open interval, if any.
func (t *Table) Open(adID string) (Interval, bool) {
	if t != nil {
		if ivs := t.byAd[adID]; len(ivs) > 0 && ivs[len(ivs)-1].Open() {
			return ivs[len(ivs)-1].clone(), true
		}
	}
	return Interval{}, false
}

// Change is one change of the split table: a new split of AdID over
// Partitions, or (Unsplit) the end of AdID's open split.
type Change struct {
	AdID    string
	Unsplit bool
	// Partitions and Members describe a new split; Members is informative.
	Partitions []int
	Members    []string
}

func (c Change) String() string {
	if c.Unsplit {
		return fmt.Sprintf("unsplit %s", c.AdID)
	}
	return fmt.Sprintf("split %s over %v", c.AdID, c.Partitions)
}

// apply returns the table after c takes effect from minute m, with version
// t.Version()+1, and the interval c created or closed. Intervals that ended
// before minute gcBefore are dropped: no router accepts clicks that old and
// no query window reaches them (see Config.Keep).
//
// Whatever c is, the result routes every click of a minute in
// [gcBefore, m) exactly as t does, so that clicks already accepted keep
// their partition; apply checks this before returning.
func (t *Table) apply(c Change, m, gcBefore int64, partitions int) (*Table, Interval, error) {
	if c.AdID == "" {
		return nil, Interval{}, fmt.Errorf("%w: empty ad_id", ErrInvalid)
	}
	var kept []Interval
	for _, iv := range t.Splits() {
		if iv.Open() || iv.ToMinute >= gcBefore {
			kept = append(kept, iv)
		}
	}
	var changed Interval
	mine := slices.IndexFunc(kept, func(iv Interval) bool { return iv.AdID == c.AdID && iv.Open() })
	switch {
	case !c.Unsplit:
		if mine >= 0 {
			return nil, Interval{}, fmt.Errorf("%w: %s is split over %v since minute %d", ErrAlreadySplit, c.AdID, kept[mine].Partitions, kept[mine].FromMinute)
		}
		from := m
		for _, iv := range kept {
			if iv.AdID == c.AdID && iv.ToMinute > from {
				// Only when the lead time was shortened since the last
				// unsplit: start where that split ends.
				from = iv.ToMinute
			}
		}
		changed = Interval{AdID: c.AdID, Partitions: slices.Clone(c.Partitions), FromMinute: from, Members: slices.Clone(c.Members)}
		if err := validInterval(changed, partitions); err != nil {
			return nil, Interval{}, err
		}
		kept = append(kept, changed)
	default:
		if mine < 0 {
			return nil, Interval{}, fmt.Errorf("%w: %s has no open split", ErrNotSplit, c.AdID)
		}
		changed = kept[mine].clone()
		if changed.FromMinute >= m {
			// The split has not started: it goes away as a whole, which
			// changes only minutes from its start on.
			kept = slices.Delete(kept, mine, mine+1)
			changed.ToMinute = changed.FromMinute
		} else {
			kept[mine].ToMinute = m
			changed.ToMinute = m
		}
	}
	next, err := NewTable(t.Version()+1, kept, partitions)
	if err != nil {
		return nil, Interval{}, err
	}
	if err := sameRouting(t, next, gcBefore, m); err != nil {
		return nil, Interval{}, fmt.Errorf("%s from minute %d: %w", c, m, err)
	}
	return next, changed, nil
}

// sameRouting checks that a and b route every click of the minutes
// [from, to) to the same partition: they hold the same intervals clipped to
// that window.
func sameRouting(a, b *Table, from, to int64) error {
	clip := func(t *Table) map[string][]Interval {
		out := map[string][]Interval{}
		for _, iv := range t.Splits() {
			if !iv.overlaps(from, to) {
				continue
			}
			iv.FromMinute = max(iv.FromMinute, from)
			if iv.Open() || iv.ToMinute > to {
				iv.ToMinute = to
			}
			iv.Members = nil
			out[iv.AdID] = append(out[iv.AdID], iv)
		}
		return out
	}
	ca, cb := clip(a), clip(b)
	if len(ca) != len(cb) {
		return fmt.Errorf("%w: change would reroute clicks before its effective minute", ErrInvalid)
	}
	for ad, ivs := range ca {
		if !slices.EqualFunc(ivs, cb[ad], func(x, y Interval) bool {
			return x.FromMinute == y.FromMinute && x.ToMinute == y.ToMinute && slices.Equal(x.Partitions, y.Partitions)
		}) {
			return fmt.Errorf("%w: change would reroute clicks of %s before its effective minute", ErrInvalid, ad)
		}
	}
	return nil
}

// EffectiveMinute returns the first minute M with M*60s − maxSkew − now ≥
// lead: a change effective from M leaves every router at least lead to
// learn of it before it may accept a click of minute M (routers accept
// clicks up to maxSkew ahead of their clock).
func EffectiveMinute(now time.Time, maxSkew, lead time.Duration) int64 {
	ms := now.Add(maxSkew + lead).UnixMilli()
	m := tally.MinuteOf(ms)
	if ms%minuteMs != 0 {
		m++
	}
	return m
}
