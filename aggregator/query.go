package aggregator

import (
	"cmp"
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
// Minutes that an applied history revision (clickagg recalc) covers are
// read from it even while they are in memory: the revision corrected
// them.
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
	mem, hist, view := a.split(pt, w, ans.Watermark)
	for _, m := range mem {
		ans.Count += pt.tp.Count(adID, m.From, m.To, f)
	}
	if len(mem) > 0 {
		if err := a.inMemory(pt, mem[0]); err != nil {
			return Answer{}, err
		}
	}
	for _, h := range hist {
		sums, err := a.historySums(ctx, view, p, h, f, adID)
		if err != nil {
			return Answer{}, err
		}
		ans.Count += sums[adID]
		ans.Revision = max(ans.Revision, view.Applied.Served(p, h.From, h.To))
		ans.Applied = view.Applied.Version()
	}
	return ans, nil
}

// split divides w into the windows read from pt's memory and those read
// from the history, through view: the minutes before the oldest one in
// memory at watermark wm, and those an applied revision covers. The
// boundary is taken once, and checked after memory was read.
func (a *Aggregator) split(pt *partition, w Window, wm int64) (mem, hist []Window, view history.View) {
	if a.histReader == nil {
		return []Window{w}, nil, view
	}
	view = a.histReader.View()
	oldest := max(w.From, a.oldest(pt, wm))
	if w.From < oldest {
		hist = append(hist, Window{From: w.From, To: min(w.To, oldest)})
	}
	at := oldest
	for _, c := range view.Applied.Covered(pt.id, oldest, w.To) {
		if at < c[0] {
			mem = append(mem, Window{From: at, To: c[0]})
		}
		// Apart from a window before the oldest minute: this one needs no
		// history mark.
		hist = append(hist, Window{From: c[0], To: c[1]})
		at = c[1]
	}
	if at < w.To {
		mem = append(mem, Window{From: at, To: w.To})
	}
	return mem, hist, view
}

// oldest is the oldest minute of pt in memory at watermark wm.
func (a *Aggregator) oldest(pt *partition, wm int64) int64 {
	return floorMinute(subSat(wm, a.cfg.Retention.Milliseconds()))
}

// historySums returns per ad the clicks of partition p over w matching f
// (only adID's if not empty) from the history through view, which must
// hold w: the partition's history mark must be past it, or an applied
// revision cover all of it.
func (a *Aggregator) historySums(ctx context.Context, view history.View, p int, w Window, f tally.Filter, adID string) (map[string]int64, error) {
	covered := view.Applied.Covered(p, w.From, w.To)
	if len(covered) != 1 || covered[0] != [2]int64{w.From, w.To} {
		end, ok, err := a.marks.History(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("%w: history mark of partition %d: %w", ErrNotServing, p, err)
		}
		if !ok || end < w.To {
			return nil, fmt.Errorf("%w: window reaches minute %d, which has left memory, but the history of partition %d holds minutes before %d only", ErrOutOfRange, w.To-1, p, end)
		}
	}
	return view.Sums(ctx, p, w.From, w.To, history.Filter{Country: f.Country, IP: f.IP, UserID: f.UserID}, adID)
}

// MaxSplitAds bounds the split ads of one TopAdsSplit call.
const MaxSplitAds = 10_000

// TopAds returns the top n ads over w that match f in the partitions ps,
// and the smallest of their watermarks. Every partition must be served
// here; the error names the ones that are not.
func (a *Aggregator) TopAds(ps []int, w Window, n int, f tally.Filter) ([]topn.AdCount, int64, error) {
	top, _, wm, err := a.TopAdsSplit(ps, w, n, f, nil)
	return top, wm, err
}

// TopAdsSplit is TopAds for a cluster with split ads: the ads in split
// (spread over several partitions, package hotkey) are left out of top,
// and their counts over ps are returned in splitCounts instead (non-zero
// ones, by ad_id), for the caller to add up across every partition. The
// other ads live in one partition each, so top stays the exact top n of
// the ads not in split.
func (a *Aggregator) TopAdsSplit(ps []int, w Window, n int, f tally.Filter, split []string) (top, splitCounts []topn.AdCount, wm int64, err error) {
	if err := w.validate(); err != nil {
		return nil, nil, 0, err
	}
	if n < 1 || n > MaxTopN {
		return nil, nil, 0, fmt.Errorf("%w: count %d: must be in [1, %d]", ErrInvalid, n, MaxTopN)
	}
	if len(ps) == 0 {
		return nil, nil, 0, fmt.Errorf("%w: no partitions", ErrInvalid)
	}
	if len(split) > MaxSplitAds {
		return nil, nil, 0, fmt.Errorf("%w: %d split ads, at most %d", ErrInvalid, len(split), MaxSplitAds)
	}
	ps = slices.Compact(slices.Sorted(slices.Values(ps)))
	split = slices.Compact(slices.Sorted(slices.Values(split)))
	pts, err := a.servingAll(ps)
	if err != nil {
		return nil, nil, 0, err
	}
	// Partitions are independent, and a query over 64 of them would
	// otherwise use one core of many.
	type partTop struct {
		wm   int64
		list []topn.AdCount
		sums []int64 // the split ads' counts, in split's order
	}
	res := make([]partTop, len(pts))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, pt := range pts {
		g.Go(func() error {
			r := &res[i]
			r.wm = pt.tp.Watermark()
			// The top n+len(split) of a partition hold its top n ads
			// outside split, whatever the split ads' counts are.
			l := pt.tp.Top(w.From, w.To, n+len(split), f)
			if len(split) > 0 {
				l = slices.DeleteFunc(l, func(ac topn.AdCount) bool {
					_, found := slices.BinarySearch(split, ac.AdID)
					return found
				})
				r.sums = make([]int64, len(split))
				for j, ad := range split {
					r.sums[j] = pt.tp.Count(ad, w.From, w.To, f)
				}
			}
			r.list = l
			return a.inMemory(pt, w)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, 0, err
	}
	lists := make([][]topn.AdCount, len(pts))
	sums := make([]int64, len(split))
	for i, r := range res {
		if i == 0 || r.wm < wm {
			wm = r.wm
		}
		lists[i] = r.list
		for j, c := range r.sums {
			sums[j] += c
		}
	}
	for j, ad := range split {
		if sums[j] != 0 {
			splitCounts = append(splitCounts, topn.AdCount{AdID: ad, Count: sums[j]})
		}
	}
	// A non-split ad lives in one partition, so the lists are disjoint and
	// the merge of each partition's exact top n is the exact top n.
	return topn.Merge(n, lists...), splitCounts, wm, nil
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
	oldest := floorMinute(subSat(pt.tp.Watermark(), a.cfg.Retention.Milliseconds()))
	if w.From < oldest {
		return fmt.Errorf("%w: window starts at minute %d, but partition %d keeps minutes from %d on (-aggregator.retention=%v before the watermark); older minutes are deleted",
			ErrOutOfRange, w.From, pt.id, oldest, a.cfg.Retention)
	}
	return nil
}

// floorMinute returns the Unix minute that contains the Unix millisecond ms.
func floorMinute(ms int64) int64 {
	m := ms / minuteMs
	if ms%minuteMs < 0 {
		m--
	}
	return m
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
