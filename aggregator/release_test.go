package aggregator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

func (n *node) release(p int, epoch uint64) (*clickaggv1.ReleaseResponse, error) {
	return n.client.Release(ctxT(n.t), &clickaggv1.ReleaseRequest{Partition: int32(p), Epoch: epoch})
}

func (n *node) status(p int) *clickaggv1.PartitionStatus {
	n.t.Helper()
	st, err := n.client.PartitionStatus(ctxT(n.t), &clickaggv1.PartitionStatusRequest{})
	if err != nil {
		n.t.Fatal(err)
	}
	for _, s := range st.GetPartitions() {
		if int(s.GetPartition()) == p {
			return s
		}
	}
	return nil
}

// TestRelease: Release stops a partition at its offset with a final
// snapshot; the next owner continues exactly from it, and the releaser
// writes nothing more. A release that no new assignment follows is taken
// back after the release timeout, exactly as well.
func TestRelease(t *testing.T) {
	e := newEnv(t, 4)
	clock := testsupport.NewClock(time.Now())
	cfg := testConfig("agg-a")
	a := e.start(cfg, e.cl, clock.Now)
	ma := member(t, e.cl, "agg-a", 0)
	e.assign(owners(4, ma, 1))
	w := newWorkload(e)
	w.run()
	a.waitServing(e.last)

	refusals := []struct {
		name  string
		p     int
		epoch uint64
		code  codes.Code
		msg   string
	}{
		{"partition not held", 9, 1, codes.Unavailable, "partition 9"},
		{"other epoch", 1, 7, codes.FailedPrecondition, "epoch 1"},
		{"negative partition", -1, 1, codes.InvalidArgument, "negative"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.release(tt.p, tt.epoch)
			wantCode(t, err, tt.code)
			if !strings.Contains(status.Convert(err).Message(), tt.msg) {
				t.Errorf("message %q does not mention %q", status.Convert(err).Message(), tt.msg)
			}
		})
	}

	// Release 1: it stops at the last entry with a snapshot there.
	at := clock.Now()
	r, err := a.release(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetOffset() != e.last[1] || !r.GetStopped().AsTime().Equal(at) {
		t.Fatalf("release = offset %s stopped %v, want %s at %v", r.GetOffset(), r.GetStopped().AsTime(), e.last[1], at)
	}
	if m, fence := e.storedMeta(1); m.GetOffset() != e.last[1] || m.GetEpoch() != 1 || fence != 1 {
		t.Fatalf("snapshot after release: offset %s epoch %d fence %d", m.GetOffset(), m.GetEpoch(), fence)
	}
	if _, err := a.count(1, "ad-0", w.window([2]int64{0, 14}), nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("count of a released partition: %v, want UNAVAILABLE", err)
	}
	if s := a.status(1); s.GetState() != "released" || s.GetOffset() != e.last[1] {
		t.Fatalf("status of the released partition: %v", s)
	}
	// Asked again (a coordinator retrying): the same answer.
	clock.Advance(time.Second)
	if r2, err := a.release(1, 1); err != nil || !proto.Equal(r, r2) {
		t.Fatalf("second release = %v, %v; want %v", r2, err, r)
	}

	// Traffic after the release: a does not apply it to 1.
	released1 := e.last[1]
	w.fresh(80, 0, 12)
	w.retry(30)
	w.tickAt(14)
	a.waitServing(map[int]string{0: e.last[0], 2: e.last[2], 3: e.last[3]})
	if s := a.status(1); s.GetOffset() != released1 {
		t.Fatalf("released partition moved on to %s", s.GetOffset())
	}

	// The move: b claims 1 at epoch 2, loads a's final snapshot, replays
	// the rest, and counts exactly. a drops 1 without writing again.
	b := e.start(testConfig("agg-b"), e.cl, time.Now)
	mb := member(t, e.cl, "agg-b", 0)
	o := owners(4, ma, 1)
	o[1] = cluster.Owner{Member: mb.ID, Incarnation: mb.Incarnation, Epoch: 2}
	e.assign(o)
	b.waitServing(map[int]string{1: e.last[1]})
	w.check(t, b, []int{1})
	testserver.Eventually(t, wait, func() error {
		if s := a.status(1); s != nil {
			return fmt.Errorf("a still holds 1: %v", s)
		}
		return nil
	})
	if got := a.a.Stats(); got.FencedWrites != 0 || got.SnapshotErrors != 0 {
		t.Errorf("a's stats after the handoff %+v: a released partition must not be written again", got)
	}

	// Release 2 with no assignment after it: after the release timeout a
	// takes it back at the same epoch and serves it exactly.
	if _, err := a.release(2, 1); err != nil {
		t.Fatal(err)
	}
	w.fresh(60, 6, 12)
	w.tickAt(15)
	a.waitServing(map[int]string{0: e.last[0], 3: e.last[3]})
	if s := a.status(2); s.GetState() != "released" {
		t.Fatalf("partition 2 before the release timeout: %v", s)
	}
	clock.Advance(cfg.ReleaseTimeout)
	a.waitServing(map[int]string{0: e.last[0], 2: e.last[2], 3: e.last[3]})
	if s := a.status(2); s.GetEpoch() != 1 {
		t.Fatalf("partition 2 taken back at epoch %d, want 1", s.GetEpoch())
	}
	w.check(t, a, []int{0, 2, 3})
	b.waitServing(map[int]string{1: e.last[1]})
	w.check(t, b, []int{1})
}

