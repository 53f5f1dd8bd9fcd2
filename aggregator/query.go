package aggregator

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/topn"
)

// Errors of the query methods; the gRPC adapter maps them to status codes.
var (
	// ErrNotServing: this aggregator does not serve the partition now (not
	// its owner, still restoring, failed, or fenced). The caller must not
	// read it as zero clicks.
	ErrNotServing = errors.New("aggregator: partition not served")
	// ErrOutOfRange: the window reaches into minutes that have left memory.
	ErrOutOfRange = errors.New("aggregator: window older than the minutes kept")
	// ErrInvalid: the request cannot be answered as asked.
	ErrInvalid = errors.New("aggregator: invalid argument")
)

// MaxTopN bounds the ads one TopAds call returns.
const MaxTopN = 100_000

const minuteMs = 60_000

// Window is a query window: the Unix minutes [From, To).
type Window struct {
	From, To int64
}

func (w Window) validate() error {
	if w.From >= w.To {
		return fmt.Errorf("%w: window [%d, %d) is empty: from_minute must be before to_minute", ErrInvalid, w.From, w.To)
	}
	return nil
}

// PartitionStatus is what the aggregator reports about one held partition.
type PartitionStatus struct {
	Partition    int
	Epoch        uint64
	State        string // restoring, serving or failed
	Offset       string
	Lag          int64
	Watermark    int64 // Unix ms
	Stats        tally.Stats
	LastSnapshot time.Time // zero before the first snapshot
}

// Answer is a count and what it was computed from.
type Answer struct {
	Count int64
	// Watermark is the partition's, Unix ms.
	Watermark int64
	// Revision is the history revision the count read (0: the counts the
	// aggregators wrote, or no history read).
	Revision int
	// Applied is the version of the applied revisions the history was
	// read through, 0 when none was read: the answers of one query must
	// agree on it.
	Applied int
}

// Count returns adID's clicks in partition p over w that match f.
//
// Minutes older than the retention (-aggregator.retention before the
// watermark) have left memory. With a history (WithHistoryReader), they
// are read from its files, which hold every minute before the partition's
// history mark; without one, or where the history has a hole, a window
// that starts before the oldest minute kept fails (ErrOutOfRange, or the
// history's error naming the missing file) instead of undercounting.
// Minutes up to the end of an applied history revision (clickagg recalc)
// are read from the history even while they are in memory: the revision
// corrected them.
func (a *Aggregator) Count(ctx context.Context, p int, adID string, w Window, f tally.Filter) (Answer, error) {
	if err := w.validate(); err != nil {
		return Answer{}, err
	}
	if p < 0 {
		return Answer{}, fmt.Errorf("%w: partition %d is negative", ErrInvalid, p)
	}
	pt, err := a.serving(p)
	if err != nil {
		return Answer{}, err
	}
	// The watermark read first is a lower bound of the one the count saw,
	// so reporting it never claims a window complete too early.
	ans := Answer{Watermark: pt.tp.Watermark()}
	view := a.view()
	memFrom := a.memFrom(view, pt, w, ans.Watermark)
	if memFrom < w.To {
		mem := Window{From: memFrom, To: w.To}
		ans.Count = pt.tp.Count(adID, mem.From, mem.To, f)
		if err := a.inMemory(pt, mem); err != nil {
			return Answer{}, err
		}
	}
	if w.From < memFrom {
		h := Window{From: w.From, To: memFrom}
		sums, err := a.historySums(ctx, view, p, h, f, adID)
		if err != nil {
			return Answer{}, err
		}
		ans.Count += sums[adID]
		ans.Revision, ans.Applied = view.Applied.Served(p, h.From, h.To), view.Applied.Version()
	}
	return ans, nil
}

// view is the history as a query reads it, taken once per query; the
// zero View without a history.
func (a *Aggregator) view() history.View {
	if a.histReader == nil {
		return history.View{}
	}
	return a.histReader.View()
}

// memFrom returns the first minute of w that a query through view reads
// from pt's memory (w.To if none): the minutes before the oldest one in
// memory at watermark wm, and those up to the end of an applied revision
// covering part of w, come from the history. The boundary is taken once,
// and checked after memory was read (inMemory).
func (a *Aggregator) memFrom(view history.View, pt *partition, w Window, wm int64) int64 {
	if a.histReader == nil {
		return w.From
	}
	from := max(w.From, a.oldest(pt, wm))
	for _, c := range view.Applied.Covered(pt.id, w.From, w.To) {
		from = max(from, c[1])
	}
	return min(from, w.To)
}

