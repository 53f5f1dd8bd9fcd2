package aggregator

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

const lateness = 10 * time.Second

// workload sends clicks through the env's logs the way routers do and keeps
// the ground truth: duplicates (retries of earlier events, also within one
// batch) and late events (for minutes the watermark has passed).
type workload struct {
	e    *env
	g    *gen
	tr   *truth
	base int64 // first Unix minute of the data
	sent []*clickaggv1.LogEvent
	tick int64 // last tick sent, Unix ms

	dups, late int
}

func newWorkload(e *env) *workload {
	return &workload{
		e:  e,
		g:  newGen(30),
		tr: newTruth(e.part),
		// Two hours ago: well inside the dedup horizon, like real traffic.
		base: tally.MinuteOf(time.Now().Add(-2 * time.Hour).UnixMilli()),
	}
}

// send sends evs and records them. An event new to the truth is late when
// the last tick sent has completed its minute: every partition got that
// tick before these events.
func (w *workload) send(evs []*clickaggv1.LogEvent) {
	wm := w.tick - lateness.Milliseconds()
	seen := make(map[string]bool)
	for _, ev := range evs {
		_, old := w.tr.events[ev.GetEventId()]
		if !old && !seen[ev.GetEventId()] && w.tick != 0 && (tally.MinuteOf(ev.GetClickTimeMs())+1)*minuteMs <= wm {
			w.late++
		}
		seen[ev.GetEventId()] = true
	}
	w.dups += w.tr.add(evs)
	w.sent = append(w.sent, evs...)
	w.e.send(evs)
}

// fresh sends n new events in the minutes [base+from, base+to), plus
// retries of some of them in the same batch.
func (w *workload) fresh(n int, from, to int64) {
	evs := w.g.events(n, w.base+from, w.base+to)
	w.send(append(evs, w.g.pick(evs, n/10)...))
}

// retry sends n copies of events sent before.
func (w *workload) retry(n int) { w.send(w.g.pick(w.sent, n)) }

// tickAt ticks every partition at minute base+m.
func (w *workload) tickAt(m int64) {
	w.tick = (w.base + m) * minuteMs
	w.e.tick(w.tick)
}

// run sends a mix: on-time events, retries, a tick that completes the
// first minutes, late events for them, more retries, newer events.
func (w *workload) run() {
	for range 6 {
		w.fresh(40, 0, 5)
	}
	w.tickAt(6)
	w.fresh(60, 0, 5) // late: minutes 0-4 are complete
	w.retry(40)
	for range 4 {
		w.fresh(40, 6, 12)
	}
	w.tickAt(13)
	w.retry(30)
}

var (
	filters = []*clickaggv1.Filter{
		nil,
		{Country: "US"},
		{Ip: "10.0.0.2"},
		{UserId: "user-3"},
		{Country: "DE", Ip: "10.0.0.1"},
		{Country: "FR", Ip: "2001:db8::1", UserId: "user-1"},
		{Country: "XX"},
	}
	windows = [][2]int64{{0, 14}, {1, 2}, {3, 8}, {8, 14}, {4, 5}, {-100, 100}}
)

func (w *workload) window(rel [2]int64) Window {
	return Window{From: w.base + rel[0], To: w.base + rel[1]}
}

