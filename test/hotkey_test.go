package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// hotAd is the ad that suddenly gets 40% of all clicks.
const hotAd = "ad-hot"

// TestHotKeySplitExact sends live clicks (click_time = now) to a cluster of
// 5 aggregators; then one ad gets 40% of them. The coordinator must split
// it over several aggregators on its own within 2 minutes, which evens out
// the aggregators' event rates (max/mean from above 2 to below 1.3). When
// the skew stops it must unsplit the ad. Throughout, 5% of the clicks are
// sent again a moment later through the other router, so retries cross
// the split and the unsplit; every (ad, minute) count and top list must
// equal the ground truth.
func TestHotKeySplitExact(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of a few minutes of live traffic")
	}
	const partitions = 64
	// Short lead times keep the test to a few minutes: a change takes
	// effect from the first minute starting lead-time + max-clock-skew
	// after it is written.
	//
	// The rates decide when the unsplit takes effect: the minute after
	// the split's first minute if the coordinator decides it by 49s into
	// that minute (60s less lead time and skew), else a minute later. The
	// skew stops 20s into the split; the hot ad's rate over the sketch's
	// window (the last 50-60s, in 10s slots aligned with minutes) falls
	// below 490/s, about 30s of its 800-840 clicks/s (with retries) over
	// 50-60s, from about 41s into the minute. -hotkey.min-split=40s keeps
	// the unsplit from being decided before the skew has stopped, however
	// fast the window fills with the hot ad's clicks; a split rate of 500
	// still leaves room below the hot ad's rate for a slower sender.
	hot := []string{
		"-router.max-clock-skew=5s",
		"-hotkey.max-staleness=2s", "-hotkey.confirm-interval=500ms",
		"-hotkey.safety=4s", "-hotkey.lead-time=6s",
		"-hotkey.split-rate=500", "-hotkey.unsplit-rate=490",
		"-hotkey.min-split=40s", "-hotkey.check-interval=2s",
	}
	c := newTestCluster(t, clusterSpec{
		partitions: partitions, coordinators: 1, routers: 2, aggregators: 5,
		commonFlags:     hot,
		aggregatorFlags: []string{"-aggregator.snapshot-interval=2s"},
	})
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)
	waitSettled(t, cc)
	checkBalance(t, cc, 1.25)

	lt := newLiveTraffic(t, c.ingestClients(), 2000)
	samples := sampleApplied(t, cc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- lt.run(ctx) }()
	stopTraffic := func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	time.Sleep(5 * time.Second)
	skewStart := time.Now()
	lt.setHotShare(0.4)
	t.Logf("skew starts: %s gets 40%% of %d clicks/s", hotAd, lt.rate)

	split := waitSplit(t, cc, func(s *clickaggv1.Split) bool { return true }, 2*time.Minute)
	decided := time.Since(skewStart)
	splitFrom := split.From.AsTime()
	t.Logf("split %s over partitions %v on %v %v after the skew started, effective from %v", hotAd, split.Partitions, split.Members, decided.Round(time.Second), splitFrom.Format(time.TimeOnly))
	if decided > 2*time.Minute {
		t.Errorf("split %v after the skew started, want within 2m", decided)
	}
	// Run past the split long enough to measure the rates after it.
	afterFrom, afterTo := splitFrom.Add(3*time.Second), splitFrom.Add(18*time.Second)
	time.Sleep(time.Until(afterTo.Add(2 * time.Second)))
	lt.setHotShare(0)
	cooled := time.Now()
	t.Logf("skew stops")

	unsplit := waitSplit(t, cc, func(s *clickaggv1.Split) bool { return s.To != nil }, 4*time.Minute)
	unsplitAt := unsplit.To.AsTime()
	t.Logf("unsplit %v after the skew stopped, effective from %v", time.Since(cooled).Round(time.Second), unsplitAt.Format(time.TimeOnly))
	// Clicks flow for a while after the unsplit takes effect too.
	time.Sleep(time.Until(unsplitAt.Add(10 * time.Second)))
	stopTraffic()
	samples.stop()

	beforeTo := skewStart.Add(22 * time.Second)
	if splitFrom.Add(-time.Second).Before(beforeTo) {
		beforeTo = splitFrom.Add(-time.Second)
	}
	before, err := samples.rates(skewStart.Add(2*time.Second), beforeTo)
	if err != nil {
		t.Fatal(err)
	}
	after, err := samples.rates(afterFrom, afterTo)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("events/s per aggregator before the split: %s", before)
	t.Logf("events/s per aggregator after the split:  %s", after)
	if r := before.skew(); r <= 2 {
		t.Errorf("before the split max/mean = %.2f, want above 2", r)
	}
	if r := after.skew(); r >= 1.3 {
		t.Errorf("after the split max/mean = %.2f, want below 1.3", r)
	}

	waitCaughtUp(t, cc, partitions, 2*time.Minute)
	w := lt.workload()
	t.Logf("sent %d unique clicks (%d of %s) over %d minutes, %d retried through the other router", len(w.unique), lt.hotCount(), hotAd, w.minutes, w.dups)
	tr := &truth{clicks: w.unique}
	qc := c.queryClient()
	checkEveryAdMinute(t, qc, tr)
	checkTopN(t, qc, tr, w)
	// The hot ad over the whole run: minutes before, during and after the
	// split in one count, the sum of its home partition and sub-keys.
	resp, err := qc.GetAggregatedCount(context.Background(), &clickaggv1.GetAggregatedCountRequest{
		AdId: hotAd, From: minuteTS(w.firstMin), To: minuteTS(w.firstMin + int64(w.minutes)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := tr.count(hotAd, w.firstMin, w.firstMin+int64(w.minutes), nil); resp.Count != want {
		t.Errorf("%s over the run: %d, want %d", hotAd, resp.Count, want)
	} else {
		t.Logf("%s over the run: %d, exact", hotAd, resp.Count)
	}
}

// waitSplit waits until GetHotKeys shows a split of hotAd for which ok
// holds, and returns it.
func waitSplit(t *testing.T, cc clickaggv1.CoordinatorServiceClient, ok func(*clickaggv1.Split) bool, timeout time.Duration) *clickaggv1.Split {
	t.Helper()
	var found *clickaggv1.Split
	testserver.Eventually(t, timeout, func() error {
		resp, err := cc.GetHotKeys(context.Background(), &clickaggv1.GetHotKeysRequest{})
		if err != nil {
			return err
		}
		for _, s := range resp.Splits {
			if s.AdId == hotAd && ok(s) {
				found = s
				return nil
			}
		}
		return fmt.Errorf("no such split of %s yet: %v", hotAd, resp.Splits)
	})
	return found
}

// liveTraffic sends rate clicks per second with click_time = now, in
// batches of 100 alternating between routers. 5% of the clicks are sent
// again 1–3 s later through the other router, as a client whose response
// was lost would.
type liveTraffic struct {
	t       *testing.T
	clients []clickaggv1.IngestServiceClient
	rate    int

	mu       sync.Mutex
	hotShare float64
	clicks   []click
	retries  int
	hot      int
}

func newLiveTraffic(t *testing.T, clients []clickaggv1.IngestServiceClient, rate int) *liveTraffic {
	return &liveTraffic{t: t, clients: clients, rate: rate}
}

func (lt *liveTraffic) setHotShare(s float64) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	lt.hotShare = s
}

func (lt *liveTraffic) hotCount() int {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return lt.hot
}

// send delivers batch through router r, or the next ones on errors, until
// a router acknowledges all of it.
func (lt *liveTraffic) send(ctx context.Context, r int, batch []*clickaggv1.ClickEvent) error {
	deadline := time.Now().Add(time.Minute)
	for {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := lt.clients[r%len(lt.clients)].Ingest(cctx, &clickaggv1.IngestRequest{Events: batch})
		cancel()
		if err == nil {
			if resp.Accepted != int64(len(batch)) {
				return fmt.Errorf("accepted %d of %d: %v", resp.Accepted, len(batch), resp.Rejected)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("routers failing for a minute: %w", err)
		}
		r++
		time.Sleep(50 * time.Millisecond)
	}
}

// run sends until ctx ends, then delivers the retries still pending.
func (lt *liveTraffic) run(ctx context.Context) error {
	const batch = 100
	rng := rand.New(rand.NewPCG(7, 7))
	type retry struct {
		due time.Time
		r   int
		ev  *clickaggv1.ClickEvent
	}
	var pending []retry
	flush := func(all bool) error {
		now := time.Now()
		byRouter := map[int][]*clickaggv1.ClickEvent{}
		keep := pending[:0]
		for _, p := range pending {
			if all || !p.due.After(now) {
				byRouter[p.r] = append(byRouter[p.r], p.ev)
			} else {
				keep = append(keep, p)
			}
		}
		pending = keep
		for r, evs := range byRouter {
			if err := lt.send(ctx, r, evs); err != nil {
				return fmt.Errorf("retry: %w", err)
			}
		}
		return nil
	}
	tick := time.NewTicker(time.Second * batch / time.Duration(lt.rate))
	defer tick.Stop()
	seq := 0
	for r := 0; ; r++ {
		select {
		case <-ctx.Done():
			return flush(true)
		case <-tick.C:
		}
		lt.mu.Lock()
		share := lt.hotShare
		lt.mu.Unlock()
		now := time.Now().Truncate(time.Millisecond)
		evs := make([]*clickaggv1.ClickEvent, 0, batch)
		var cs []click
		hot := 0
		for range batch {
			seq++
			ad := "ad-" + strconv.Itoa(rng.IntN(1000))
			if rng.Float64() < share {
				ad = hotAd
				hot++
			}
			u := rng.IntN(5000)
			ev := &clickaggv1.ClickEvent{
				EventId:   "live-" + strconv.Itoa(seq),
				AdId:      ad,
				ClickTime: timestamppb.New(now),
				UserId:    "user-" + strconv.Itoa(u),
				Ip:        fmt.Sprintf("198.51.100.%d", u%250),
				Country:   testCountries[min(rng.IntN(len(testCountries)), rng.IntN(len(testCountries)))],
			}
			evs = append(evs, ev)
			cs = append(cs, click{ev: ev, minute: now.Unix() / 60})
		}
		if err := lt.send(ctx, r, evs); err != nil {
			return err
		}
		lt.mu.Lock()
		lt.clicks = append(lt.clicks, cs...)
		lt.hot += hot
		for _, ev := range evs {
			if rng.Float64() < 0.05 {
				pending = append(pending, retry{due: time.Now().Add(time.Second + time.Duration(rng.Int64N(int64(2*time.Second)))), r: r + 1, ev: ev})
				lt.retries++
			}
		}
		lt.mu.Unlock()
		if err := flush(false); err != nil {
			return err
		}
	}
}

// workload returns what was sent as a workload for the truth checks.
func (lt *liveTraffic) workload() *workload {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	first, last := lt.clicks[0].minute, lt.clicks[len(lt.clicks)-1].minute
	return &workload{unique: slices.Clone(lt.clicks), dups: lt.retries, firstMin: first, minutes: int(last - first + 1)}
}

// appliedSampler records, every second, the events each aggregator has
// applied, so that rates over any window can be computed afterwards.
type appliedSampler struct {
	mu      sync.Mutex
	samples []appliedSample
	cancel  context.CancelFunc
	done    chan struct{}
}

type appliedSample struct {
	at          time.Time
	byMember    map[string]int64
	byPartition map[int32]string
}

func sampleApplied(t *testing.T, cc clickaggv1.CoordinatorServiceClient) *appliedSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &appliedSampler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			st, err := cc.GetClusterStatus(ctx, &clickaggv1.GetClusterStatusRequest{})
			if err == nil && len(st.Unavailable) == 0 {
				sm := appliedSample{at: time.Now(), byMember: map[string]int64{}, byPartition: map[int32]string{}}
				for _, p := range st.Partitions {
					sm.byMember[p.Member] += p.EventsApplied
					sm.byPartition[p.Partition] = p.Member
				}
				s.mu.Lock()
				s.samples = append(s.samples, sm)
				s.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *appliedSampler) stop() {
	s.cancel()
	<-s.done
}

// memberRates are events per second by aggregator over a window.
type memberRates map[string]float64

func (m memberRates) String() string {
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	out := ""
	for _, n := range names {
		out += fmt.Sprintf("%s %.0f, ", n, m[n])
	}
	return fmt.Sprintf("%smax/mean %.2f", out, m.skew())
}

// skew is the largest rate over the mean.
func (m memberRates) skew() float64 {
	var sum, most float64
	for _, r := range m {
		sum += r
		most = max(most, r)
	}
	if sum == 0 {
		return 0
	}
	return most / (sum / float64(len(m)))
}

// rates returns the rates between the first sample at or after from and
// the last at or before to. Partitions did not move in between (the test
// fails otherwise): a moved partition's count restarts on its new owner.
func (s *appliedSampler) rates(from, to time.Time) (memberRates, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var a, b *appliedSample
	for i := range s.samples {
		sm := &s.samples[i]
		if a == nil && !sm.at.Before(from) {
			a = sm
		}
		if !sm.at.After(to) {
			b = sm
		}
	}
	if a == nil || b == nil || !b.at.After(a.at) {
		return nil, fmt.Errorf("no samples spanning [%v, %v]", from.Format(time.TimeOnly), to.Format(time.TimeOnly))
	}
	for p, m := range a.byPartition {
		if b.byPartition[p] != m {
			return nil, fmt.Errorf("partition %d moved from %s to %s while rates were measured", p, m, b.byPartition[p])
		}
	}
	secs := b.at.Sub(a.at).Seconds()
	out := memberRates{}
	for m, n := range b.byMember {
		out[m] = float64(n-a.byMember[m]) / secs
	}
	return out, nil
}