// oldest is the oldest minute of pt in memory at watermark wm.
func (a *Aggregator) oldest(pt *partition, wm int64) int64 {
	return tally.MinuteOf(subSat(wm, a.cfg.Retention.Milliseconds()))
}

// historySums returns per ad the clicks of partition p over w matching f
// (only adID's if not empty) from the history through view, which must
// hold w: the minutes of w no applied revision covers must lie before the
// partition's history mark.
func (a *Aggregator) historySums(ctx context.Context, view history.View, p int, w Window, f tally.Filter, adID string) (map[string]int64, error) {
	if err := a.historyHolds(ctx, view, p, w); err != nil {
		return nil, err
	}
	return view.Sums(ctx, p, w.From, w.To, history.Filter{Country: f.Country, IP: f.IP, UserID: f.UserID}, adID)
}

// historyHolds checks that the history, through view, holds partition
// p's minutes w.
func (a *Aggregator) historyHolds(ctx context.Context, view history.View, p int, w Window) error {
	// The last minute of w that only revision 0 holds.
	last := w.To - 1
	covered := view.Applied.Covered(p, w.From, w.To)
	for i := len(covered) - 1; i >= 0 && covered[i][1] > last; i-- {
		last = min(last, covered[i][0]-1)
	}
	if last >= w.From {
		end, ok, err := a.marks.History(ctx, p)
		if err != nil {
			return fmt.Errorf("%w: history mark of partition %d: %w", ErrNotServing, p, err)
		}
		if !ok || end <= last {
			return fmt.Errorf("%w: window reaches minute %d, which has left memory, but the history of partition %d holds minutes before %d only", ErrOutOfRange, last, p, end)
		}
		// The first minute of w that only revision 0 holds.
		first := w.From
		for _, c := range covered {
			if c[0] <= first && first < c[1] {
				first = c[1]
			}
		}
		start, ok, err := a.marks.HistoryStart(ctx, p)
		if err != nil {
			return fmt.Errorf("%w: history start of partition %d: %w", ErrNotServing, p, err)
		}
		if ok && first < start {
			return fmt.Errorf("%w: window starts at minute %d, but the history of partition %d begins at minute %d: older minutes were never kept", ErrOutOfRange, first, p, start)
		}
	}
	return nil
}

// MaxSplitAds bounds the split ads of one TopAdsSplit call.
const MaxSplitAds = 10_000

// TopAds returns the top n ads over w that match f in the partitions ps,
// and the smallest of their watermarks. Every partition must be served
// here; the error names the ones that are not.
func (a *Aggregator) TopAds(ctx context.Context, ps []int, w Window, n int, f tally.Filter) ([]topn.AdCount, int64, error) {
	ans, err := a.TopAdsSplit(ctx, ps, w, n, f, nil)
	return ans.Top, ans.Watermark, err
}

// TopAnswer is a TopAdsSplit answer.
type TopAnswer struct {
	// Top is the exact top n of the ads not split; SplitCounts the split
	// ads' non-zero counts, by ad_id.
	Top, SplitCounts []topn.AdCount
	// Watermark is the smallest of the partitions' watermarks.
	Watermark int64
	// Revision and Applied are as in Answer.
	Revision, Applied int
}

