package queryd

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

const (
	// maxNewPerPoll bounds the minutes one poll hands out for the first
	// time, so that catching up after an outage is spread over several polls
	// and does not overflow a watcher's buffer in one burst.
	maxNewPerPoll = 16
	// subscriberBuffer is how many answers a watcher may have pending before
	// it is dropped. A poll hands out at most maxNewPerPoll new minutes plus
	// the corrections of the re-checked minutes, so a watcher that reads at
	// all keeps up.
	subscriberBuffer = 4 * maxNewPerPoll
	// computeLimit bounds the concurrent top queries of one poll; each is a
	// fan-out of its own.
	computeLimit = 4
)

// TopKey is the Redis key of minute's published top list.
func TopKey(prefix string, minute int64) string {
	return prefix + ":top:" + strconv.FormatInt(minute, 10)
}

// TopChannel is the Redis channel on which each published minute is sent.
func TopChannel(prefix string) string { return prefix + ":top" }

// topQuery is what a consumer of completed minutes asks for each minute.
type topQuery struct {
	n int
	f Filter
}

// progress tracks which completed minutes a consumer has been handed.
//
// A consumer starts at some minute; next is the first minute it has not
// been handed yet. Every poll covers the minutes [lo, hi]: up to
// maxNewPerPoll new ones from next on, and before them the last
// RepublishMinutes handed-out ones, which are handed out again when their
// top changed (late events), but never minutes before start.
type progress struct {
	started     bool
	start, next int64
}

func (pr *progress) window(upto int64, republish int) (lo, hi int64) {
	return max(pr.start, pr.next-int64(republish)), min(upto, pr.next+maxNewPerPoll-1)
}

// subscriber is one WatchPopularAds stream.
type subscriber struct {
	q       topQuery
	ch      chan TopResult
	dropped chan struct{} // closed when the publisher gives up on it

	// Owned by the publisher goroutine.
	progress
	sent map[int64][]AdCount // the last answer handed out per recent minute
}

type minuteKey struct {
	q      topQuery
	minute int64
}

// publisher is the state of the publish loop, owned by its goroutine.
type publisher struct {
	progress
	lastErr string
	// rechecked is when the recent minutes were last checked again.
	rechecked time.Time
}

