package queryd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/toplist"
)

// published is one minute's top list as received.
type published struct {
	minute   int64
	ads      []AdCount
	complete bool
}

func (p published) String() string { return fmt.Sprintf("minute %d %v", p.minute, p.ads) }

func fromResponse(t *testing.T, r *clickaggv1.GetPopularAdsResponse) published {
	t.Helper()
	from, to := r.GetFrom().GetSeconds(), r.GetTo().GetSeconds()
	if from%60 != 0 || to != from+60 {
		t.Fatalf("published window [%v, %v) is not one minute", r.GetFrom(), r.GetTo())
	}
	return published{minute: from / 60, ads: protoAds(r.GetAds()), complete: r.GetComplete()}
}

// expect checks that got is minute m with the truth's top n for f.
func expect(t *testing.T, what string, got published, tr *truth, m int64, n int, f Filter) {
	t.Helper()
	want := tr.top(m, m+1, n, f)
	if got.minute != m || !slices.Equal(got.ads, want) || !got.complete {
		t.Fatalf("%s: got %v complete=%v, want minute %d %v complete", what, got, got.complete, m, want)
	}
}

// channelReader reads the published minutes from Redis pub/sub.
type channelReader struct {
	t  *testing.T
	ch <-chan *redis.Message
}

func subscribe(t *testing.T, ctx context.Context, rdb redis.UniversalClient) *channelReader {
	ps := rdb.Subscribe(ctx, toplist.Channel("clickagg"))
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	return &channelReader{t: t, ch: ps.Channel()}
}

func (c *channelReader) next() published {
	c.t.Helper()
	select {
	case m := <-c.ch:
		var r clickaggv1.GetPopularAdsResponse
		if err := protojson.Unmarshal([]byte(m.Payload), &r); err != nil {
			c.t.Fatalf("decode %s: %v", m.Payload, err)
		}
		return fromResponse(c.t, &r)
	case <-time.After(30 * time.Second):
		c.t.Fatal("no message on the top channel")
		return published{}
	}
}

// watcher reads a WatchPopularAds stream in the background.
type watcher struct {
	t   *testing.T
	ch  chan published
	err chan error
}

func watch(t *testing.T, ctx context.Context, qc clickaggv1.QueryServiceClient, req *clickaggv1.WatchPopularAdsRequest) *watcher {
	stream, err := qc.WatchPopularAds(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	w := &watcher{t: t, ch: make(chan published, 1000), err: make(chan error, 1)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				w.err <- err
				return
			}
			w.ch <- fromResponse(t, r)
		}
	}()
	return w
}

func (w *watcher) next() published {
	w.t.Helper()
	select {
	case p := <-w.ch:
		return p
	case err := <-w.err:
		w.t.Fatalf("watch ended: %v", err)
	case <-time.After(30 * time.Second):
		w.t.Fatal("no minute on the watch")
	}
	return published{}
}

