package hotkey_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// minuteTime is the start of Unix minute m.
func minuteTime(m int64) time.Time { return time.Unix(m*60, 0).UTC() }

// step moves the clock to t in steps shorter than MaxStaleness, waiting
// at each for the followers to confirm their copy, as a real clock would
// let them.
func (e *env) step(to time.Time, version uint64, fs ...*hotkey.Follower) {
	e.t.Helper()
	for e.clk.Now().Before(to) {
		next := e.clk.Now().Add(e.cfg.MaxStaleness / 2)
		if next.After(to) {
			next = to
		}
		e.clk.Set(next)
		e.fresh(version, fs...)
	}
}

// ingest sends events through rn until they are accepted, as a client
// that retries UNAVAILABLE does.
func (e *env) ingest(rn *routerNode, evs ...*clickaggv1.ClickEvent) {
	e.t.Helper()
	testserver.Eventually(e.t, wait, func() error {
		acc, rej, err := rn.r.Ingest(ctxT(e.t), evs)
		if err != nil {
			return err
		}
		if int(acc) != len(evs) {
			return fmt.Errorf("accepted %d of %d: %v", acc, len(evs), rej)
		}
		return nil
	})
}

func TestApplyEffectiveWhenEveryRouterAcks(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC)
	e := newEnv(t, 8, start)
	ctx := ctxT(t)
	fence, _ := leader(t, e.etcd, "c")
	r1, r2 := e.startRouter("r1"), e.startRouter("r2")
	e.fresh(0, r1.fol, r2.fol)
	pub := hotkey.NewPublisher(e.cfg, e.store, e.cl, testLogger(t), e.clk.Now)

	const ad = "ad-hot"
	own := e.parts.Partition(ad)
	var split []int
	for p := range 8 {
		if p != own && len(split) < 3 {
			split = append(split, p)
		}
	}
	change := hotkey.Change{AdID: ad, Partitions: split, Members: []string{"a1", "a2", "a3"}}
	m := hotkey.EffectiveMinute(start, e.cfg.MaxSkew, e.cfg.LeadTime)
	if want := start.Unix()/60 + 1; m != want {
		t.Fatalf("effective minute %d, want %d (now + skew + lead = 12:00:30)", m, want)
	}
	wantIv := hotkey.Interval{AdID: ad, Partitions: split, FromMinute: m, Members: change.Members}

	dry, err := pub.Plan(ctx, change)
	if err != nil || !reflect.DeepEqual(dry, wantIv) {
		t.Fatalf("Plan = %+v, %v; want %+v", dry, err, wantIv)
	}
	if tab, _, _ := e.store.Load(ctx); tab.Version() != 0 {
		t.Fatalf("Plan wrote version %d", tab.Version())
	}

	iv, err := pub.Apply(ctx, fence, change)
	if err != nil || !reflect.DeepEqual(iv, wantIv) {
		t.Fatalf("Apply = %+v, %v; want %+v", iv, err, wantIv)
	}
	acks, err := e.store.Acks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, rn := range []*routerNode{r1, r2} {
		if a := acks[rn.id]; a.Version < 1 || a.Lease != rn.reg.Member().Incarnation {
			t.Errorf("Apply returned but %s's ack is %+v", rn.id, a)
		}
	}
	tab, _, err := e.store.Load(ctx)
	if err != nil || tab.Version() != 1 || !reflect.DeepEqual(tab.Splits(), []hotkey.Interval{wantIv}) {
		t.Fatalf("stored table %d %+v, %v; want version 1 with %+v", tab.Version(), tab.Splits(), err, wantIv)
	}
	if _, err := pub.Apply(ctx, fence, change); !errors.Is(err, hotkey.ErrAlreadySplit) {
		t.Fatalf("second split: %v, want ErrAlreadySplit", err)
	}

	// Clicks of minute m-1 stay on the ad's partition; clicks of minute m
	// go to the sub-keys, through either router, and a retry lands with
	// its first copy.
	e.step(minuteTime(m).Add(-e.cfg.MaxSkew), 1, r1.fol, r2.fol)
	var evs []*clickaggv1.ClickEvent
	for i := range 40 {
		at := minuteTime(m).Add(-time.Duration(i%2) * time.Second)
		evs = append(evs, click(fmt.Sprintf("ev-%d", i), ad, at, "US"))
	}
	e.ingest(r1, evs...)
	e.ingest(r2, evs[:10]...)
	logs := e.readLogs()
	if len(logs) != 50 {
		t.Fatalf("%d events in the logs, want 50", len(logs))
	}
	used := map[int]bool{}
	for _, l := range logs {
		want := own
		if l.ev.GetClickTimeMs() >= m*60_000 {
			want = split[xxhash.Sum64String(l.ev.GetEventId())%3]
			used[want] = true
		}
		if l.partition != want {
			t.Errorf("event %s at %d in partition %d, want %d", l.ev.GetEventId(), l.ev.GetClickTimeMs(), l.partition, want)
		}
	}
	if len(used) != 3 {
		t.Errorf("clicks of minute m went to %v, want all of %v", used, split)
	}

	// The unsplit closes the interval at the next effective minute.
	m2 := hotkey.EffectiveMinute(e.clk.Now(), e.cfg.MaxSkew, e.cfg.LeadTime)
	iv, err = pub.Apply(ctx, fence, hotkey.Change{AdID: ad, Unsplit: true})
	wantIv.ToMinute = m2
	if err != nil || !reflect.DeepEqual(iv, wantIv) {
		t.Fatalf("unsplit = %+v, %v; want %+v", iv, err, wantIv)
	}
	if _, err := pub.Apply(ctx, fence, hotkey.Change{AdID: ad, Unsplit: true}); !errors.Is(err, hotkey.ErrNotSplit) {
		t.Fatalf("second unsplit: %v, want ErrNotSplit", err)
	}
}