func (q *Queryd) publishLoop(ctx context.Context) {
	// Polling before the directory is known would only log unavailability.
	select {
	case <-ctx.Done():
		return
	case <-q.ready:
	}
	var pub publisher
	t := time.NewTicker(q.cfg.PollInterval)
	defer t.Stop()
	for {
		err := q.poll(ctx, &pub)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && err.Error() != pub.lastErr:
			q.lg.Warn("publish top lists", "err", err)
			pub.lastErr = err.Error()
		case err == nil && pub.lastErr != "":
			q.lg.Info("publishing top lists again")
			pub.lastErr = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll publishes the newly completed minutes and republishes changed recent
// ones, to Redis and to the watchers. The cluster's smallest watermark says
// which minutes are complete; when any partition cannot answer, nothing is
// published, since a top list without it could be wrong.
func (q *Queryd) poll(ctx context.Context, pub *publisher) error {
	cur := q.now().Unix() / 60
	_, wm, err := q.top(ctx, cur, cur+1, 1, Filter{})
	if err != nil {
		return fmt.Errorf("probe watermark: %w", err)
	}
	if wm < minuteMs {
		return nil // no partition has seen a tick yet
	}
	upto := wm/minuteMs - 1 // the newest minute whose end the watermark passed
	r := q.cfg.RepublishMinutes
	if !pub.started {
		// Start with the recent minutes (at least the newest) only: older
		// ones were published by a previous run, or are history nobody is
		// waiting for.
		first := upto - int64(max(r, 1)) + 1
		pub.started, pub.start, pub.next = true, first, first
	}
	subs := q.subscribers()
	newMinutes := pub.next <= upto
	for _, s := range subs {
		if !s.started {
			s.started, s.start, s.next = true, upto, upto
		}
		newMinutes = newMinutes || s.next <= upto
	}
	// The handed-out minutes are checked again every RecheckInterval, and
	// on every poll that hands out new minutes: such a poll moves the
	// oldest of them out of the window, so they get a last check first,
	// however fast minutes complete (a catch-up). Other polls only look
	// for new minutes.
	recheck := 0
	now := time.Now()
	if newMinutes || now.Sub(pub.rechecked) >= q.cfg.RecheckInterval {
		recheck = r
	}

	need := map[minuteKey]struct{}{}
	pubQ := topQuery{n: q.cfg.PublishCount}
	lo, hi := pub.window(upto, recheck)
	for m := lo; m <= hi; m++ {
		need[minuteKey{pubQ, m}] = struct{}{}
	}
	for _, s := range subs {
		lo, hi := s.window(upto, recheck)
		for m := lo; m <= hi; m++ {
			need[minuteKey{s.q, m}] = struct{}{}
		}
	}
	tops, err := q.computeMinutes(ctx, need)
	if err != nil {
		return err
	}
	for _, s := range subs {
		q.deliver(s, upto, recheck, tops)
	}
	if err := q.publishRedis(ctx, pub, upto, recheck, tops); err != nil {
		return err
	}
	if recheck > 0 {
		pub.rechecked = now
	}
	return nil
}

// computeMinutes computes the top list of every (query, minute) in need.
func (q *Queryd) computeMinutes(ctx context.Context, need map[minuteKey]struct{}) (map[minuteKey][]AdCount, error) {
	keys := make([]minuteKey, 0, len(need))
	for k := range need {
		keys = append(keys, k)
	}
	out := make([][]AdCount, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(computeLimit)
	for i, k := range keys {
		g.Go(func() error {
			ads, wm, err := q.top(gctx, k.minute, k.minute+1, k.q.n, k.q.f)
			if err != nil {
				return fmt.Errorf("top of minute %d: %w", k.minute, err)
			}
			if wm < (k.minute+1)*minuteMs {
				// A partition moved and its new owner has not replayed up to
				// the old watermark yet: the minute is not complete there.
				return fmt.Errorf("top of minute %d: watermark %d went back below its end", k.minute, wm)
			}
			out[i] = ads
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	tops := make(map[minuteKey][]AdCount, len(keys))
	for i, k := range keys {
		tops[k] = out[i]
	}
	return tops, nil
}

// publishRedis stores and announces each minute of the publisher's window
// whose stored list is missing or differs. Comparing with what Redis holds,
// rather than with memory, makes a restarted queryd, or a second replica,
// republish nothing that is already there.
func (q *Queryd) publishRedis(ctx context.Context, pub *publisher, upto int64, recheck int, tops map[minuteKey][]AdCount) error {
	lo, hi := pub.window(upto, recheck)
	if lo > hi {
		return nil
	}
	keys := make([]string, 0, hi-lo+1)
	for m := lo; m <= hi; m++ {
		keys = append(keys, TopKey(q.cfg.RedisPrefix, m))
	}
	stored, err := q.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return fmt.Errorf("read published minutes %d..%d: %w", lo, hi, err)
	}
	pubQ := topQuery{n: q.cfg.PublishCount}
	for m := lo; m <= hi; m++ {
		ads := tops[minuteKey{pubQ, m}]
		old, had := decodeStored(stored[m-lo])
		if !had || !slices.Equal(old, ads) {
			if err := q.publishMinute(ctx, m, ads); err != nil {
				return err
			}
			q.m.published.Inc()
			q.lg.Info("published top list", "minute", m, "ads", len(ads), "correction", had)
		}
		pub.next = max(pub.next, m+1)
	}
	return nil
}

func (q *Queryd) publishMinute(ctx context.Context, m int64, ads []AdCount) error {
	payload, err := protojson.Marshal(topResponse(TopResult{Ads: ads, From: m, To: m + 1, Complete: true}))
	if err != nil {
		return fmt.Errorf("encode top of minute %d: %w", m, err)
	}
	// One MULTI, so that a listener never sees an announcement whose key
	// holds something else.
	_, err = q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, TopKey(q.cfg.RedisPrefix, m), payload, q.cfg.PublishTTL)
		p.Publish(ctx, TopChannel(q.cfg.RedisPrefix), payload)
		return nil
	})
	if err != nil {
		return fmt.Errorf("publish top of minute %d: %w", m, err)
	}
	return nil
}

// decodeStored decodes an MGET value; a value that does not decode counts
// as missing, so it is overwritten.
func decodeStored(v any) ([]AdCount, bool) {
	s, ok := v.(string)
	if !ok {
		return nil, false
	}
	var resp clickaggv1.GetPopularAdsResponse
	if err := protojson.Unmarshal([]byte(s), &resp); err != nil {
		return nil, false
	}
	return fromProtoAds(resp.GetAds()), true
}

// deliver hands s its new minutes and, when the poll checked the last
// recheck minutes again, its changed recent ones, in minute order, without
// ever blocking: a watcher whose buffer is full is dropped.
func (q *Queryd) deliver(s *subscriber, upto int64, recheck int, tops map[minuteKey][]AdCount) {
	lo, hi := s.window(upto, recheck)
	for m := lo; m <= hi; m++ {
		ads := tops[minuteKey{s.q, m}]
		if m < s.next {
			if old, ok := s.sent[m]; !ok || slices.Equal(old, ads) {
				continue
			}
		}
		select {
		case s.ch <- TopResult{Ads: ads, From: m, To: m + 1, Complete: true}:
		default:
			q.drop(s)
			return
		}
		s.sent[m] = ads
		s.next = max(s.next, m+1)
	}
	for m := range s.sent {
		if m < s.next-int64(q.cfg.RepublishMinutes) {
			delete(s.sent, m)
		}
	}
}

func (q *Queryd) subscribers() []*subscriber {
	q.subMu.Lock()
	defer q.subMu.Unlock()
	out := make([]*subscriber, 0, len(q.subs))
	for s := range q.subs {
		out = append(out, s)
	}
	return out
}

func (q *Queryd) drop(s *subscriber) {
	q.subMu.Lock()
	defer q.subMu.Unlock()
	if _, ok := q.subs[s]; ok {
		delete(q.subs, s)
		close(s.dropped)
		q.lg.Warn("dropped a watcher that fell behind", "count", s.q.n)
	}
}

// Watch calls send with the top n ads matching f of each minute as it
// completes, starting with the newest completed minute, and again with a
// minute's corrected list when late events change it within the re-checked
// minutes. It returns send's error, ctx's error, ErrTooSlow when the caller
// falls behind, or ErrStopped when Run ends.
func (q *Queryd) Watch(ctx context.Context, n int, f Filter, send func(TopResult) error) error {
	s := &subscriber{
		q:       topQuery{n: n, f: f},
		ch:      make(chan TopResult, subscriberBuffer),
		dropped: make(chan struct{}),
		sent:    map[int64][]AdCount{},
	}
	q.subMu.Lock()
	q.subs[s] = struct{}{}
	q.subMu.Unlock()
	defer func() {
		q.subMu.Lock()
		delete(q.subs, s)
		q.subMu.Unlock()
	}()
	for {
		// Once dropped, what is still buffered is an incomplete sequence;
		// stop rather than send it.
		select {
		case <-s.dropped:
			return ErrTooSlow
		default:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-q.stopped:
			return ErrStopped
		case <-s.dropped:
			return ErrTooSlow
		case r := <-s.ch:
			if err := send(r); err != nil {
				return err
			}
		}
	}
}

func minuteTime(m int64) *timestamppb.Timestamp {
	return timestamppb.New(time.Unix(m*60, 0))
}

func topResponse(r TopResult) *clickaggv1.GetPopularAdsResponse {
	ads := make([]*clickaggv1.AdCount, len(r.Ads))
	for i, a := range r.Ads {
		ads[i] = &clickaggv1.AdCount{AdId: a.AdID, Count: a.Count}
	}
	return &clickaggv1.GetPopularAdsResponse{Ads: ads, From: minuteTime(r.From), To: minuteTime(r.To), Complete: r.Complete}
}

func fromProtoAds(in []*clickaggv1.AdCount) []AdCount {
	out := make([]AdCount, len(in))
	for i, a := range in {
		out[i] = AdCount{AdID: a.GetAdId(), Count: a.GetCount()}
	}
	return out
}