// stored reads minute m's key.
func stored(t *testing.T, ctx context.Context, rdb redis.UniversalClient, m int64) (published, bool) {
	t.Helper()
	v, err := rdb.Get(ctx, toplist.Key("clickagg", m)).Result()
	if errors.Is(err, redis.Nil) {
		return published{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var r clickaggv1.GetPopularAdsResponse
	if err := protojson.Unmarshal([]byte(v), &r); err != nil {
		t.Fatalf("decode %s: %v", v, err)
	}
	return fromResponse(t, &r), true
}

// waitPolls waits until the publisher has finished at least one whole poll
// begun after this call: polls run one after another and each starts with
// one probe per aggregator, so two further rounds of probes mean the first
// poll ended.
func waitPolls(t *testing.T, tr *truth) {
	t.Helper()
	start := tr.probes.Load()
	testserver.Eventually(t, 30*time.Second, func() error {
		if n := tr.probes.Load() - start; n < 2*3 {
			return fmt.Errorf("%d probes since", n)
		}
		return nil
	})
}

// startPublishing starts a queryd that publishes top-5 lists and starts
// with the last 3 minutes, over 60 ads of about 150 clicks a minute (top-5 lists
// are cut inside ties), with the minutes up to base+3 complete; it checks
// that the startup publishes those last 3 minutes, oldest first.
func startPublishing(t *testing.T, cfg Config, rdb redis.UniversalClient) (*truth, *env, *channelReader) {
	t.Helper()
	cfg.PublishCount = 5
	cfg.RepublishMinutes = 3
	tr := newTruth(newPartitioner(t), 4, 3000, 60, 20)
	tr.setAllWatermarks((base + 4) * minuteMs)
	e := newEnvOn(t, tr, cfg, rdb)
	pubsub := subscribe(t, e.ctx, e.rdb)
	e.start()
	for m := base + 1; m <= base+3; m++ {
		expect(t, "startup", pubsub.next(), tr, m, 5, Filter{})
	}
	return tr, e, pubsub
}

// TestPublish follows the publisher as the aggregators' watermark advances:
// each completed minute is stored and announced in Redis and pushed to
// watchers, in order and exact; a lagging partition holds publication back;
// a late event republishes its minute; a restarted queryd republishes a
// minute changed while it was down, and nothing that Redis already holds.
// On a Redis Cluster too, where the minutes' keys are in different hash
// slots: the publisher reads them without a cross-slot command, and the
// announcements still come in order.
func TestPublish(t *testing.T) {
	for _, tc := range []struct {
		name string
		rdb  func(testing.TB) redis.UniversalClient
	}{
		{"redis", func(t testing.TB) redis.UniversalClient { return testserver.RedisClient(t) }},
		{"redis cluster", func(t testing.TB) redis.UniversalClient { return testserver.RedisClusterClient(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) { testPublish(t, tc.rdb(t)) })
	}
}

func testPublish(t *testing.T, rdb redis.UniversalClient) {
	cfg := testConfig()
	cfg.PublishTTL = time.Hour
	tr, e, pubsub := startPublishing(t, cfg, rdb)
	ctx := e.ctx

	// The startup published the last RepublishMinutes completed minutes,
	// and nothing older.
	if ttl := e.rdb.TTL(ctx, toplist.Key("clickagg", base+1)).Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("published key has TTL %v, want (0, 1h]", ttl)
	}
	if _, ok := stored(t, ctx, e.rdb, base); ok {
		t.Errorf("minute %d, older than the republish window, was published", base)
	}

	usFilter := Filter{Country: "US"}
	w1 := watch(t, ctx, e.qc, &clickaggv1.WatchPopularAdsRequest{Count: 3, Filter: &clickaggv1.Filter{Country: "us"}})
	w2 := watch(t, ctx, e.qc, &clickaggv1.WatchPopularAdsRequest{})
	// A watch starts with the newest completed minute.
	expect(t, "watch w1 start", w1.next(), tr, base+3, 3, usFilter)
	expect(t, "watch w2 start", w2.next(), tr, base+3, 100, Filter{})

	checkMinute := func(what string, m int64) {
		t.Helper()
		expect(t, what+" channel", pubsub.next(), tr, m, 5, Filter{})
		expect(t, what+" w1", w1.next(), tr, m, 3, usFilter)
		expect(t, what+" w2", w2.next(), tr, m, 100, Filter{})
		got, ok := stored(t, ctx, e.rdb, m)
		if !ok {
			t.Fatalf("%s: minute %d announced but not stored", what, m)
		}
		expect(t, what+" key", got, tr, m, 5, Filter{})
	}
	for m := base + 4; m <= base+6; m++ {
		tr.setAllWatermarks((m + 1) * minuteMs)
		checkMinute("advance", m)
	}

	// Partition 4 lags at base+7: minutes base+7.. must wait for it, even
	// though every other partition has passed base+10.
	tr.setAllWatermarks((base + 11) * minuteMs)
	tr.setWatermark(4, (base+7)*minuteMs)
	waitPolls(t, tr)
	if got, ok := stored(t, ctx, e.rdb, base+7); ok {
		t.Fatalf("minute %d published while partition 4 lags: %v", base+7, got)
	}
	tr.setWatermark(4, (base+11)*minuteMs)
	for m := base + 7; m <= base+10; m++ {
		checkMinute("after lag", m)
	}

	// Late events: a published minute gets a new leader; one from before
	// the publisher's start, which was never published, changes too, but
	// is history.
	late := base + 9
	// At once, as one log entry would: a poll between single clicks would
	// announce a correction of part of them first.
	var lateClicks []click
	for i := range 10 {
		lateClicks = append(lateClicks,
			click{ad: "ad-late", minute: late, country: "US", ip: "10.0.0.1", userID: fmt.Sprintf("late%d", i)},
			click{ad: "ad-old", minute: base, country: "US", ip: "10.0.0.1", userID: "u1"})
	}
	tr.add(lateClicks...)
	checkMinute("correction", late)
	if got, _ := stored(t, ctx, e.rdb, late); got.ads[0] != (AdCount{AdID: "ad-late", Count: 10}) {
		t.Fatalf("corrected minute %d stored as %v", late, got)
	}
	// The next announcement is the next minute: neither the never
	// published minute nor the unchanged ones are announced.
	tr.setAllWatermarks((base + 12) * minuteMs)
	checkMinute("after correction", base+11)
	if got, ok := stored(t, ctx, e.rdb, base); ok {
		t.Fatalf("minute %d, never published, was published after late events: %v", base, got)
	}

	// Shutdown ends the watches with UNAVAILABLE.
	e.stop()
	for _, w := range []*watcher{w1, w2} {
		select {
		case err := <-w.err:
			if status.Code(err) != codes.Unavailable {
				t.Errorf("watch after shutdown: %v, want UNAVAILABLE", err)
			}
		case p := <-w.ch:
			t.Errorf("watch got %v after shutdown", p)
		case <-time.After(30 * time.Second):
			t.Fatal("watch did not end at shutdown")
		}
	}

	// Late events while no queryd runs change a published minute older
	// than the ones a starting queryd publishes: the restarted one finds
	// it by its revisions and republishes it, and, finding every other
	// minute already in Redis, announces only what is new.
	down := base + 5
	var downClicks []click
	for i := range 12 {
		downClicks = append(downClicks, click{ad: "ad-down", minute: down, country: "FR", ip: "10.0.0.2", userID: fmt.Sprintf("down%d", i)})
	}
	tr.add(downClicks...)
	q2 := e.newQueryd()
	runQueryd(t, q2)
	expect(t, "correction after restart", pubsub.next(), tr, down, 5, Filter{})
	if got, _ := stored(t, ctx, e.rdb, down); got.ads[0] != (AdCount{AdID: "ad-down", Count: 12}) {
		t.Fatalf("minute %d corrected while down stored as %v", down, got)
	}
	waitPolls(t, tr)
	tr.setAllWatermarks((base + 13) * minuteMs)
	expect(t, "after restart", pubsub.next(), tr, base+12, 5, Filter{})
}

// TestSlowWatcherDropped lets one watcher stop reading while a hundred
// minutes complete at once: it is dropped with RESOURCE_EXHAUSTED, and a
// watcher that reads gets every minute, in order and exact.
func TestSlowWatcherDropped(t *testing.T) {
	cfg := testConfig()
	cfg.PollInterval = 50 * time.Millisecond
	tr := newTruth(newPartitioner(t), 5, 4000, 50, 110)
	tr.setAllWatermarks((base + 1) * minuteMs) // minute base complete
	e := newEnv(t, tr, cfg)
	e.start()
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()

	var mu sync.Mutex
	var fast []TopResult
	fastDone := make(chan error, 1)
	go func() {
		fastDone <- e.q.Watch(ctx, 7, Filter{Country: "DE"}, func(r TopResult) error {
			mu.Lock()
			defer mu.Unlock()
			fast = append(fast, r)
			return nil
		})
	}()
	release := make(chan struct{})
	slowStarted := make(chan struct{})
	slowDone := make(chan error, 1)
	go func() {
		var once sync.Once
		slowDone <- e.q.Watch(ctx, 7, Filter{Country: "DE"}, func(TopResult) error {
			once.Do(func() { close(slowStarted) })
			<-release
			return nil
		})
	}()
	testserver.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(fast) == 0 {
			return errors.New("fast watcher has no minute yet")
		}
		return nil
	})
	// Both watchers must start at minute base: a watcher that subscribed only
	// after the hundred minutes completed would start at the last one and
	// never fall behind.
	select {
	case <-slowStarted:
	case <-time.After(30 * time.Second):
		t.Fatal("slow watcher got no minute")
	}

	last := base + 100
	tr.setAllWatermarks((last + 1) * minuteMs)
	testserver.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if n := len(e.q.subscribers()); n != 1 {
			return fmt.Errorf("%d watchers", n)
		}
		if len(fast) == 0 || fast[len(fast)-1].From != last {
			return fmt.Errorf("fast watcher at %d minutes", len(fast))
		}
		return nil
	})
	close(release)
	if err := <-slowDone; status.Code(statusOf(err)) != codes.ResourceExhausted {
		t.Errorf("slow watcher ended with %v, want RESOURCE_EXHAUSTED", statusOf(err))
	}

	mu.Lock()
	defer mu.Unlock()
	for i, r := range fast {
		m := base + int64(i)
		want := tr.top(m, m+1, 7, Filter{Country: "DE"})
		if r.From != m || r.To != m+1 || !r.Complete || !slices.Equal(r.Ads, want) {
			t.Fatalf("fast watcher's answer %d: %+v, want minute %d %v", i, r, m, want)
		}
	}
	if len(fast) != 101 {
		t.Fatalf("fast watcher got %d minutes, want 101", len(fast))
	}
	cancel()
	if err := <-fastDone; !errors.Is(err, context.Canceled) {
		t.Errorf("fast watcher ended with %v", err)
	}
}

