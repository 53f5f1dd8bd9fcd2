package aggregator

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/clickagg/clickagg/hotkey"
)

// partitionLoad is the load of one held partition.
type partitionLoad struct {
	EventsPerSecond float64
	// LagSeconds is the age of the oldest log entry not applied yet.
	LagSeconds   float64
	ServingSince time.Time // zero while it has not served
	// Heavy are the partition's heaviest ads, heaviest first.
	Heavy []heavyAd
}

// heavyAd is one of a partition's heaviest ads. PerMinute is the ad's
// sketched rate over the last minute times 60: the clicks of the last
// minute when the sketch has a full minute behind it, the same rate scaled
// to a minute right after the partition was taken (PartitionStatus.heavy,
// an AdCount; the coordinator divides by 60 again). It may overestimate,
// never underestimate (hotkey.Sketch's guarantee).
type heavyAd struct {
	AdID      string
	PerMinute int64
}

// heavyAds returns the n heaviest ads of a sketch at now. n is the
// sketch's capacity: every ad with more than 1/capacity of the
// partition's events has a counter, and the coordinator's planner counts
// an ad missing from the list as 0 there.
func heavyAds(s *hotkey.Sketch, now time.Time, n int) []heavyAd {
	top := s.Top(now, n)
	out := make([]heavyAd, 0, len(top.Hitters))
	for _, h := range top.Hitters {
		out = append(out, heavyAd{AdID: h.AdID, PerMinute: int64(math.Round(h.Rate * 60))})
	}
	return out
}

// loads returns the load of the partitions in ps (from Status), by
// partition. The age of the oldest unapplied entry is read from its stream
// ID (Redis's clock at append, in ms): one non-blocking XREAD of one entry
// per lagging partition.
func (a *Aggregator) loads(ctx context.Context, ps []PartitionStatus) (map[int]partitionLoad, error) {
	lagging := make(map[int]string)
	for _, st := range ps {
		if st.Lag > 0 {
			lagging[st.Partition] = st.Offset
		}
	}
	next, err := a.log.Read(ctx, lagging, 1, 0)
	if err != nil {
		return nil, fmt.Errorf("oldest unapplied entries: %w", err)
	}
	now := a.now()
	out := make(map[int]partitionLoad, len(ps))
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, st := range ps {
		p := a.parts[st.Partition]
		if p == nil || p.epoch != st.Epoch {
			continue
		}
		l := partitionLoad{
			EventsPerSecond: p.rate.Rate(now),
			ServingSince:    p.servingSince,
			Heavy:           heavyAds(p.heavy, now, a.sketchCap),
		}
		if es := next[st.Partition]; len(es) > 0 {
			if ms, ok := idMillis(es[0].ID); ok {
				l.LagSeconds = max(0, now.Sub(time.UnixMilli(ms)).Seconds())
			}
		}
		out[st.Partition] = l
	}
	return out, nil
}

// idMillis returns the millisecond part of a stream ID.
func idMillis(id string) (int64, bool) {
	ms, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	return n, err == nil
}