// check compares every count and top list n answers about parts with the
// ground truth.
func (w *workload) check(t *testing.T, n *node, parts []int) {
	t.Helper()
	wantWM := w.tick - lateness.Milliseconds()
	ads := append(slices.Clone(w.g.ads), "ad-unknown")
	checked := 0
	for _, rel := range windows {
		win := w.window(rel)
		for _, f := range filters {
			for _, ad := range ads {
				p := w.e.part.Partition(ad)
				if !slices.Contains(parts, p) {
					continue
				}
				resp, err := n.client.Count(ctxT(t), &clickaggv1.CountRequest{Partition: int32(p), AdId: ad, FromMinute: win.From, ToMinute: win.To, Filter: f})
				if err != nil {
					t.Fatalf("count %s %v %v: %v", ad, rel, f, err)
				}
				if want := w.tr.count(ad, win, f); resp.GetCount() != want {
					t.Errorf("count %s window %v filter %v = %d, want %d", ad, rel, f, resp.GetCount(), want)
				}
				if resp.GetWatermarkMs() != wantWM {
					t.Errorf("count watermark = %d, want %d", resp.GetWatermarkMs(), wantWM)
				}
				checked++
			}
			for _, ps := range [][]int{parts, parts[:1], parts[len(parts)-1:]} {
				for _, k := range []int{1, 3, 100} {
					got, err := n.top(ps, win, k, f)
					if err != nil {
						t.Fatalf("top %v %v %v: %v", ps, rel, f, err)
					}
					if want := w.tr.top(ps, win, k, f); !slices.Equal(got, want) {
						t.Errorf("top %d of %v window %v filter %v = %v, want %v", k, ps, rel, f, got, want)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no counts checked")
	}
}

// checkStats compares the summed partition counters with what was sent.
func (w *workload) checkStats(t *testing.T, n *node) {
	t.Helper()
	st, err := n.client.PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var applied, dups, late int64
	for _, p := range st.GetPartitions() {
		applied += p.GetEventsApplied()
		dups += p.GetDuplicatesDropped()
		late += p.GetLateEvents()
	}
	if applied != int64(len(w.tr.events)) || dups != int64(w.dups) || late != int64(w.late) {
		t.Errorf("applied %d, duplicates %d, late %d; want %d, %d, %d", applied, dups, late, len(w.tr.events), w.dups, w.late)
	}
	if w.dups == 0 || w.late == 0 {
		t.Fatalf("workload has %d duplicates and %d late events; the test needs both", w.dups, w.late)
	}
}

func allParts(n int) []int {
	ps := make([]int, n)
	for i := range ps {
		ps[i] = i
	}
	return ps
}

func TestConsumeAndQuery(t *testing.T) {
	e := newEnv(t, 4)
	n := e.start(testConfig("agg-0"), e.cl, time.Now)
	m := member(t, e.cl, "agg-0", 0)
	testserver.Eventually(t, wait, func() error {
		if !n.a.Ready() {
			return errors.New("not ready")
		}
		return nil
	})
	if _, err := n.count(0, "ad-0", Window{0, 1}, nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("count before any assignment: %v, want UNAVAILABLE", err)
	}
	e.assign(owners(4, m, 1))

	w := newWorkload(e)
	w.run()
	n.waitServing(e.last)
	w.check(t, n, allParts(4))
	w.checkStats(t, n)

	st, err := n.client.PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetMember() != "agg-0" || len(st.GetPartitions()) != 4 {
		t.Fatalf("status member %q with %d partitions, want agg-0 with 4", st.GetMember(), len(st.GetPartitions()))
	}
	for _, p := range st.GetPartitions() {
		if p.GetEpoch() != 1 || p.GetMember() != "agg-0" || p.GetWatermark().AsTime().UnixMilli() != w.tick-lateness.Milliseconds() {
			t.Errorf("partition %d: epoch %d member %s watermark %v", p.GetPartition(), p.GetEpoch(), p.GetMember(), p.GetWatermark().AsTime())
		}
	}
	if got := n.a.Stats(); got != (Stats{}) {
		t.Errorf("stats %+v, want all zero", got)
	}

	// A tick on partition 0 alone: TopAds reports the smallest watermark.
	wm := w.tick - lateness.Milliseconds()
	e.append(0, &clickaggv1.LogEntry{RouterId: "test-router", TickMs: w.tick + 5*minuteMs})
	n.waitServing(e.last)
	for _, tt := range []struct {
		parts []int32
		want  int64
	}{
		{[]int32{0}, wm + 5*minuteMs},
		{[]int32{0, 1, 2, 3}, wm},
		{[]int32{3, 0}, wm},
	} {
		resp, err := n.client.TopAds(ctxT(t), &clickaggv1.TopAdsRequest{Partitions: tt.parts, FromMinute: w.base, ToMinute: w.base + 14, Count: 10})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetMinWatermarkMs() != tt.want {
			t.Errorf("top of %v: min watermark %d, want %d", tt.parts, resp.GetMinWatermarkMs(), tt.want)
		}
	}
}

func TestQueryErrors(t *testing.T) {
	e := newEnv(t, 4)
	n := e.start(testConfig("agg-0"), e.cl, time.Now)
	m := member(t, e.cl, "agg-0", 0)
	// agg-0 owns 0 and 1; 2 and 3 belong to another member.
	o := owners(4, m, 1)
	o[2] = cluster.Owner{Member: "agg-1", Incarnation: 42, Epoch: 1}
	o[3] = cluster.Owner{Member: "agg-1", Incarnation: 42, Epoch: 1}
	e.assign(o)
	w := newWorkload(e)
	w.fresh(50, 0, 3)
	w.tickAt(4)
	n.waitServing(map[int]string{0: e.last[0], 1: e.last[1]})

	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"count of a partition owned elsewhere", func() error { _, err := n.count(2, "ad-0", w.window([2]int64{0, 5}), nil); return err }, codes.Unavailable, "partition 2"},
		{"count of a partition that does not exist", func() error { _, err := n.count(9, "ad-0", w.window([2]int64{0, 5}), nil); return err }, codes.Unavailable, "partition 9"},
		{"top with partitions not served", func() error { _, err := n.top([]int{0, 3, 1, 2}, w.window([2]int64{0, 5}), 10, nil); return err }, codes.Unavailable, "[2 3]"},
		{"negative partition", func() error { _, err := n.count(-1, "ad-0", w.window([2]int64{0, 5}), nil); return err }, codes.InvalidArgument, "negative"},
		{"empty window", func() error { _, err := n.count(0, "ad-0", w.window([2]int64{3, 3}), nil); return err }, codes.InvalidArgument, "empty"},
		{"top count 0", func() error { _, err := n.top([]int{0}, w.window([2]int64{0, 5}), 0, nil); return err }, codes.InvalidArgument, "count"},
		{"top without partitions", func() error { _, err := n.top(nil, w.window([2]int64{0, 5}), 10, nil); return err }, codes.InvalidArgument, "no partitions"},
		{"revisions with partitions not served", func() error {
			_, err := n.client.MinuteRevisions(ctxT(t), &clickaggv1.MinuteRevisionsRequest{Partitions: []int32{0, 3, 1, 2}, FromMinute: w.window([2]int64{0, 5}).From, ToMinute: w.window([2]int64{0, 5}).To})
			return err
		}, codes.Unavailable, "[2 3]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			wantCode(t, err, tt.code)
			if !strings.Contains(status.Convert(err).Message(), tt.msg) {
				t.Errorf("message %q does not mention %q", status.Convert(err).Message(), tt.msg)
			}
		})
	}
	// The served partitions still answer, exactly.
	w.check(t, n, []int{0, 1})
}

// TestCorruptEntry: an entry that does not decode stops its partition at
// the entry before it; it is neither skipped nor does it stop the others.
// The metrics that ClickaggPartitionFailed reads say so.
func TestCorruptEntry(t *testing.T) {
	e := newEnv(t, 2)
	reg := prometheus.NewPedanticRegistry()
	n := e.start(testConfig("agg-0"), e.cl, time.Now, WithMetrics(reg))
	e.assign(owners(2, member(t, e.cl, "agg-0", 0), 1))
	w := newWorkload(e)
	w.fresh(50, 0, 3)
	w.tickAt(4)
	n.waitServing(e.last)
	good := e.last[1]
	e.appendRaw([]partlog.Append{{Partition: 1, Data: []byte{0xff}}})
	w.fresh(50, 0, 3) // more for both partitions, after the corrupt entry in 1
	w.tickAt(5)

	testserver.Eventually(t, wait, func() error {
		st, err := n.client.PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
		if err != nil {
			return err
		}
		for _, p := range st.GetPartitions() {
			if p.GetPartition() == 1 && p.GetState() == "failed" && p.GetOffset() == good {
				return nil
			}
		}
		return fmt.Errorf("partition 1 not failed at %s: %v", good, st.GetPartitions())
	})
	if _, err := n.count(1, "ad-0", w.window([2]int64{0, 5}), nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("count of the failed partition: %v, want UNAVAILABLE", err)
	}
	if got := n.a.Stats().CorruptEntries; got != 1 {
		t.Errorf("CorruptEntries = %d, want 1", got)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP clickagg_aggregator_corrupt_entries_total Log entries that did not decode; each stopped its partition from being served.
# TYPE clickagg_aggregator_corrupt_entries_total counter
clickagg_aggregator_corrupt_entries_total 1
`+partitionsText(1, 1)), "clickagg_aggregator_corrupt_entries_total", "clickagg_aggregator_partitions"); err != nil {
		t.Error(err)
	}
	n.waitServing(map[int]string{0: e.last[0]})
	w.check(t, n, []int{0})
}

// startCrashing starts aggregator agg-0 owning all 4 partitions at epoch 1,
// snapshotting every minute of a fake clock, for a test that crashes it.
func startCrashing(t *testing.T) (*env, *testsupport.Clock, nodeConfig, *node, cluster.Member) {
	e := newEnv(t, 4)
	clock := testsupport.NewClock(time.Now())
	cfg := testConfig("agg-0")
	cfg.SnapshotInterval = time.Minute // by the fake clock
	a := e.start(cfg, e.cl, clock.Now)
	m1 := member(t, e.cl, "agg-0", 0)
	e.assign(owners(4, m1, 1))
	return e, clock, cfg, a, m1
}

// succeed starts the successor of the crashed agg-0 (m1) and gives it all
// 4 partitions at epoch 2, once they serve.
func (e *env) succeed(cfg nodeConfig, clock *testsupport.Clock, m1 cluster.Member) *node {
	b := e.start(cfg, e.cl, clock.Now)
	m2 := member(e.t, e.cl, "agg-0", m1.Incarnation)
	e.assign(owners(4, m2, 2))
	b.waitServing(e.last)
	return b
}

// TestCrashRecovery: an aggregator dies after its last snapshot but with
// log entries applied after it; its successor (same ID, new incarnation and
// epoch) restores the snapshot, replays the rest, and counts exactly: no
// event lost, no retry counted twice.
func TestCrashRecovery(t *testing.T) {
	e, clock, cfg, a, m1 := startCrashing(t)
	w := newWorkload(e)
	for range 5 {
		w.fresh(40, 0, 5)
	}
	w.tickAt(6)
	a.waitServing(e.last)
	snapped := maps.Clone(e.last)
	clock.Advance(time.Minute)
	e.waitStored(snapped)

	// Applied by a, never snapshotted: retries of snapshotted events, late
	// events, new minutes.
	w.retry(60)
	w.fresh(50, 0, 5)
	w.fresh(80, 6, 12)
	w.tickAt(13)
	w.retry(30)
	a.waitServing(e.last)
	w.check(t, a, allParts(4))

	// The crash: a's Redis connection goes first, so its final snapshots
	// fail like those of a killed process.
	_ = a.rdb.Close()
	a.stop()
	for p, off := range snapped {
		if m, _ := e.storedMeta(p); m.GetOffset() != off {
			t.Fatalf("partition %d snapshot moved to %q after the crash, want %q", p, m.GetOffset(), off)
		}
	}

	b := e.succeed(cfg, clock, m1)
	w.check(t, b, allParts(4))
	w.checkStats(t, b)
	// The new owner's snapshots carry its epoch.
	clock.Advance(time.Minute)
	testserver.Eventually(t, wait, func() error {
		for p := range 4 {
			if m, fence := e.storedMeta(p); m.GetEpoch() != 2 || fence != 2 || m.GetOffset() != e.last[p] {
				return fmt.Errorf("partition %d snapshot epoch %d fence %d offset %s", p, m.GetEpoch(), fence, m.GetOffset())
			}
		}
		return nil
	})
}

// TestCrashRecoveryWithLateParts crashes an aggregator whose last
// snapshots stored complete minutes as late parts, after it applied more
// late events: its successor restores the minutes with their parts, and
// replays the rest, and counts exactly.
func TestCrashRecoveryWithLateParts(t *testing.T) {
	e, clock, cfg, a, m1 := startCrashing(t)
	w := newWorkload(e)
	saveAll := func() {
		t.Helper()
		a.waitServing(e.last)
		want := maps.Clone(e.last)
		clock.Advance(time.Minute)
		e.waitStored(want)
	}

	for range 5 {
		w.fresh(40, 0, 5)
	}
	w.tickAt(6)
	saveAll() // minutes 0-4 complete, stored whole
	w.fresh(60, 0, 5)
	w.retry(20)
	saveAll() // their late events, stored as late parts
	parts := 0
	for p := range 4 {
		ld, err := e.store.Load(ctxT(t), p)
		if err != nil {
			t.Fatal(err)
		}
		parts += len(ld.Late)
	}
	if parts == 0 {
		t.Fatal("no late part stored; the test needs them")
	}
	// Applied by a, never snapshotted: more late events for the minutes
	// with parts, retries of the parts' events, newer minutes.
	w.fresh(50, 0, 5)
	w.retry(60)
	w.fresh(40, 6, 12)
	w.tickAt(13)
	a.waitServing(e.last)
	w.check(t, a, allParts(4))

	_ = a.rdb.Close()
	a.stop()
	b := e.succeed(cfg, clock, m1)
	w.check(t, b, allParts(4))
	w.checkStats(t, b)
}

// TestHandoff moves partition 2 from a to b at a higher epoch.
func TestHandoff(t *testing.T) {
	tests := []struct {
		name string
		// stale: a never sees the move (it follows its own, stale view of
		// the assignment, like an owner cut off from etcd), so only
		// fencing stops it.
		stale bool
	}{
		{"a sees the move", false},
		{"a is cut off from the assignment", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 4)
			acl, alead, aversion := e.cl, e.lead, &e.version
			if tt.stale {
				acl = cluster.NewClient(e.etcd, "/stale-view")
				alead = campaign(t, acl)
				aversion = new(uint64)
			}
			a := e.start(testConfig("agg-a"), acl, time.Now)
			ma := member(t, acl, "agg-a", 0)
			assign(t, alead, aversion, owners(4, ma, 1))

			w := newWorkload(e)
			for range 4 {
				w.fresh(40, 0, 5)
			}
			w.tickAt(6)
			a.waitServing(e.last)

			b := e.start(testConfig("agg-b"), e.cl, time.Now)
			mb := member(t, e.cl, "agg-b", 0)
			moved := owners(4, ma, 1)
			moved[2] = cluster.Owner{Member: mb.ID, Incarnation: mb.Incarnation, Epoch: 2}
			e.assign(moved)
			b.waitServing(map[int]string{2: e.last[2]})

			// a stops serving 2: told by the assignment, or fenced at its
			// next snapshot.
			testserver.Eventually(t, wait, func() error {
				_, err := a.count(2, "ad-0", w.window([2]int64{0, 5}), nil)
				if status.Code(err) != codes.Unavailable {
					return fmt.Errorf("a answers for partition 2: %v", err)
				}
				return nil
			})
			if tt.stale {
				if got := a.a.Stats().FencedWrites; got != 1 {
					t.Errorf("a FencedWrites = %d, want 1", got)
				}
			}

			// More traffic after the move: b counts it, on top of what a
			// had snapshotted or b replayed.
			w.retry(50)
			w.fresh(60, 0, 5)
			w.fresh(80, 6, 12)
			w.tickAt(13)
			b.waitServing(map[int]string{2: e.last[2]})
			w.check(t, b, []int{2})
			a.waitServing(map[int]string{0: e.last[0], 1: e.last[1], 3: e.last[3]})
			w.check(t, a, []int{0, 1, 3})

			// Partition 2's snapshots are b's alone.
			testserver.Eventually(t, wait, func() error {
				m, fence := e.storedMeta(2)
				if m.GetEpoch() != 2 || fence != 2 || m.GetOffset() != e.last[2] {
					return fmt.Errorf("partition 2 snapshot epoch %d fence %d offset %s", m.GetEpoch(), fence, m.GetOffset())
				}
				return nil
			})
			st, err := a.client.PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range st.GetPartitions() {
				if p.GetPartition() == 2 {
					t.Errorf("a still holds partition 2: %v", p)
				}
			}
		})
	}
}

// TestLeaseLoss: when the lease goes, the aggregator stops serving, comes
// back as a new incarnation, and serves again (exactly) only once the
// coordinator assigns that incarnation.
func TestLeaseLoss(t *testing.T) {
	e := newEnv(t, 2)
	n := e.start(testConfig("agg-0"), e.cl, time.Now)
	m1 := member(t, e.cl, "agg-0", 0)
	e.assign(owners(2, m1, 1))
	w := newWorkload(e)
	w.fresh(60, 0, 5)
	w.tickAt(6)
	n.waitServing(e.last)

	if _, err := e.etcd.Revoke(ctxT(t), clientv3.LeaseID(m1.Incarnation)); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, wait, func() error {
		if _, err := n.count(0, "ad-0", w.window([2]int64{0, 5}), nil); status.Code(err) != codes.Unavailable {
			return fmt.Errorf("still answering after the lease was lost: %v", err)
		}
		return nil
	})
	m2 := member(t, e.cl, "agg-0", m1.Incarnation)
	testserver.Eventually(t, wait, func() error {
		if !n.a.Ready() {
			return errors.New("not ready")
		}
		return nil
	})
	// The assignment still names the old incarnation: nothing is served.
	st, err := n.client.PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetPartitions()) != 0 {
		t.Fatalf("new incarnation holds %v under the old one's assignment", st.GetPartitions())
	}
	if got := n.a.Stats().LeaseLosses; got != 1 {
		t.Errorf("LeaseLosses = %d, want 1", got)
	}

	w.retry(20)
	w.fresh(40, 0, 8)
	w.tickAt(9)
	e.assign(owners(2, m2, 2))
	n.waitServing(e.last)
	w.check(t, n, allParts(2))
	w.checkStats(t, n)
}

// TestTrimming: snapshots trim the log below the snapshot offset (and the
// raw-retention window), never above it, so a successor replays exactly.
func TestTrimming(t *testing.T) {
	tests := []struct {
		name         string
		rawRetention time.Duration
	}{
		{"raw retention 0: trim to the snapshot offset", 0},
		{"raw retention 1h: keep everything", time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 2)
			cfg := testConfig("agg-0")
			cfg.RawRetention = tt.rawRetention
			a := e.start(cfg, e.cl, time.Now)
			m1 := member(t, e.cl, "agg-0", 0)
			e.assign(owners(2, m1, 1))
			w := newWorkload(e)
			for range 4 {
				w.fresh(30, 0, 5)
			}
			w.tickAt(6)
			a.waitServing(e.last)
			a.stop() // final snapshot at the end of the log

			// wantStream is what the log must hold: with raw retention 0,
			// the snapshot offset and everything after it; else everything.
			wantStream := func(p int, offset string) []string {
				all := e.ids[p]
				if tt.rawRetention > 0 {
					return all
				}
				i := slices.Index(all, offset)
				if i < 0 {
					t.Fatalf("offset %s of partition %d is not an entry", offset, p)
				}
				return all[i:]
			}
			snapped := maps.Clone(e.last)
			for p := range 2 {
				m, _ := e.storedMeta(p)
				if m.GetOffset() != snapped[p] {
					t.Fatalf("partition %d snapshot at %s, want %s", p, m.GetOffset(), snapped[p])
				}
				if got, want := e.streamIDs(p), wantStream(p, snapped[p]); !slices.Equal(got, want) {
					t.Errorf("partition %d log holds %d entries %v, want %d %v", p, len(got), got, len(want), want)
				}
			}

			// Entries appended after the snapshot stay until a snapshot
			// covers them, and the successor replays them.
			w.retry(40)
			w.fresh(50, 0, 5)
			w.fresh(50, 6, 12)
			w.tickAt(13)
			for p := range 2 {
				if got, want := e.streamIDs(p), wantStream(p, snapped[p]); !slices.Equal(got, want) || len(want) < 3 {
					t.Errorf("partition %d log holds %v after more appends, want %v", p, got, want)
				}
			}
			b := e.start(cfg, e.cl, time.Now)
			m2 := member(t, e.cl, "agg-0", m1.Incarnation)
			e.assign(owners(2, m2, 2))
			b.waitServing(e.last)
			w.check(t, b, allParts(2))
			w.checkStats(t, b)
			b.stop()
			for p := range 2 {
				if got, want := e.streamIDs(p), wantStream(p, e.last[p]); !slices.Equal(got, want) {
					t.Errorf("after b: partition %d log holds %v, want %v", p, got, want)
				}
			}
		})
	}
}

// TestWindowBeyondRetention: minutes that left memory are deleted from the
// store by the next snapshot, so windows reaching them fail with
// OUT_OF_RANGE rather than undercount.
func TestWindowBeyondRetention(t *testing.T) {
	e := newEnv(t, 1)
	cfg := testConfig("agg-0")
	cfg.DedupHorizon = 5 * time.Minute
	cfg.Retention = 10 * time.Minute
	n := e.start(cfg, e.cl, time.Now)
	e.assign(owners(1, member(t, e.cl, "agg-0", 0), 1))
	w := newWorkload(e)
	w.fresh(100, 0, 3)
	w.tickAt(4)
	n.waitServing(e.last)
	for _, ad := range w.g.ads {
		win := w.window([2]int64{0, 4})
		if got, err := n.count(0, ad, win, nil); err != nil || got != w.tr.count(ad, win, nil) {
			t.Fatalf("count %s = %d, %v; want %d", ad, got, err, w.tr.count(ad, win, nil))
		}
	}
	// The minute must be seen stored before it can be seen to go.
	testserver.Eventually(t, wait, func() error { return e.storedMinute(0, w.base) })

	w.tickAt(30) // watermark base+30m-10s: memory keeps minutes from base+19 on
	n.waitServing(e.last)
	oldest := w.base + 19
	tests := []struct {
		name string
		from int64
		code codes.Code
	}{
		{"window of evicted minutes", w.base, codes.OutOfRange},
		{"window starting one minute too early", oldest - 1, codes.OutOfRange},
		{"window starting at the oldest minute kept", oldest, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			win := Window{From: tt.from, To: w.base + 31}
			got, err := n.count(0, w.g.ads[0], win, nil)
			wantCode(t, err, tt.code)
			_, terr := n.top([]int{0}, win, 10, nil)
			wantCode(t, terr, tt.code)
			if err == nil && got != w.tr.count(w.g.ads[0], win, nil) {
				t.Errorf("count = %d, want %d", got, w.tr.count(w.g.ads[0], win, nil))
			}
		})
	}
	testserver.Eventually(t, wait, func() error {
		if err := e.storedMinute(0, w.base); !errors.Is(err, snapshot.ErrNotFound) {
			return fmt.Errorf("evicted minute still stored: %v", err)
		}
		return nil
	})
}

func TestConfig(t *testing.T) {
	var def Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	def.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"defaults", func(*Config) {}, true},
		{"zero snapshot interval", func(c *Config) { c.SnapshotInterval = 0 }, false},
		{"zero read count", func(c *Config) { c.ReadCount = 0 }, false},
		{"zero read block", func(c *Config) { c.ReadBlock = 0 }, false},
		{"read block 1m", func(c *Config) { c.ReadBlock = time.Minute }, false},
		{"negative lateness", func(c *Config) { c.AllowedLateness = -time.Second }, false},
		{"retention below dedup horizon", func(c *Config) { c.Retention = time.Hour }, false},
		{"negative raw retention", func(c *Config) { c.RawRetention = -time.Second }, false},
		{"raw retention 0", func(c *Config) { c.RawRetention = 0 }, true},
		{"zero release timeout", func(c *Config) { c.ReleaseTimeout = 0 }, false},
		{"negative leave timeout", func(c *Config) { c.LeaveTimeout = -time.Second }, false},
		{"leave timeout 0", func(c *Config) { c.LeaveTimeout = 0 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := def
			tt.change(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if err := fs.Parse([]string{"-aggregator.snapshot-interval=2s", "-aggregator.dedup-horizon=7h"}); err != nil {
		t.Fatal(err)
	}
	if def.SnapshotInterval != 2*time.Second || def.DedupHorizon != 7*time.Hour {
		t.Errorf("flags parsed into %+v", def)
	}
}

// TestRunRefusesBadConfig: Run returns an error, without any I/O, for a
// configuration that cannot work; what no aggregator flag sets is named by
// the flag of the process that does.
func TestRunRefusesBadConfig(t *testing.T) {
	good := Self{ID: "agg-0", Addr: "127.0.0.1:1", LeaseTTL: leaseTTL}
	tests := []struct {
		name   string
		change func(*Config, *Self)
		opts   []Option
		prefix string // of the error; empty: any error
	}{
		{"read count 0", func(c *Config, _ *Self) { c.ReadCount = 0 }, nil, "-aggregator.read-count 0: "},
		{"no advertise address", func(_ *Config, s *Self) { s.Addr = "" }, nil, ""},
		{"lease ttl 1s", func(_ *Config, s *Self) { s.LeaseTTL = time.Second }, nil, "-etcd.lease-ttl 1s: "},
		{"fractional lease ttl", func(_ *Config, s *Self) { s.LeaseTTL = 2500 * time.Millisecond }, nil, "-etcd.lease-ttl 2.5s: "},
		{"negative sketch capacity", func(*Config, *Self) {}, []Option{WithSketchCapacity(-1)}, "-hotkey.sketch-capacity -1: "},
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, self := testConfig("agg-0").Config, good
			tt.change(&cfg, &self)
			err := New(cfg, self, nil, nil, nil, nil, time.Now, tt.opts...).Run(ctx)
			if err == nil || !strings.HasPrefix(err.Error(), tt.prefix) {
				t.Errorf("Run = %v, want an error starting with %q", err, tt.prefix)
			}
		})
	}
}
