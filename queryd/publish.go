package queryd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/tally"
)

const (
	// maxNewPerPoll bounds the minutes one poll hands out for the first
	// time, so that catching up after an outage is spread over several polls
	// and does not overflow a watcher's buffer in one burst.
	maxNewPerPoll = 16
	// maxFixesPerPoll bounds the changed minutes one poll computes again,
	// for the same reasons; the others wait for the next polls.
	maxFixesPerPoll = 16
	// subscriberBuffer is how many answers a watcher may have pending before
	// it is dropped. A poll hands out at most maxNewPerPoll new minutes plus
	// maxFixesPerPoll corrections, so a watcher that reads at all keeps up.
	subscriberBuffer = 2 * (maxNewPerPoll + maxFixesPerPoll)
	// computeLimit bounds the concurrent top queries of one poll; each is a
	// fan-out of its own.
	computeLimit = 4
)

// topQuery is what a consumer of completed minutes asks for each minute.
type topQuery struct {
	n int
	f Filter
}

// progress tracks which completed minutes a consumer has been handed.
//
// A consumer starts at some minute; next is the first minute it has not
// been handed yet. Every poll hands out up to maxNewPerPoll new minutes
// from next on, and, before them, the handed-out minutes that the
// publisher found changed (see revisions).
type progress struct {
	started     bool
	start, next int64
}

// newMinutes returns the minutes a poll hands out for the first time.
func (pr *progress) newMinutes(upto int64) (lo, hi int64) {
	return pr.next, min(upto, pr.next+maxNewPerPoll-1)
}

// subscriber is one WatchPopularAds stream.
type subscriber struct {
	q       topQuery
	ch      chan TopResult
	dropped chan struct{} // closed when the publisher gives up on it

	// Owned by the publisher goroutine.
	progress
	// sent is the hash of the last answer handed out per minute that can
	// still change: a hash, since a watcher keeps one per minute of the
	// whole republish horizon.
	sent map[int64]uint64
}

type minuteKey struct {
	q      topQuery
	minute int64
}

// revisions finds the complete minutes whose counts changed after they
// were published, without computing their top lists.
//
// A minute's revision, in each partition, counts the events counted in it
// after it completed there (tally.Partition.Revisions); it is a function
// of the log, so a partition moving to another owner does not change it.
// Every RecheckInterval, and on every poll that hands out a new minute, the
// publisher reads from every owner the sum over all partitions of the
// revisions of the complete minutes within RepublishHorizon, and keeps per minute the sum read last (read) and the
// sum its published list reflects (done): a minute is changed while read
// is above done. A published list reflects at least the sum read before it
// was computed, which is what done is set to, so no late event is missed:
//
//	read revisions ──▶ compute top lists ──▶ publish ──▶ done = read
//
// A sum that went down (an owner that took over a partition and has not
// yet replayed as far as the previous one) is not a change: the minute
// waits until the owner catches up. A poll whose read fails changes
// nothing and is retried: unavailable is never "no change".
//
// A minute before the publisher's start was published by a previous run,
// if at all: its done is unknown (-1), so any revision makes it changed,
// and it is published again only when the store holds a different list.
type revisions struct {
	m map[int64]*minuteRevs
	// from is the oldest minute whose final revisions were not read yet:
	// a minute read last before it left the horizon may have counted a
	// last event since, so reads go on covering it until one happens
	// after it left everywhere. 0 before the first read.
	from int64
	// cursor is the last changed minute computed again: the next poll
	// goes on after it, so that no changed minute waits for ever behind
	// others that keep changing.
	cursor int64
}

type minuteRevs struct{ read, done int64 }

func (r *revisions) changed(m int64) bool {
	mr := r.m[m]
	return mr != nil && mr.read > 0 && mr.read > mr.done
}

