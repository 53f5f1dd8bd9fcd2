package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"unicode"
	"unicode/utf8"

	"github.com/clickagg/clickagg/hotkey"
)

// ErrNoHotKeys: the coordinator was started without hot-key splitting
// (WithHotKeys).
var ErrNoHotKeys = errors.New("coordinator: hot-key splitting is not configured")

// SplitKey spreads adID's clicks over ways partitions (0 means 2) owned by
// distinct aggregators, the least loaded ones (hotkey.Planner.Place), from
// the first minute every live router can still learn of the change in time
// (hotkey.Publisher). It returns the interval created once every live
// router acknowledged it; with dryRun, the interval it would create now,
// changing nothing.
//
// The change runs for as long as the routers take to acknowledge (at most
// about -hotkey.lead-time); if the caller gives up or the term ends first,
// the change is withdrawn, as when a router does not acknowledge in time
// (hotkey.ErrWithdrawn). The hot-key Controller may later unsplit an ad
// split by hand once it has cooled for -hotkey.min-split, and split again
// an ad unsplit by hand that is still hot.
func (c *Coordinator) SplitKey(ctx context.Context, adID string, ways int, dryRun bool) (hotkey.Interval, error) {
	h, err := c.hotKeyTerm()
	if err != nil {
		return hotkey.Interval{}, err
	}
	if err := c.validAdID(adID); err != nil {
		return hotkey.Interval{}, err
	}
	if ways == 0 {
		ways = 2
	}
	if ways < 2 || ways > c.hk.cfg.MaxWays {
		return hotkey.Interval{}, fmt.Errorf("%w: ways %d: must be in [2, %d] (-hotkey.max-ways)", ErrInvalid, ways, c.hk.cfg.MaxWays)
	}
	t, _, err := c.hk.store.Load(ctx)
	if err != nil {
		return hotkey.Interval{}, err
	}
	if iv, ok := t.Open(adID); ok {
		return hotkey.Interval{}, fmt.Errorf("%w: ad %q is already split over partitions %v since minute %d; unsplit it first", hotkey.ErrAlreadySplit, adID, iv.Partitions, iv.FromMinute)
	}
	obs, err := c.Observe(ctx)
	if err != nil {
		return hotkey.Interval{}, err
	}
	if n := len(shareTakers(obs)); ways > n {
		hint := fmt.Sprintf("ask for at most %d", n)
		if n < 2 {
			hint = "a split needs 2; add aggregators or cancel drains"
		}
		return hotkey.Interval{}, fmt.Errorf("%w: cannot split ad %q %d ways: only %d aggregators can take a share (live, not draining, and reporting on a partition they own); %s", ErrInvalid, adID, ways, n, hint)
	}
	change, err := c.hk.planner.Place(adID, ways, obs)
	if err != nil {
		return hotkey.Interval{}, err
	}
	if dryRun {
		return h.pub.Plan(ctx, change)
	}
	return c.applyChange(ctx, h, change)
}

// UnsplitKey ends adID's open split from the first minute every live
// router can still learn of it in time, and returns the interval as it now
// ends (a split that had not started yet is removed: its end is its
// start); with dryRun, as it would end, changing nothing. Like SplitKey, it
// is withdrawn if the routers do not acknowledge it in time or the caller
// gives up.
func (c *Coordinator) UnsplitKey(ctx context.Context, adID string, dryRun bool) (hotkey.Interval, error) {
	h, err := c.hotKeyTerm()
	if err != nil {
		return hotkey.Interval{}, err
	}
	if err := c.validAdID(adID); err != nil {
		return hotkey.Interval{}, err
	}
	t, _, err := c.hk.store.Load(ctx)
	if err != nil {
		return hotkey.Interval{}, err
	}
	if _, ok := t.Open(adID); !ok {
		msg := fmt.Sprintf("ad %q is not split", adID)
		if ivs := t.Intervals(adID); len(ivs) > 0 {
			last := ivs[len(ivs)-1]
			msg += fmt.Sprintf(" (its last split, over partitions %v, ended at minute %d)", last.Partitions, last.ToMinute)
		}
		return hotkey.Interval{}, fmt.Errorf("%w: %s; nothing to unsplit", hotkey.ErrNotSplit, msg)
	}
	change := hotkey.Change{AdID: adID, Unsplit: true}
	if dryRun {
		return h.pub.Plan(ctx, change)
	}
	return c.applyChange(ctx, h, change)
}

// hotKeyTerm returns the running term for a split table change.
func (c *Coordinator) hotKeyTerm() (*termHandle, error) {
	if c.hk == nil {
		return nil, ErrNoHotKeys
	}
	h := c.term.Load()
	if h == nil {
		return nil, ErrNotLeading
	}
	return h, nil
}