// TestRecheckOnNewMinute: with the timed re-check an hour away, a late
// event in a published minute is not republished by polls that find no new
// minute, and is by the poll that hands out the next one, before it: so
// corrections are at most a minute late, whatever the interval.
func TestRecheckOnNewMinute(t *testing.T) {
	cfg := testConfig()
	cfg.RecheckInterval = time.Hour
	tr, e, pubsub := startPublishing(t, cfg, testserver.RedisClient(t))

	late := base + 1
	var lateClicks []click
	for i := range 10 {
		lateClicks = append(lateClicks, click{ad: "ad-late", minute: late, country: "US", ip: "10.0.0.1", userID: fmt.Sprintf("late%d", i)})
	}
	tr.add(lateClicks...)
	waitPolls(t, tr)
	if got, _ := stored(t, e.ctx, e.rdb, late); len(got.ads) > 0 && got.ads[0].AdID == "ad-late" {
		t.Fatalf("minute %d republished with no new minute and no re-check due: %v", late, got)
	}
	tr.setAllWatermarks((base + 5) * minuteMs)
	expect(t, "last check", pubsub.next(), tr, late, 5, Filter{})
	expect(t, "new minute", pubsub.next(), tr, base+4, 5, Filter{})
	if got, _ := stored(t, e.ctx, e.rdb, late); got.ads[0] != (AdCount{AdID: "ad-late", Count: 10}) {
		t.Fatalf("corrected minute %d stored as %v", late, got)
	}
}