// update records a read of the revision sums of the minutes [from, to),
// for a publisher that started at start. final is the oldest minute that
// could still change when the owners answered (their smallest watermark
// less the horizon): the sums read of older ones are final, and they are
// forgotten once their last change is handled.
func (r *revisions) update(got []*clickaggv1.MinuteRevision, from, to, final, start int64) {
	if r.m == nil {
		r.m = map[int64]*minuteRevs{}
	}
	for m, mr := range r.m {
		if m >= from && m < to {
			mr.read = 0 // absent from the answer: no revision
		}
	}
	for _, g := range got {
		m := g.GetMinute()
		if m < from || m >= to {
			continue
		}
		mr := r.m[m]
		if mr == nil {
			mr = &minuteRevs{}
			if m < start {
				mr.done = -1
			}
			r.m[m] = mr
		}
		mr.read = g.GetRevision()
	}
	for m := range r.m {
		if m < final && !r.changed(m) {
			delete(r.m, m)
		}
	}
	r.from = max(from, final)
}

// pick returns up to maxFixesPerPoll changed minutes before next,
// ascending, going round from the cursor.
func (r *revisions) pick(next int64) []int64 {
	var all []int64
	for m := range r.m {
		if m < next && r.changed(m) {
			all = append(all, m)
		}
	}
	slices.Sort(all)
	i, _ := slices.BinarySearch(all, r.cursor+1)
	all = append(all[i:], all[:i]...)
	all = all[:min(len(all), maxFixesPerPoll)]
	if len(all) > 0 {
		r.cursor = all[len(all)-1]
	}
	slices.Sort(all)
	return all
}

// handled records that minute m's list, computed after the last read, was
// published (or found unchanged).
func (r *revisions) handled(m int64) {
	if mr := r.m[m]; mr != nil {
		mr.done = mr.read
	}
}

// oldest returns the oldest minute that may still be changed or change;
// horizon is the oldest one the horizon allows now.
func (r *revisions) oldest(horizon int64) int64 {
	if r.from != 0 {
		horizon = min(horizon, r.from)
	}
	for m := range r.m {
		if m < horizon && r.changed(m) {
			horizon = m
		}
	}
	return horizon
}