// TestApplyWithdrawnWhenARouterDoesNotAck: router r2 is registered but
// never acknowledges (its follower is stuck), and r3's only ack is from
// another incarnation. At the deadline the change is withdrawn, before any
// router may accept a click of its minute, and r1, which had acknowledged
// it, never routes a click with it.
func TestApplyWithdrawnWhenARouterDoesNotAck(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC)
	e := newEnv(t, 8, start)
	ctx := ctxT(t)
	fence, _ := leader(t, e.etcd, "c")
	r1 := e.startRouter("r1")
	for _, id := range []string{"r2", "r3"} {
		reg, err := e.cl.Register(ctx, cluster.Member{ID: id, Role: cluster.RoleRouter}, leaseTTL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = reg.Close(context.Background()) })
	}
	old, err := e.etcd.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.WriteAck(ctx, "r3", 99, old.ID); err != nil {
		t.Fatal(err)
	}
	e.fresh(0, r1.fol)
	pub := hotkey.NewPublisher(e.cfg, e.store, e.cl, testLogger(t), e.clk.Now)

	const ad = "ad-hot"
	own := e.parts.Partition(ad)
	split := []int{(own + 1) % 8, (own + 2) % 8}
	m := hotkey.EffectiveMinute(start, e.cfg.MaxSkew, e.cfg.LeadTime)
	deadline := minuteTime(m).Add(-e.cfg.MaxSkew - e.cfg.Safety)

	type result struct {
		iv  hotkey.Interval
		err error
	}
	done := make(chan result, 1)
	go func() {
		iv, err := pub.Apply(ctx, fence, hotkey.Change{AdID: ad, Partitions: split})
		done <- result{iv, err}
	}()
	// r1 learns the change and acknowledges it; the change still waits.
	e.fresh(1, r1.fol)
	testserver.Eventually(t, wait, func() error {
		acks, err := e.store.Acks(ctx)
		if err != nil || acks["r1"].Version != 1 {
			return fmt.Errorf("acks %v, %v: want r1 at version 1", acks, err)
		}
		return nil
	})
	if tab, _ := r1.fol.Table(); len(tab.Splits()) != 1 {
		t.Fatalf("r1 holds %+v, want the split", tab.Splits())
	}
	select {
	case r := <-done:
		t.Fatalf("Apply returned before its deadline with two routers missing: %+v, %v", r.iv, r.err)
	default:
	}

	e.step(deadline, 1, r1.fol)
	r := <-done
	var we *hotkey.WithdrawnError
	if !errors.As(r.err, &we) || !errors.Is(r.err, hotkey.ErrWithdrawn) || !errors.Is(r.err, hotkey.ErrAckTimeout) {
		t.Fatalf("Apply = %+v, %v; want a WithdrawnError after ErrAckTimeout", r.iv, r.err)
	}
	if !slices.Equal(we.Missing, []string{"r2", "r3"}) || we.Minute != m || we.Undo != nil {
		t.Fatalf("withdrawn: missing %v, minute %d, undo %v; want r2 and r3, minute %d, undo ok", we.Missing, we.Minute, we.Undo, m)
	}
	// The withdrawal was written while the clock stood at the deadline,
	// Safety before a router may accept a click of minute m.
	tab, _, err := e.store.Load(ctx)
	if err != nil || tab.Version() != 2 || len(tab.Splits()) != 0 {
		t.Fatalf("stored table %d %+v, %v; want version 2 without splits", tab.Version(), tab.Splits(), err)
	}
	if now := e.clk.Now(); !now.Equal(deadline) || !now.Before(minuteTime(m).Add(-e.cfg.MaxSkew)) {
		t.Fatalf("clock %v, deadline %v", now, deadline)
	}

	// From the first moment clicks of minute m are accepted until well
	// after, r1 sends every click of the ad to its own partition.
	n := 0
	for e.clk.Now().Before(minuteTime(m + 1)) {
		e.step(e.clk.Now().Add(e.cfg.MaxStaleness/2), 2, r1.fol)
		if e.clk.Now().Before(minuteTime(m).Add(-e.cfg.MaxSkew)) {
			continue
		}
		n++
		e.ingest(r1, click(fmt.Sprintf("ev-%d", n), ad, e.clk.Now().Add(e.cfg.MaxSkew), "US"))
	}
	logs := e.readLogs()
	if len(logs) != n || n < 10 {
		t.Fatalf("%d events in the logs, want %d (at least 10)", len(logs), n)
	}
	for _, l := range logs {
		if l.partition != own {
			t.Errorf("event %s at %d in partition %d, want the ad's own %d", l.ev.GetEventId(), l.ev.GetClickTimeMs(), l.partition, own)
		}
	}
}

