package hotkey_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg/hotkey"
)

// loads is the test's Observer: the coordinator's view of the load, set
// by the test.
type loads struct {
	mu  sync.Mutex
	obs hotkey.Observation
}

func (l *loads) set(o hotkey.Observation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.obs = o
}

func (l *loads) Observe(context.Context) (hotkey.Observation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.obs, nil
}

// observe spreads 8 partitions over 4 aggregators (a<p%4>), 100/s each,
// plus ad-hot's rate on its own partition.
func observe(e *env, hot float64) hotkey.Observation {
	o := hotkey.Observation{Members: []string{"a0", "a1", "a2", "a3"}}
	hp := e.parts.Partition("ad-hot")
	for p := range 8 {
		pl := hotkey.PartitionLoad{Partition: p, Member: o.Members[p%4], Rate: 100}
		if p == hp {
			pl.Rate += hot
			pl.Heavy = []hotkey.AdRate{{AdID: "ad-hot", Rate: hot}}
		}
		o.Partitions = append(o.Partitions, pl)
	}
	return o
}

// TestControllerSplitsAndUnsplits runs the controller's steps against a
// real etcd with two routers: a hot ad is split over distinct aggregators
// once every router acknowledged, left alone while split, unsplit once
// cool for MinSplit, and a deposed leader's step stops at ErrFenced.
func TestControllerSplitsAndUnsplits(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC)
	e := newEnv(t, 8, start)
	e.cfg.MinSplit = 20 * time.Second
	ctx := ctxT(t)
	fence, resign := leader(t, e.etcd, "c")
	r1, r2 := e.startRouter("r1"), e.startRouter("r2")
	e.fresh(0, r1.fol, r2.fol)
	obs := &loads{}
	ctl := hotkey.NewController(e.cfg, hotkey.NewPlanner(e.cfg, e.parts), hotkey.NewPublisher(e.cfg, e.store, e.cl, testLogger(t), e.clk.Now), obs, testLogger(t), e.clk.Now)

	obs.set(observe(e, e.cfg.SplitRate*0.9))
	if out, err := ctl.Step(ctx, fence); err != nil || len(out) != 0 {
		t.Fatalf("Step below the split rate = %+v, %v; want nothing", out, err)
	}

	obs.set(observe(e, 3*e.cfg.SplitRate))
	out, err := ctl.Step(ctx, fence)
	if err != nil || len(out) != 1 || out[0].Err != nil || out[0].Unsplit {
		t.Fatalf("Step with a hot ad = %+v, %v; want one split", out, err)
	}
	iv := out[0].Interval
	m := hotkey.EffectiveMinute(start, e.cfg.MaxSkew, e.cfg.LeadTime)
	if iv.AdID != "ad-hot" || iv.FromMinute != m || !iv.Open() || len(iv.Partitions) != 4 {
		t.Fatalf("split %+v, want ad-hot from minute %d over 4 partitions", iv, m)
	}
	if ms := slices.Sorted(slices.Values(iv.Members)); !slices.Equal(ms, []string{"a0", "a1", "a2", "a3"}) {
		t.Fatalf("sub-keys on %v, want one on each aggregator", iv.Members)
	}
	for i, p := range iv.Partitions {
		if want := "a" + string(rune('0'+p%4)); iv.Members[i] != want {
			t.Fatalf("partition %d listed with %s, want its owner %s", p, iv.Members[i], want)
		}
	}
	tab, _, err := e.store.Load(ctx)
	if err != nil || tab.Version() != 1 {
		t.Fatalf("stored version %d, %v; want 1", tab.Version(), err)
	}
	if out, err := ctl.Step(ctx, fence); err != nil || len(out) != 0 {
		t.Fatalf("Step with the ad split = %+v, %v; want nothing", out, err)
	}

	// Cool, but not for MinSplit yet: kept. Then unsplit.
	cool := observe(e, 0)
	for i := range cool.Partitions {
		if slices.Contains(iv.Partitions, cool.Partitions[i].Partition) {
			cool.Partitions[i].Heavy = []hotkey.AdRate{{AdID: "ad-hot", Rate: e.cfg.UnsplitRate / 5}}
		}
	}
	obs.set(cool)
	e.step(minuteTime(m).Add(e.cfg.MinSplit-time.Second), 1, r1.fol, r2.fol)
	if out, err := ctl.Step(ctx, fence); err != nil || len(out) != 0 {
		t.Fatalf("Step before MinSplit = %+v, %v; want nothing", out, err)
	}
	e.step(minuteTime(m).Add(e.cfg.MinSplit), 1, r1.fol, r2.fol)
	out, err = ctl.Step(ctx, fence)
	if err != nil || len(out) != 1 || out[0].Err != nil || !out[0].Unsplit || out[0].Rate != 4*e.cfg.UnsplitRate/5 {
		t.Fatalf("Step with the ad cool = %+v, %v; want one unsplit at %v/s", out, err, 4*e.cfg.UnsplitRate/5)
	}
	if want := hotkey.EffectiveMinute(e.clk.Now(), e.cfg.MaxSkew, e.cfg.LeadTime); out[0].Interval.ToMinute != want {
		t.Fatalf("unsplit %+v, want it to end at minute %d", out[0].Interval, want)
	}

	// A deposed leader stops at its first write.
	obs.set(observe(e, 3*e.cfg.SplitRate))
	resign()
	out, err = ctl.Step(ctx, fence)
	if !errors.Is(err, hotkey.ErrFenced) || len(out) != 1 || !errors.Is(out[0].Err, hotkey.ErrFenced) {
		t.Fatalf("Step of a deposed leader = %+v, %v; want ErrFenced", out, err)
	}
	if err := ctl.Run(ctx, fence); !errors.Is(err, hotkey.ErrFenced) {
		t.Fatalf("Run of a deposed leader = %v, want ErrFenced", err)
	}
	if tab, _, _ := e.store.Load(ctx); tab.Version() != 2 {
		t.Fatalf("stored version %d after the deposed leader's steps, want 2", tab.Version())
	}
}
