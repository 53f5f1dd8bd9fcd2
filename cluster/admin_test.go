package cluster

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/testserver"
)

func TestCommitDrainsAndPins(t *testing.T) {
	c := NewClient(testserver.EtcdClient(t), "/t")
	ctx := ctxT(t)
	l := campaign(t, c, "coord")
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	a1 := Assignment{Version: 1, Owners: []Owner{{Member: "a", Incarnation: 1, Epoch: 1}}}

	steps := []struct {
		name     string
		u        Update
		wantErr  error
		draining map[string]time.Time
		pins     map[int]string
		asg      Assignment
	}{
		{"nothing", Update{}, nil, map[string]time.Time{}, map[int]string{}, Assignment{}},
		{"drain and pin with an assignment", Update{Assignment: &a1, Drain: []string{"b", "c"}, Now: now, Pin: map[int]string{0: "a", 7: "c"}}, nil,
			map[string]time.Time{"b": now, "c": now}, map[int]string{0: "a", 7: "c"}, a1},
		{"undrain one, repin", Update{Undrain: []string{"c"}, Pin: map[int]string{7: "a"}}, nil,
			map[string]time.Time{"b": now}, map[int]string{0: "a", 7: "a"}, a1},
		{"clear and set pins at once", Update{ClearPins: true, Pin: map[int]string{1: "a"}}, ErrInvalid,
			map[string]time.Time{"b": now}, map[int]string{0: "a", 7: "a"}, a1},
		{"bad member", Update{Drain: []string{"x/y"}}, ErrInvalid,
			map[string]time.Time{"b": now}, map[int]string{0: "a", 7: "a"}, a1},
		{"clear pins", Update{ClearPins: true}, nil,
			map[string]time.Time{"b": now}, map[int]string{}, a1},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := l.Commit(ctx, s.u); !errors.Is(err, s.wantErr) || (s.wantErr == nil && err != nil) {
				t.Fatalf("Commit = %v, want %v", err, s.wantErr)
			}
			d, err := c.Draining(ctx)
			if err != nil || !reflect.DeepEqual(d, s.draining) {
				t.Fatalf("Draining = %v, %v; want %v", d, err, s.draining)
			}
			p, err := c.Pins(ctx)
			if err != nil || !reflect.DeepEqual(p, s.pins) {
				t.Fatalf("Pins = %v, %v; want %v", p, err, s.pins)
			}
			got, err := c.Assignment(ctx)
			if err != nil || !reflect.DeepEqual(got, s.asg) {
				t.Fatalf("Assignment = %+v, %v; want %+v", got, err, s.asg)
			}
		})
	}

	// A deposed leader changes nothing.
	if err := l.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(ctx, Update{Undrain: []string{"b"}}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Commit after resign = %v, want ErrNotLeader", err)
	}
	if d, err := c.Draining(ctx); err != nil || len(d) != 1 {
		t.Fatalf("Draining after a refused commit = %v, %v", d, err)
	}
}