// TestAnnounceAfterFailedPublish: on a Redis Cluster a minute's list is
// stored and then announced in a second command. When the announcement
// fails (here the publisher's Redis user may SET but not PUBLISH, on every
// primary), Redis holds the lists and nobody heard of them; once PUBLISH
// works again, the publisher announces them, in order, although Redis
// already holds exactly those lists.
func TestAnnounceAfterFailedPublish(t *testing.T) {
	c := testserver.RedisCluster(t, 3, 1)
	admin := redis.NewClusterClient(testserver.RedisClusterOptions(c))
	t.Cleanup(func() { _ = admin.Close() })
	ctx := context.Background()
	setUser := func(rules ...any) {
		t.Helper()
		args := append([]any{"ACL", "SETUSER", "publisher"}, rules...)
		if err := admin.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			return m.Do(ctx, args...).Err()
		}); err != nil {
			t.Fatal(err)
		}
	}
	setUser("on", ">publisher-pw", "~*", "&*", "+@all", "-publish")
	opts := testserver.RedisClusterOptions(c)
	opts.Username, opts.Password = "publisher", "publisher-pw"
	rdb := redis.NewClusterClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })

	cfg := testConfig()
	cfg.PublishCount = 5
	cfg.RepublishMinutes = 3
	tr := newTruth(newPartitioner(t), 4, 3000, 60, 20)
	tr.setAllWatermarks((base + 4) * minuteMs)
	e := newEnvOn(t, tr, cfg, rdb)
	pubsub := subscribe(t, ctx, admin)
	e.start()
	// The first minute is stored, its announcement refused, and every poll
	// tries again.
	testserver.Eventually(t, 30*time.Second, func() error {
		if _, ok := stored(t, ctx, admin, base+1); !ok {
			return fmt.Errorf("minute %d not stored yet", base+1)
		}
		return nil
	})
	waitPolls(t, tr)
	select {
	case m := <-pubsub.ch:
		t.Fatalf("announced %s although PUBLISH is refused", m.Payload)
	default:
	}

	setUser("+publish")
	for m := base + 1; m <= base+3; m++ {
		expect(t, "after PUBLISH works again", pubsub.next(), tr, m, 5, Filter{})
	}
	tr.setAllWatermarks((base + 5) * minuteMs)
	expect(t, "next minute", pubsub.next(), tr, base+4, 5, Filter{})
}