func TestApplyRefusals(t *testing.T) {
	e := newEnv(t, 8, time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC))
	ctx := ctxT(t)
	fence, resign := leader(t, e.etcd, "c")
	pub := hotkey.NewPublisher(e.cfg, e.store, e.cl, nil, e.clk.Now)
	for _, tc := range []struct {
		c   hotkey.Change
		err error
	}{
		{hotkey.Change{AdID: "a", Unsplit: true}, hotkey.ErrNotSplit},
		{hotkey.Change{AdID: "a", Partitions: []int{1}}, nil}, // one way is allowed by the table; Place refuses it
		{hotkey.Change{AdID: "b", Partitions: []int{1, 8}}, hotkey.ErrInvalid},
		{hotkey.Change{AdID: "", Partitions: []int{1, 2}}, hotkey.ErrInvalid},
	} {
		if _, err := pub.Plan(ctx, tc.c); !errors.Is(err, tc.err) && (tc.err != nil || err != nil) {
			t.Errorf("Plan(%s) = %v, want %v", tc.c, err, tc.err)
		}
	}
	// With no router registered, a change is effective at once.
	if _, err := pub.Apply(ctx, fence, hotkey.Change{AdID: "a", Partitions: []int{1, 2}}); err != nil {
		t.Fatal(err)
	}
	resign()
	if _, err := pub.Apply(ctx, fence, hotkey.Change{AdID: "a", Unsplit: true}); !errors.Is(err, hotkey.ErrFenced) {
		t.Fatalf("Apply of a deposed leader: %v, want ErrFenced", err)
	}
	if tab, _, _ := e.store.Load(ctx); tab.Version() != 1 {
		t.Fatalf("version %d after the deposed leader's Apply, want 1", tab.Version())
	}
}