func TestRecordHandoffsKeepsTheNewest(t *testing.T) {
	c := NewClient(testserver.EtcdClient(t), "/t")
	ctx := ctxT(t)
	l := campaign(t, c, "coord")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var all []Handoff
	// Epochs 9 and 10 sort numerically, not as text.
	for epoch := uint64(8); epoch <= 11; epoch++ {
		for p := range 3 {
			all = append(all, Handoff{Partition: p, From: "a", To: "b", Epoch: epoch, Planned: p%2 == 0, Stopped: t0.Add(time.Duration(epoch) * time.Second)})
		}
	}
	if err := l.RecordHandoffs(ctx, all[:6], nil, 100); err != nil {
		t.Fatal(err)
	}
	if err := l.RecordHandoffs(ctx, all[6:], nil, 7); err != nil {
		t.Fatal(err)
	}
	got, err := c.Handoffs(ctx)
	if err != nil || !reflect.DeepEqual(got, all[5:]) {
		t.Fatalf("Handoffs = %+v, %v; want the newest 7 %+v", got, err, all[5:])
	}
	// Recording the same handoff again replaces it: the serving time.
	h := all[11]
	h.Serving = h.Stopped.Add(1500 * time.Millisecond)
	if err := l.RecordHandoffs(ctx, []Handoff{h}, nil, 7); err != nil {
		t.Fatal(err)
	}
	got, err = c.Handoffs(ctx)
	if err != nil || len(got) != 7 || got[6] != h || got[6].Pause() != 1500*time.Millisecond {
		t.Fatalf("Handoffs after update = %+v, %v; want last %+v", got, err, h)
	}
	// Dropping one, by epoch and partition.
	if err := l.RecordHandoffs(ctx, nil, []Handoff{{Partition: all[8].Partition, Epoch: all[8].Epoch}}, 7); err != nil {
		t.Fatal(err)
	}
	got, err = c.Handoffs(ctx)
	if want := append(append([]Handoff{}, all[5:8]...), all[9:11]...); err != nil || len(got) != 6 || !reflect.DeepEqual(got[:5], want) {
		t.Fatalf("Handoffs after a drop = %+v, %v; want %+v and the updated last", got, err, want)
	}
	if p := (Handoff{Stopped: t0, Serving: t0.Add(-time.Second)}).Pause(); p != 0 {
		t.Fatalf("pause with serving before stopped = %v, want 0", p)
	}
	if err := l.Check(ctx); err != nil {
		t.Fatalf("Check while leading = %v", err)
	}
	if err := l.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.RecordHandoffs(ctx, all[:1], nil, 7); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("RecordHandoffs after resign = %v, want ErrNotLeader", err)
	}
	if err := l.Check(ctx); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Check after resign = %v, want ErrNotLeader", err)
	}
}

func TestLeaderCandidate(t *testing.T) {
	c := NewClient(testserver.EtcdClient(t), "/t")
	l, err := c.CampaignAt(ctxT(t), Candidate{ID: "coord-1", Addr: "127.0.0.1:7"}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Resign(context.Background()) })
	got, err := c.LeaderCandidate(ctxT(t))
	if err != nil || got != (Candidate{ID: "coord-1", Addr: "127.0.0.1:7"}) {
		t.Fatalf("LeaderCandidate = %+v, %v", got, err)
	}
	if id, err := c.Leader(ctxT(t)); err != nil || id != "coord-1" {
		t.Fatalf("Leader = %q, %v", id, err)
	}
	if got := decodeCandidate([]byte("old-style")); got != (Candidate{ID: "old-style"}) {
		t.Fatalf("bare id decodes as %+v", got)
	}
}

func TestRegistrationValidUntilAndLeaving(t *testing.T) {
	c := NewClient(testserver.EtcdClient(t), "/t")
	ctx := ctxT(t)
	before := time.Now()
	r := register(t, c, "a", RoleAggregator, "127.0.0.1:1")
	if v := r.ValidUntil(); v.Before(before.Add(ttl)) || v.After(time.Now().Add(ttl)) {
		t.Fatalf("ValidUntil right after Register = %v, want about now+%v", v, ttl)
	}
	// Refreshes move it forward.
	first := r.ValidUntil()
	testserver.Eventually(t, 10*time.Second, func() error {
		if !r.ValidUntil().After(first) {
			return errors.New("not refreshed yet")
		}
		return nil
	})

	if err := r.SetLeaving(ctx); err != nil {
		t.Fatal(err)
	}
	ms, err := c.Members(ctx, RoleAggregator)
	if err != nil || len(ms) != 1 || !ms[0].Leaving || ms[0].Incarnation != r.Member().Incarnation || !r.Member().Leaving {
		t.Fatalf("members after SetLeaving = %+v, %v", ms, err)
	}
	// The key keeps its lease: revoking it removes the member.
	if _, err := c.cli.Revoke(ctx, clientv3.LeaseID(r.Member().Incarnation)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after revoke")
	}
	if !r.ValidUntil().IsZero() {
		t.Fatalf("ValidUntil after the lease was lost = %v, want zero", r.ValidUntil())
	}
	if err := r.SetLeaving(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("SetLeaving after the lease was lost = %v, want ErrLeaseLost", err)
	}
	ms, err = c.Members(ctx, RoleAggregator)
	if err != nil || len(ms) != 0 {
		t.Fatalf("members = %v, %v; want none", ms, err)
	}
}