// TopAdsSplit is TopAds for a cluster with split ads: the ads in split
// (spread over several partitions, package hotkey) are left out of top,
// and their counts over ps are returned in splitCounts instead (non-zero
// ones, by ad_id), for the caller to add up across every partition. The
// other ads live in one partition each, so top stays the exact top n of
// the ads not in split.
//
// Like Count, with a history (WithHistoryReader) the minutes of w that
// have left memory are read from the history's files and added to the
// ones in memory (topHistory); without one, a window that starts before the
// oldest minute kept fails with ErrOutOfRange.
func (a *Aggregator) TopAdsSplit(ctx context.Context, ps []int, w Window, n int, f tally.Filter, split []string) (TopAnswer, error) {
	if err := w.validate(); err != nil {
		return TopAnswer{}, err
	}
	if n < 1 || n > MaxTopN {
		return TopAnswer{}, fmt.Errorf("%w: count %d: must be in [1, %d]", ErrInvalid, n, MaxTopN)
	}
	if len(ps) == 0 {
		return TopAnswer{}, fmt.Errorf("%w: no partitions", ErrInvalid)
	}
	if len(split) > MaxSplitAds {
		return TopAnswer{}, fmt.Errorf("%w: %d split ads, at most %d", ErrInvalid, len(split), MaxSplitAds)
	}
	ps = slices.Compact(slices.Sorted(slices.Values(ps)))
	split = slices.Compact(slices.Sorted(slices.Values(split)))
	pts, err := a.servingAll(ps)
	if err != nil {
		return TopAnswer{}, err
	}
	// Partitions are independent, and a query over 64 of them would
	// otherwise use one core of many.
	res := make([]partTop, len(pts))
	view := a.view()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, pt := range pts {
		g.Go(func() error {
			r := &res[i]
			r.wm = pt.tp.Watermark()
			memFrom := a.memFrom(view, pt, w, r.wm)
			if memFrom == w.From {
				a.topMemory(pt, w, n, f, split, r)
				return a.inMemory(pt, w)
			}
			r.revision = view.Applied.Served(pt.id, w.From, memFrom)
			return a.topHistory(gctx, view, pt, w, memFrom, n, f, split, r)
		})
	}
	if err := g.Wait(); err != nil {
		return TopAnswer{}, err
	}
	var ans TopAnswer
	lists := make([][]topn.AdCount, len(pts))
	sums := make([]int64, len(split))
	for i, r := range res {
		if i == 0 || r.wm < ans.Watermark {
			ans.Watermark = r.wm
		}
		if r.history {
			ans.Revision, ans.Applied = max(ans.Revision, r.revision), view.Applied.Version()
		}
		lists[i] = r.list
		for j, c := range r.sums {
			sums[j] += c
		}
	}
	for j, ad := range split {
		if sums[j] != 0 {
			ans.SplitCounts = append(ans.SplitCounts, topn.AdCount{AdID: ad, Count: sums[j]})
		}
	}
	// A non-split ad lives in one partition, so the lists are disjoint and
	// the merge of each partition's exact top n is the exact top n.
	ans.Top = topn.Merge(n, lists...)
	return ans, nil
}

// partTop is one partition's part of a TopAdsSplit answer.
type partTop struct {
	wm int64
	// history is set when the history was read, at revision.
	history  bool
	revision int
	list     []topn.AdCount // its exact top n of the ads not in split
	sums     []int64        // the split ads' counts, in split's order
}

// topMemory fills r from memory alone, for a window that lies in it.
func (a *Aggregator) topMemory(pt *partition, w Window, n int, f tally.Filter, split []string, r *partTop) {
	// The top n+len(split) of a partition hold its top n ads outside
	// split, whatever the split ads' counts are.
	l := pt.tp.Top(w.From, w.To, n+len(split), f)
	if len(split) > 0 {
		l = slices.DeleteFunc(l, func(ac topn.AdCount) bool { return isSplit(split, ac.AdID) })
		r.sums = make([]int64, len(split))
		for j, ad := range split {
			r.sums[j] = pt.tp.Count(ad, w.From, w.To, f)
		}
	}
	r.list = l
}

// topHistory fills r for a window whose minutes before memFrom have left
// memory: those come from the history, the rest, [memFrom, w.To), from
// memory.
//
// The history gives every ad's count H. Memory gives its exact top k,
// k = n plus the split ads, as the memory-only path asks; T is the k-th
// count (0 if fewer ads have clicks in memory: then every one is listed).
// A listed ad's total is H + its count. An ad only the history has
// totals at most H+T: its memory count is read (Count) only where that
// bound could still make the top n, in order of H, so the first one that
// cannot ends the search. An ad in neither ranks after the list's last ad
// (its total is its memory count), and the list holds at least n ads not
// split, each ranking at or before the last: it cannot make the top n.
func (a *Aggregator) topHistory(ctx context.Context, view history.View, pt *partition, w Window, memFrom int64, n int, f tally.Filter, split []string, r *partTop) error {
	hw := Window{From: w.From, To: min(w.To, memFrom)}
	if err := a.historyHolds(ctx, view, pt.id, hw); err != nil {
		return err
	}
	h, err := view.AdSums(ctx, pt.id, hw.From, hw.To, history.Filter{Country: f.Country, IP: f.IP, UserID: f.UserID})
	if err != nil {
		return err
	}
	r.history = true
	mem := Window{From: memFrom, To: w.To}
	inMem := mem.From < mem.To
	if len(split) > 0 {
		r.sums = make([]int64, len(split))
		for j, ad := range split {
			r.sums[j] = h.Get(ad)
			if inMem {
				r.sums[j] += pt.tp.Count(ad, mem.From, mem.To, f)
			}
		}
	}
	// The history's ads best first, taken from a heap one at a time: the
	// search below stops long before the last of tens of thousands.
	byH := newRanked(h, split)
	if !inMem {
		for len(r.list) < n {
			ac, ok := byH.next()
			if !ok {
				break
			}
			r.list = append(r.list, ac)
		}
		return nil
	}
	k := n + len(split)
	l := pt.tp.Top(mem.From, mem.To, k, f)
	var T int64
	if len(l) == k {
		T = l[k-1].Count
	}
	listed := make(map[string]bool, len(l))
	best := bestN{n: n}
	for _, ac := range l {
		listed[ac.AdID] = true
		if !isSplit(split, ac.AdID) {
			best.add(topn.AdCount{AdID: ac.AdID, Count: h.Get(ac.AdID) + ac.Count})
		}
	}
	for {
		hc, ok := byH.next()
		if !ok {
			break
		}
		if listed[hc.AdID] {
			continue
		}
		if best.full() && !topn.Less(topn.AdCount{AdID: hc.AdID, Count: hc.Count + T}, best.worst()) {
			break
		}
		var c int64
		if T > 0 {
			c = pt.tp.Count(hc.AdID, mem.From, mem.To, f)
		}
		best.add(topn.AdCount{AdID: hc.AdID, Count: hc.Count + c})
	}
	r.list = best.sorted()
	return a.inMemory(pt, mem)
}