// TestWatcherCorrectedAfterRedisOutage: a poll hands a new minute to a
// watcher and then cannot publish it, Redis being down (a failover). Late
// events change the minute before Redis is back; the poll that then
// publishes it must give the watcher the new list too, though the minute
// is no correction to the publisher (it never published it). Before, the
// watcher kept the list of the failed poll for good.
func TestWatcherCorrectedAfterRedisOutage(t *testing.T) {
	r := testserver.Redis(t)
	rdb := redis.NewClient(testserver.RedisOptions(r))
	t.Cleanup(func() { _ = rdb.Close() })
	tr, e, _ := startPublishing(t, testConfig(), rdb)
	e.redis = r
	ctx := e.ctx
	w := watch(t, ctx, e.qc, &clickaggv1.WatchPopularAdsRequest{})
	expect(t, "watch start", w.next(), tr, base+3, 100, Filter{})

	e.redis.Kill()
	m := base + 4
	tr.setAllWatermarks((m + 1) * minuteMs)
	expect(t, "new minute, redis down", w.next(), tr, m, 100, Filter{})
	waitPolls(t, tr)
	if _, err := e.rdb.Get(ctx, toplist.Key("clickagg", m)).Result(); err == nil {
		t.Fatal("redis answers while killed")
	}
	var late []click
	for i := range 15 {
		late = append(late, click{ad: "ad-late", minute: m, country: "US", ip: "10.0.0.3", userID: fmt.Sprintf("late%d", i)})
	}
	tr.add(late...)
	if err := e.redis.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	got := w.next()
	expect(t, "watch after redis is back", got, tr, m, 100, Filter{})
	if got.ads[0] != (AdCount{AdID: "ad-late", Count: 15}) {
		t.Fatalf("minute %d on the watch after redis is back: %v, want ad-late first", m, got)
	}
	testserver.Eventually(t, 30*time.Second, func() error {
		p, ok := stored(t, ctx, e.rdb, m)
		if !ok || p.ads[0] != (AdCount{AdID: "ad-late", Count: 15}) {
			return fmt.Errorf("minute %d stored as %v", m, p)
		}
		return nil
	})
}