// publisher is the state of the publish loop, owned by its goroutine.
type publisher struct {
	progress
	lastErr string
	// rechecked is when the revisions were last read.
	rechecked time.Time
	revs      revisions
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
		// Corrections do not wait for the newest minutes: a poll that
		// fails on them must not hold back the minutes a recount fixed.
		err = errors.Join(err, q.republishCorrected(ctx))
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

// poll publishes the newly completed minutes and republishes the published
// ones whose counts changed, to the store and to the watchers. The cluster's
// smallest watermark says which minutes are complete; when any partition
// cannot answer, nothing is published, since a top list without it could
// be wrong.
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
	if !pub.started {
		// Start with the recent minutes (at least the newest) only: older
		// ones were published by a previous run, or are history nobody is
		// waiting for.
		first := upto - int64(max(q.cfg.RepublishMinutes, 1)) + 1
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
	// The oldest minute that can still change: every partition's
	// watermark is at least wm, so a minute that ended RepublishHorizon
	// before it accepts no more events anywhere.
	horizon := tally.MinuteOf(wm - q.cfg.RepublishHorizon.Milliseconds())
	// The revisions are read every RecheckInterval, and on every poll that
	// hands out new minutes, which is at most once a minute in the steady
	// state: then a correction is at most a minute late, whatever the
	// interval.
	now := time.Now()
	read := newMinutes || now.Sub(pub.rechecked) >= q.cfg.RecheckInterval
	if read && horizon <= upto {
		from := horizon
		if pub.revs.from != 0 {
			from = min(from, pub.revs.from)
		}
		// Read before computing: a list computed after the read reflects
		// at least the sums read.
		got, readWm, err := q.minuteRevisions(ctx, from, upto+1)
		if err != nil {
			return fmt.Errorf("read minute revisions: %w", err)
		}
		final := tally.MinuteOf(readWm - q.cfg.RepublishHorizon.Milliseconds())
		pub.revs.update(got, from, upto+1, final, pub.start)
	}
	fixes := pub.revs.pick(pub.next)

	need := map[minuteKey]struct{}{}
	pubQ := topQuery{n: q.cfg.PublishCount}
	lo, hi := pub.newMinutes(upto)
	for m := lo; m <= hi; m++ {
		need[minuteKey{pubQ, m}] = struct{}{}
	}
	for _, m := range fixes {
		need[minuteKey{pubQ, m}] = struct{}{}
	}
	// What watchers that hold a minute get again when its list changed:
	// the fixes, and the minutes the publisher hands out now. A watcher
	// may hold one of those already: a poll that delivered it and then
	// failed to publish (Redis down, a failover). Publishing it now marks
	// its revisions handled, so it would never be a fix, and the watcher
	// would keep that poll's list while the store gets a newer one.
	recheck := slices.Clone(fixes)
	for m := lo; m <= hi; m++ {
		recheck = append(recheck, m)
	}
	for _, s := range subs {
		lo, hi := s.newMinutes(upto)
		for m := lo; m <= hi; m++ {
			need[minuteKey{s.q, m}] = struct{}{}
		}
		for _, m := range recheck {
			if _, ok := s.sent[m]; ok {
				need[minuteKey{s.q, m}] = struct{}{}
			}
		}
	}
	tops, err := q.computeMinutes(ctx, need)
	if err != nil {
		return err
	}
	keep := pub.revs.oldest(horizon)
	for _, s := range subs {
		q.deliver(s, upto, recheck, keep, tops)
	}
	if err := q.publishStored(ctx, pub, upto, fixes, tops); err != nil {
		return err
	}
	if read {
		pub.rechecked = now
	}
	return nil
}

// computeMinutes computes the top list of every (query, minute) in need;
// a minute that no owner keeps any more (OUT_OF_RANGE) has none in the
// result, and is skipped by the callers.
func (q *Queryd) computeMinutes(ctx context.Context, need map[minuteKey]struct{}) (map[minuteKey][]AdCount, error) {
	keys := make([]minuteKey, 0, len(need))
	for k := range need {
		keys = append(keys, k)
	}
	out := make([][]AdCount, len(keys))
	gone := make([]bool, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(computeLimit)
	for i, k := range keys {
		g.Go(func() error {
			ads, wm, err := q.top(gctx, k.minute, k.minute+1, k.q.n, k.q.f)
			if status.Code(err) == codes.OutOfRange {
				// Nobody keeps the minute (it left memory, and there is
				// no history of it, or not yet): there is nothing to
				// publish, and waiting would block every later minute.
				gone[i] = true
				return nil
			}
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
		if !gone[i] {
			tops[k] = out[i]
		}
	}
	return tops, nil
}

// publishStored stores and announces the changed minutes fixes and the
// publisher's new minutes, each when its stored list is missing or
// differs. Comparing with what the store holds, rather than with memory,
// makes a restarted queryd, or a second replica, republish nothing that is
// already there. A changed minute from before the publisher's start that
// the store does not hold was never published (or expired): it stays so.
func (q *Queryd) publishStored(ctx context.Context, pub *publisher, upto int64, fixes []int64, tops map[minuteKey][]AdCount) error {
	lo, hi := pub.newMinutes(upto)
	minutes := slices.Clone(fixes)
	for m := lo; m <= hi; m++ {
		minutes = append(minutes, m)
	}
	if len(minutes) == 0 {
		return nil
	}
	stored, err := q.pubs.Load(ctx, minutes)
	if err != nil {
		return fmt.Errorf("read published minutes %d..%d: %w", minutes[0], minutes[len(minutes)-1], err)
	}
	pubQ := topQuery{n: q.cfg.PublishCount}
	for i, m := range minutes {
		ads, ok := tops[minuteKey{pubQ, m}]
		if !ok {
			q.lg.Warn("minute kept by no aggregator: its top list is not published", "minute", m)
			pub.revs.handled(m)
			pub.next = max(pub.next, m+1)
			continue
		}
		old, had := decodeStored(stored[i])
		fix := i < len(fixes)
		// A list stored but never announced is no correction.
		correction := had && !q.unannounced[m]
		if (!had && !(fix && m < pub.start)) || (had && (!slices.Equal(old, ads) || q.unannounced[m])) {
			if err := q.publishMinute(ctx, m, ads); err != nil {
				return err
			}
			q.m.published.Inc()
			q.lg.Info("published top list", "minute", m, "ads", len(ads), "correction", correction)
		}
		// The list just computed reflects the revisions read before.
		pub.revs.handled(m)
		pub.next = max(pub.next, m+1)
	}
	return nil
}

// publishMinute stores minute m's list and announces it. A minute whose
// Publish fails may be stored and not announced (on a Redis Cluster, where
// the two are separate commands; see package toplist): it stays in
// unannounced until a Publish succeeds, so that the next poll announces it
// although the store holds its list.
func (q *Queryd) publishMinute(ctx context.Context, m int64, ads []AdCount) error {
	payload, err := protojson.Marshal(topResponse(TopResult{Ads: ads, From: m, To: m + 1, Complete: true}))
	if err != nil {
		return fmt.Errorf("encode top of minute %d: %w", m, err)
	}
	if err := q.pubs.Publish(ctx, m, payload, q.cfg.PublishTTL); err != nil {
		q.unannounced[m] = true
		return err
	}
	delete(q.unannounced, m)
	return nil
}

// decodeStored decodes a stored list; a list that is missing or does not
// decode counts as missing, so it is overwritten.
func decodeStored(v []byte) ([]AdCount, bool) {
	if v == nil {
		return nil, false
	}
	var resp clickaggv1.GetPopularAdsResponse
	if err := protojson.Unmarshal(v, &resp); err != nil {
		return nil, false
	}
	return fromProtoAds(resp.GetAds()), true
}

// deliver hands s the minutes of recheck that it was handed before when
// their list for it changed, then its new minutes, in minute order,
// without ever blocking: a watcher whose buffer is full is dropped. It
// forgets the minutes before keep, which can no longer change.
func (q *Queryd) deliver(s *subscriber, upto int64, recheck []int64, keep int64, tops map[minuteKey][]AdCount) {
	send := func(m int64, ads []AdCount, h uint64) bool {
		select {
		case s.ch <- TopResult{Ads: ads, From: m, To: m + 1, Complete: true}:
		default:
			q.drop(s)
			return false
		}
		s.sent[m] = h
		return true
	}
	for _, m := range recheck {
		old, ok := s.sent[m]
		if !ok {
			continue
		}
		ads, ok := tops[minuteKey{s.q, m}]
		if !ok {
			continue
		}
		if h := hashAds(ads); h != old && !send(m, ads, h) {
			return
		}
	}
	lo, hi := s.newMinutes(upto)
	for m := lo; m <= hi; m++ {
		ads, ok := tops[minuteKey{s.q, m}]
		if ok && !send(m, ads, hashAds(ads)) {
			return
		}
		s.next = m + 1
	}
	for m := range s.sent {
		if m < keep {
			delete(s.sent, m)
		}
	}
}

// hashAds hashes a top list, to tell whether a watcher's list changed.
func hashAds(ads []AdCount) uint64 {
	var d xxhash.Digest
	var b [8]byte
	for _, a := range ads {
		binary.LittleEndian.PutUint64(b[:], uint64(len(a.AdID)))
		_, _ = d.Write(b[:])
		_, _ = d.WriteString(a.AdID)
		binary.LittleEndian.PutUint64(b[:], uint64(a.Count))
		_, _ = d.Write(b[:])
	}
	binary.LittleEndian.PutUint64(b[:], uint64(len(ads)))
	_, _ = d.Write(b[:])
	return d.Sum64()
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
// minute's corrected list when late events change it, for as long as they
// can (-queryd.republish-horizon). It returns send's error, ctx's error,
// ErrTooSlow when the caller falls behind, or ErrStopped when Run ends.
func (q *Queryd) Watch(ctx context.Context, n int, f Filter, send func(TopResult) error) error {
	s := &subscriber{
		q:       topQuery{n: n, f: f},
		ch:      make(chan TopResult, subscriberBuffer),
		dropped: make(chan struct{}),
		sent:    map[int64]uint64{},
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

// minuteRevisions returns the revision sums over every partition of the
// minutes [from, to) (see revisions), asking each owner for its
// partitions, and the smallest watermark of the partitions. Like a top query, it fails unless every partition answers:
// a partition missing from the sums would read as "no change".
func (q *Queryd) minuteRevisions(ctx context.Context, from, to int64) ([]*clickaggv1.MinuteRevision, int64, error) {
	var (
		out []*clickaggv1.MinuteRevision
		wm  int64
	)
	err := q.withRetry(ctx, func(d *directory) error {
		var err error
		out, wm, err = q.minuteRevisionsOnce(ctx, d, from, to)
		return err
	})
	return out, wm, err
}

func (q *Queryd) minuteRevisionsOnce(ctx context.Context, d *directory, from, to int64) ([]*clickaggv1.MinuteRevision, int64, error) {
	groups, err := q.ownerGroups(d)
	if err != nil {
		return nil, 0, err
	}
	answers := make([][]*clickaggv1.MinuteRevision, len(groups))
	wms := make([]int64, len(groups))
	errs := make([]error, len(groups))
	var eg errgroup.Group
	eg.SetLimit(fanOutLimit)
	for i, g := range groups {
		eg.Go(func() error {
			c, err := q.client(g.addr)
			if err != nil {
				errs[i] = fmt.Errorf("owner %s: %w", g.member, err)
				return nil
			}
			cctx, cancel := context.WithTimeout(ctx, q.cfg.CallTimeout)
			defer cancel()
			resp, err := c.MinuteRevisions(cctx, &clickaggv1.MinuteRevisionsRequest{Partitions: g.parts, FromMinute: from, ToMinute: to})
			if err != nil {
				errs[i] = fmt.Errorf("owner %s at %s: %w", g.member, g.addr, err)
				return nil
			}
			answers[i], wms[i] = resp.GetMinutes(), resp.GetMinWatermarkMs()
			return nil
		})
	}
	_ = eg.Wait()
	if err := groupsFailed(groups, errs); err != nil {
		return nil, 0, err
	}
	sums := map[int64]int64{}
	for _, a := range answers {
		for _, r := range a {
			sums[r.GetMinute()] += r.GetRevision()
		}
	}
	out := make([]*clickaggv1.MinuteRevision, 0, len(sums))
	for _, m := range slices.Sorted(maps.Keys(sums)) {
		out = append(out, &clickaggv1.MinuteRevision{Minute: m, Revision: sums[m]})
	}
	return out, slices.Min(wms), nil
}

func minuteTime(m int64) *timestamppb.Timestamp {
	return timestamppb.New(time.Unix(m*60, 0))
}

func topResponse(r TopResult) *clickaggv1.GetPopularAdsResponse {
	ads := make([]*clickaggv1.AdCount, len(r.Ads))
	for i, a := range r.Ads {
		ads[i] = &clickaggv1.AdCount{AdId: a.AdID, Count: a.Count}
	}
	return &clickaggv1.GetPopularAdsResponse{Ads: ads, From: minuteTime(r.From), To: minuteTime(r.To), Complete: r.Complete, HistoryRevision: r.HistoryRevision}
}

func fromProtoAds(in []*clickaggv1.AdCount) []AdCount {
	out := make([]AdCount, len(in))
	for i, a := range in {
		out[i] = AdCount{AdID: a.GetAdId(), Count: a.GetCount()}
	}
	return out
}