// ranked hands out ads best first (topn's order), split ads left out.
type ranked []topn.AdCount

func newRanked(h history.AdSums, split []string) *ranked {
	r := make(ranked, 0, len(h))
	for _, ac := range h {
		if !isSplit(split, ac.AdID) {
			r = append(r, ac)
		}
	}
	heap.Init(&r)
	return &r
}

func (r *ranked) next() (topn.AdCount, bool) {
	if len(*r) == 0 {
		return topn.AdCount{}, false
	}
	return heap.Pop(r).(topn.AdCount), true
}

func (r ranked) Len() int           { return len(r) }
func (r ranked) Less(i, j int) bool { return topn.Less(r[i], r[j]) }
func (r ranked) Swap(i, j int)      { r[i], r[j] = r[j], r[i] }
func (r *ranked) Push(x any)        { *r = append(*r, x.(topn.AdCount)) }
func (r *ranked) Pop() any {
	old := *r
	x := old[len(old)-1]
	*r = old[:len(old)-1]
	return x
}

func isSplit(split []string, ad string) bool {
	_, found := slices.BinarySearch(split, ad)
	return found
}

// rank orders ads as topn does: more clicks first, then the smaller ad_id.
func rank(a, b topn.AdCount) int {
	switch {
	case topn.Less(a, b):
		return -1
	case topn.Less(b, a):
		return 1
	}
	return 0
}

// bestN keeps the n best-ranked ads added to it, in a heap with the worst
// of them at the root.
type bestN struct {
	n int
	h []topn.AdCount
}

func (b *bestN) full() bool { return len(b.h) == b.n }

// worst is the n-th best ad; only when full.
func (b *bestN) worst() topn.AdCount { return b.h[0] }

func (b *bestN) add(ac topn.AdCount) {
	if !b.full() {
		b.h = append(b.h, ac)
		for i := len(b.h) - 1; i > 0; {
			up := (i - 1) / 2
			if !topn.Less(b.h[up], b.h[i]) {
				break
			}
			b.h[up], b.h[i] = b.h[i], b.h[up]
			i = up
		}
		return
	}
	if !topn.Less(ac, b.h[0]) {
		return
	}
	b.h[0] = ac
	for i := 0; ; {
		l, worse := 2*i+1, i
		if l < len(b.h) && topn.Less(b.h[worse], b.h[l]) {
			worse = l
		}
		if r := l + 1; r < len(b.h) && topn.Less(b.h[worse], b.h[r]) {
			worse = r
		}
		if worse == i {
			return
		}
		b.h[i], b.h[worse] = b.h[worse], b.h[i]
		i = worse
	}
}

// sorted returns the ads kept, best first.
func (b *bestN) sorted() []topn.AdCount {
	slices.SortFunc(b.h, rank)
	return b.h
}