// TestLoadReport: events_per_second averages the events applied over the
// last minute of the injected clock (over the time held when shorter),
// lag_seconds is the age of the oldest unapplied entry, serving_since is
// when the partition started serving.
func TestLoadReport(t *testing.T) {
	e := newEnv(t, 2)
	t0 := time.Unix(time.Now().Unix(), 0)
	clock := testsupport.NewClock(t0)
	n := e.start(testConfig("agg-0"), e.cl, clock.Now)
	e.assign(owners(2, member(t, e.cl, "agg-0", 0), 1))

	g := newGen(20)
	sent := map[int]int{}
	for range 5 {
		evs := g.events(40, 100, 110)
		evs = append(evs, g.pick(evs, 7)...) // duplicates are work too
		for _, ev := range evs {
			sent[e.part.Partition(ev.GetAdId())]++
		}
		e.send(evs)
	}
	e.tick(111 * minuteMs)
	n.waitServing(e.last)
	if sent[0] == 0 || sent[1] == 0 {
		t.Fatalf("events per partition %v: the test needs both", sent)
	}

	check := func(name string, want func(p int) float64) {
		t.Helper()
		for p := range 2 {
			s := n.status(p)
			if got := s.GetEventsPerSecond(); got != want(p) {
				t.Errorf("%s: partition %d events_per_second = %v, want %v", name, p, got, want(p))
			}
			if !s.GetServingSince().AsTime().Equal(t0) || s.GetLagSeconds() != 0 {
				t.Errorf("%s: partition %d serving_since %v lag_seconds %v, want %v and 0", name, p, s.GetServingSince().AsTime(), s.GetLagSeconds(), t0)
			}
		}
	}
	check("held for a second", func(p int) float64 { return float64(sent[p]) })
	clock.Advance(29 * time.Second)
	check("held for 30s", func(p int) float64 { return float64(sent[p]) / 30 })
	clock.Advance(31 * time.Second)
	check("a minute later", func(int) float64 { return 0 })

	// A corrupt entry stops partition 1: what follows is lag, and its age
	// is the corrupt entry's.
	e.appendRaw([]partlog.Append{{Partition: 1, Data: []byte{0xff}}})
	corrupt := e.last[1]
	e.tick(112 * minuteMs)
	e.tick(113 * minuteMs)
	n.waitServing(map[int]string{0: e.last[0]})
	testserver.Eventually(t, wait, func() error {
		if s := n.status(1); s.GetState() != "failed" {
			return fmt.Errorf("partition 1 is %s", s.GetState())
		}
		return nil
	})
	// What is not served cannot be handed over live.
	if _, err := n.release(1, 1); status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "failed") {
		t.Errorf("release of a failed partition = %v, want UNAVAILABLE", err)
	}
	ms, _ := idMillis(corrupt)
	want := clock.Now().Sub(time.UnixMilli(ms)).Seconds()
	if s := n.status(1); s.GetLag() != 3 || s.GetLagSeconds() != want {
		t.Errorf("failed partition: lag %d lag_seconds %v, want 3 and %v", s.GetLag(), s.GetLagSeconds(), want)
	}
	if want <= 0 {
		t.Fatalf("lag_seconds %v: the test needs a positive age", want)
	}
}

// TestLeaveAlone: with no other aggregator to take its partitions, Leave
// neither marks the member leaving nor waits: shutdown goes on at once.
func TestLeaveAlone(t *testing.T) {
	e := newEnv(t, 2)
	cfg := testConfig("agg-0")
	cfg.LeaveTimeout = time.Hour
	n := e.start(cfg, e.cl, time.Now)
	e.assign(owners(2, member(t, e.cl, "agg-0", 0), 1))
	n.waitServing(map[int]string{0: "", 1: ""})
	if err := n.a.Leave(ctxT(t)); err != nil {
		t.Fatalf("Leave = %v", err)
	}
	ms, err := e.cl.Members(ctxT(t), cluster.RoleAggregator)
	if err != nil || len(ms) != 1 || ms[0].Leaving {
		t.Fatalf("members after Leave = %+v, %v; want agg-0, not leaving", ms, err)
	}
	if s := n.status(0); s.GetState() != "serving" {
		t.Fatalf("partition 0 after Leave: %v", s)
	}
}

// TestTakeHandedOver: a partition whose snapshot is the one its previous
// owner released it at serves as soon as it is loaded, lag or not; any
// other snapshot restores first.
func TestTakeHandedOver(t *testing.T) {
	e := newEnv(t, 2)
	n := e.start(testConfig("agg-a"), e.cl, time.Now)
	e.assign(owners(2, member(t, e.cl, "agg-a", 0), 1))
	w := newWorkload(e)
	w.fresh(100, 0, 5)
	n.waitServing(e.last)
	r0, err := n.release(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := n.release(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	w.fresh(100, 0, 5) // lag after both snapshots
	w.tickAt(6)

	// A second aggregator, not running: take is called as its consumer
	// would.
	b := New(testConfig("agg-b").Config, Self{ID: "agg-b"}, e.log, e.store, e.cl, nil, time.Now)
	b.live = true
	lg := b.lg
	tests := []struct {
		p      int
		handed string
		want   state
	}{
		{0, r0.GetOffset(), stateServing},
		{1, "1-0", stateRestoring}, // not the snapshot loaded
	}
	for _, tt := range tests {
		if err := b.take(ctxT(t), tt.p, 2, tt.handed, lg); err != nil {
			t.Fatal(err)
		}
		pt := b.partition(tt.p)
		if got := pt.getState(b); got != tt.want {
			t.Errorf("partition %d taken with handed %q: %s, want %s", tt.p, tt.handed, got, tt.want)
		}
		if lag, _, err := e.log.Lag(ctxT(t), tt.p, pt.tp.Offset()); err != nil || lag == 0 {
			t.Fatalf("partition %d: lag %d, %v; the test needs entries after the snapshot", tt.p, lag, err)
		}
	}
	if r1.GetOffset() == "1-0" {
		t.Fatal("the mismatching offset matches")
	}
}