// applyChange carries out change through the term's Publisher, for as long
// as both the caller and the term last. A refused write (another
// coordinator leads) ends the term.
func (c *Coordinator) applyChange(ctx context.Context, h *termHandle, change hotkey.Change) (hotkey.Interval, error) {
	if !h.gate.TryRLock() {
		return hotkey.Interval{}, ErrNotLeading // the term is ending
	}
	defer h.gate.RUnlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(h.ctx, cancel)()
	iv, err := h.pub.Apply(ctx, h.fence, change)
	c.countChange(err)
	if errors.Is(err, hotkey.ErrFenced) {
		h.depose(c.deposed(err))
		return hotkey.Interval{}, err
	}
	if err != nil {
		return hotkey.Interval{}, err
	}
	c.log.Info("admin request done", "op", change.String(), "from_minute", iv.FromMinute, "to_minute", iv.ToMinute)
	return iv, nil
}

// shareTakers returns, sorted, the aggregators of obs that can take a share of
// a split: those the planner places on (eligible members that own a
// partition that reported).
func shareTakers(obs hotkey.Observation) []string {
	var out []string
	for _, pl := range obs.Partitions {
		if slices.Contains(obs.Members, pl.Member) && !slices.Contains(out, pl.Member) {
			out = append(out, pl.Member)
		}
	}
	slices.Sort(out)
	return out
}

// defaultMaxIDLength is the routers' default -router.max-id-length.
const defaultMaxIDLength = 128

// WithMaxIDLength sets the longest ad_id SplitKey and UnsplitKey accept:
// the routers' -router.max-id-length, since an ad the routers refuse
// cannot be hot. Without it, or with 0, the routers' default.
func WithMaxIDLength(n int) Option {
	return func(c *Coordinator) { c.maxIDLen = n }
}

// validAdID applies the routers' rules for an ad_id (package router): an ad
// the routers would refuse cannot be hot.
func (c *Coordinator) validAdID(ad string) error {
	maxLen := cmp.Or(c.maxIDLen, defaultMaxIDLength)
	switch {
	case ad == "":
		return fmt.Errorf("%w: ad_id is empty", ErrInvalid)
	case len(ad) > maxLen:
		return fmt.Errorf("%w: ad_id is %d bytes long, at most %d allowed (-router.max-id-length)", ErrInvalid, len(ad), maxLen)
	case !utf8.ValidString(ad):
		return fmt.Errorf("%w: ad_id is not valid UTF-8", ErrInvalid)
	}
	for i, r := range ad {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: ad_id contains control character %U at byte %d", ErrInvalid, r, i)
		}
	}
	return nil
}

// HotKey is one of the heaviest ads of the last minute over the cluster.
type HotKey struct {
	AdID string
	// Partition is the ad's own partition (where it goes unsplit).
	Partition int
	// Rate is the ad's events per second summed over every partition that
	// reported it.
	Rate float64
	// Share is Rate over the events per second of every reported partition.
	Share float64
}

// HotKeys is what GetHotKeys answers.
type HotKeys struct {
	// Keys are the heaviest ads, heaviest first.
	Keys []HotKey
	// Splits is the split table: every interval, by ad then start.
	Splits []hotkey.Interval
}

// maxHotKeys bounds the ads one GetHotKeys returns.
const maxHotKeys = 1000

// HotKeys returns the n heaviest ads of the last minute, from a fresh
// observation of the aggregators' reports, and the split table. Any
// coordinator answers it, leader or not.
func (c *Coordinator) HotKeys(ctx context.Context, n int) (HotKeys, error) {
	if c.hk == nil {
		return HotKeys{}, ErrNoHotKeys
	}
	if n < 1 || n > maxHotKeys {
		return HotKeys{}, fmt.Errorf("%w: count %d: must be in [1, %d]", ErrInvalid, n, maxHotKeys)
	}
	t, _, err := c.hk.store.Load(ctx)
	if err != nil {
		return HotKeys{}, err
	}
	obs, err := c.Observe(ctx)
	if err != nil {
		return HotKeys{}, err
	}
	rates := map[string]float64{}
	var total float64
	for _, pl := range obs.Partitions {
		total += pl.Rate
		for _, h := range pl.Heavy {
			rates[h.AdID] += h.Rate
		}
	}
	out := HotKeys{Splits: t.Splits()}
	for ad, r := range rates {
		k := HotKey{AdID: ad, Partition: c.hk.parts.Partition(ad), Rate: r}
		if total > 0 {
			// Sketch counts are upper bounds and the partition rates
			// averages over a slightly different span: cap at the whole.
			k.Share = min(r/total, 1)
		}
		out.Keys = append(out.Keys, k)
	}
	slices.SortFunc(out.Keys, func(a, b HotKey) int {
		return cmp.Or(cmp.Compare(b.Rate, a.Rate), cmp.Compare(a.AdID, b.AdID))
	})
	out.Keys = out.Keys[:min(n, len(out.Keys))]
	return out, nil
}