// MinuteRevisions returns, per minute of w, the sum over the partitions ps
// of the minute's revision (tally.Partition.Revisions: the events it
// counted after it completed), for the minutes with a sum above zero in
// ascending order, and the smallest watermark of ps. Every partition must
// be served here: a restoring partition could report revisions below the
// ones already seen, which a caller would read as "no change". Minutes that
// left memory are absent; they can no longer change.
func (a *Aggregator) MinuteRevisions(ps []int, w Window) ([]tally.MinuteRevision, int64, error) {
	if err := w.validate(); err != nil {
		return nil, 0, err
	}
	if len(ps) == 0 {
		return nil, 0, fmt.Errorf("%w: no partitions", ErrInvalid)
	}
	ps = slices.Compact(slices.Sorted(slices.Values(ps)))
	pts, err := a.servingAll(ps)
	if err != nil {
		return nil, 0, err
	}
	sums := map[int64]int64{}
	var wm int64
	for i, pt := range pts {
		// The watermark read first is a lower bound of the one the
		// revisions saw, as in Count.
		if pw := pt.tp.Watermark(); i == 0 || pw < wm {
			wm = pw
		}
		for _, r := range pt.tp.Revisions(w.From, w.To) {
			sums[r.Minute] += r.Revision
		}
	}
	out := make([]tally.MinuteRevision, 0, len(sums))
	for m, r := range sums {
		out = append(out, tally.MinuteRevision{Minute: m, Revision: r})
	}
	slices.SortFunc(out, func(x, y tally.MinuteRevision) int { return cmp.Compare(x.Minute, y.Minute) })
	return out, wm, nil
}

// inMemory checks, after a query has read pt, that every minute of w was
// still in memory when it did: the watermark only grows, so the oldest
// minute kept now is at least as new as the one the query saw.
func (a *Aggregator) inMemory(pt *partition, w Window) error {
	oldest := tally.MinuteOf(subSat(pt.tp.Watermark(), a.cfg.Retention.Milliseconds()))
	if w.From < oldest {
		return fmt.Errorf("%w: window starts at minute %d, but partition %d keeps minutes from %d on (-aggregator.retention=%v before the watermark); older minutes are deleted",
			ErrOutOfRange, w.From, pt.id, oldest, a.cfg.Retention)
	}
	return nil
}

// subSat returns a-b for b >= 0 without going below the smallest int64.
func subSat(a, b int64) int64 {
	if a < -1<<63+b {
		return -1 << 63
	}
	return a - b
}

// serving returns partition p if it is served here.
func (a *Aggregator) serving(p int) (*partition, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	pt := a.parts[p]
	switch {
	case pt == nil:
		return nil, fmt.Errorf("%w: partition %d is not owned by member %s", ErrNotServing, p, a.member)
	case pt.state != stateServing:
		return nil, fmt.Errorf("%w: partition %d is %s on member %s", ErrNotServing, p, pt.state, a.member)
	}
	return pt, nil
}

// servingAll returns the partitions ps if all are served here.
func (a *Aggregator) servingAll(ps []int) ([]*partition, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var missing []int
	pts := make([]*partition, 0, len(ps))
	for _, p := range ps {
		pt := a.parts[p]
		if pt == nil || pt.state != stateServing {
			missing = append(missing, p)
			continue
		}
		pts = append(pts, pt)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: partitions %v are not served by member %s", ErrNotServing, missing, a.member)
	}
	return pts, nil
}

// Status returns the member ID and the state of every held partition. Lag
// costs one Redis call per partition.
func (a *Aggregator) Status(ctx context.Context) (string, []PartitionStatus, error) {
	type held struct {
		p            *partition
		state        state
		lastSnapshot time.Time
	}
	a.mu.RLock()
	member := a.member
	hs := make([]held, 0, len(a.parts))
	for _, p := range a.parts {
		hs = append(hs, held{p: p, state: p.state, lastSnapshot: p.lastSnapshot})
	}
	a.mu.RUnlock()
	slices.SortFunc(hs, func(x, y held) int { return x.p.id - y.p.id })

	out := make([]PartitionStatus, 0, len(hs))
	for _, h := range hs {
		offset := h.p.tp.Offset()
		lag, _, err := a.log.Lag(ctx, h.p.id, offset)
		if err != nil {
			return "", nil, fmt.Errorf("status of partition %d: %w", h.p.id, err)
		}
		out = append(out, PartitionStatus{
			Partition:    h.p.id,
			Epoch:        h.p.epoch,
			State:        h.state.String(),
			Offset:       offset,
			Lag:          lag,
			Watermark:    h.p.tp.Watermark(),
			Stats:        h.p.tp.Stats(),
			LastSnapshot: h.lastSnapshot,
		})
	}
	return member, out, nil
}
