package clustertest

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/clickagg/clickagg/cluster"
)

// testLeaderCandidate: the leader's candidate is the one CampaignAt
// elected, with its address; none once it resigned.
func testLeaderCandidate(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	if got, err := f.Cluster.LeaderCandidate(ctx); err != nil || got != (cluster.Candidate{}) {
		t.Fatalf("LeaderCandidate before any campaign = %+v, %v", got, err)
	}
	l, err := f.Cluster.CampaignAt(ctx, cluster.Candidate{ID: "coord-1", Addr: "127.0.0.1:7"}, TTL)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Cluster.LeaderCandidate(ctx)
	if err != nil || got != (cluster.Candidate{ID: "coord-1", Addr: "127.0.0.1:7"}) {
		t.Fatalf("LeaderCandidate = %+v, %v", got, err)
	}
	if id, err := f.Cluster.Leader(ctx); err != nil || id != "coord-1" {
		t.Fatalf("Leader = %q, %v", id, err)
	}
	if err := l.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Cluster.LeaderCandidate(ctx); err != nil || got != (cluster.Candidate{}) {
		t.Fatalf("LeaderCandidate after resign = %+v, %v", got, err)
	}
}

// testCommitDrainsAndPins: Draining, Pins and Assignment read what the
// leader's commits wrote, each commit at once or not at all; a deposed
// leader's commit changes nothing.
func testCommitDrainsAndPins(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	l := campaign(t, f, "coord")
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	a1 := cluster.Assignment{Version: 1, Owners: []cluster.Owner{{Member: "a", Incarnation: 1, Epoch: 1}}}

	steps := []struct {
		name     string
		u        cluster.Update
		wantErr  error
		draining map[string]time.Time
		pins     map[int]string
		asg      cluster.Assignment
	}{
		{"nothing", cluster.Update{}, nil, map[string]time.Time{}, map[int]string{}, cluster.Assignment{}},
		{"drain and pin with an assignment", cluster.Update{Assignment: &a1, Drain: []string{"b", "c"}, Now: now, Pin: map[int]string{0: "a", 7: "c"}}, nil,
			map[string]time.Time{"b": now, "c": now}, map[int]string{0: "a", 7: "c"}, a1},
		{"undrain one, repin", cluster.Update{Undrain: []string{"c"}, Pin: map[int]string{7: "a"}}, nil,
			map[string]time.Time{"b": now}, map[int]string{0: "a", 7: "a"}, a1},
		{"clear and set pins at once", cluster.Update{ClearPins: true, Pin: map[int]string{1: "a"}}, cluster.ErrInvalid,
			map[string]time.Time{"b": now}, map[int]string{0: "a", 7: "a"}, a1},
		{"bad member", cluster.Update{Drain: []string{"x/y"}}, cluster.ErrInvalid,
			map[string]time.Time{"b": now}, map[int]string{0: "a", 7: "a"}, a1},
		{"clear pins", cluster.Update{ClearPins: true}, nil,
			map[string]time.Time{"b": now}, map[int]string{}, a1},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := l.Commit(ctx, s.u); !errors.Is(err, s.wantErr) || (s.wantErr == nil && err != nil) {
				t.Fatalf("Commit = %v, want %v", err, s.wantErr)
			}
			d, err := f.Cluster.Draining(ctx)
			if err != nil || !reflect.DeepEqual(d, s.draining) {
				t.Fatalf("Draining = %v, %v; want %v", d, err, s.draining)
			}
			p, err := f.Cluster.Pins(ctx)
			if err != nil || !reflect.DeepEqual(p, s.pins) {
				t.Fatalf("Pins = %v, %v; want %v", p, err, s.pins)
			}
			got, err := f.Cluster.Assignment(ctx)
			if err != nil || !reflect.DeepEqual(got, s.asg) {
				t.Fatalf("Assignment = %+v, %v; want %+v", got, err, s.asg)
			}
		})
	}

	// A deposed leader changes nothing.
	if err := l.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(ctx, cluster.Update{Undrain: []string{"b"}}); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("Commit after resign = %v, want ErrNotLeader", err)
	}
	if d, err := f.Cluster.Draining(ctx); err != nil || len(d) != 1 {
		t.Fatalf("Draining after a refused commit = %v, %v", d, err)
	}
}

// testRecordHandoffsKeepsTheNewest: Handoffs reads the leader's records
// oldest first (by epoch, then partition), the newest keep of them; a
// record is replaced or dropped by epoch and partition.
func testRecordHandoffsKeepsTheNewest(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	l := campaign(t, f, "coord")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var all []cluster.Handoff
	// Epochs 9 and 10 sort numerically, not as text.
	for epoch := uint64(8); epoch <= 11; epoch++ {
		for p := range 3 {
			all = append(all, cluster.Handoff{Partition: p, From: "a", To: "b", Epoch: epoch, Planned: p%2 == 0, Stopped: t0.Add(time.Duration(epoch) * time.Second)})
		}
	}
	if err := l.RecordHandoffs(ctx, all[:6], nil, 100); err != nil {
		t.Fatal(err)
	}
	if err := l.RecordHandoffs(ctx, all[6:], nil, 7); err != nil {
		t.Fatal(err)
	}
	got, err := f.Cluster.Handoffs(ctx)
	if err != nil || !reflect.DeepEqual(got, all[5:]) {
		t.Fatalf("Handoffs = %+v, %v; want the newest 7 %+v", got, err, all[5:])
	}
	// Recording the same handoff again replaces it: the serving time.
	h := all[11]
	h.Serving = h.Stopped.Add(1500 * time.Millisecond)
	if err := l.RecordHandoffs(ctx, []cluster.Handoff{h}, nil, 7); err != nil {
		t.Fatal(err)
	}
	got, err = f.Cluster.Handoffs(ctx)
	if err != nil || len(got) != 7 || got[6] != h || got[6].Pause() != 1500*time.Millisecond {
		t.Fatalf("Handoffs after update = %+v, %v; want last %+v", got, err, h)
	}
	// Dropping one, by epoch and partition.
	if err := l.RecordHandoffs(ctx, nil, []cluster.Handoff{{Partition: all[8].Partition, Epoch: all[8].Epoch}}, 7); err != nil {
		t.Fatal(err)
	}
	got, err = f.Cluster.Handoffs(ctx)
	if want := append(append([]cluster.Handoff{}, all[5:8]...), all[9:11]...); err != nil || len(got) != 6 || !reflect.DeepEqual(got[:5], want) {
		t.Fatalf("Handoffs after a drop = %+v, %v; want %+v and the updated last", got, err, want)
	}
	if err := l.Check(ctx); err != nil {
		t.Fatalf("Check while leading = %v", err)
	}
	if err := l.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.RecordHandoffs(ctx, all[:1], nil, 7); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("RecordHandoffs after resign = %v, want ErrNotLeader", err)
	}
	if err := l.Check(ctx); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("Check after resign = %v, want ErrNotLeader", err)
	}
}
