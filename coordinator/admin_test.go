package coordinator

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

// movesOfProto returns the moves of an admin response as Moves.
func movesOfProto(ms []*clickaggv1.PartitionMove) []Move {
	out := make([]Move, len(ms))
	for i, m := range ms {
		out[i] = Move{Partition: int(m.GetPartition()), From: m.GetFromMember(), To: m.GetToMember()}
	}
	return out
}

// diffMoves is what a plan from prev to next moves.
func diffMoves(prev, next cluster.Assignment) []Move {
	var out []Move
	for p := range next.Owners {
		if prev.Owners[p].Member != next.Owners[p].Member || prev.Owners[p].Incarnation != next.Owners[p].Incarnation {
			out = append(out, Move{Partition: p, From: prev.Owners[p].Member, To: next.Owners[p].Member})
		}
	}
	return out
}

// ownedWorld starts a world of parts partitions, the aggregators ids and
// a coordinator, and waits until those aggregators own every partition.
// It returns the aggregators by id.
func ownedWorld(t *testing.T, parts int, ids ...string) (*world, *coordNode, map[string]*aggNode) {
	t.Helper()
	w := newWorld(t, parts)
	nodes := map[string]*aggNode{}
	for _, id := range ids {
		nodes[id] = w.startAggregator(id, aggOpts{})
	}
	co := w.startCoordinator("coord-1", "", ttl)
	w.waitOwners(true, ids...)
	return w, co, nodes
}

// wantMoves checks an admin response's moves, and that it was (or was not)
// a dry run.
func wantMoves(t *testing.T, what string, got []*clickaggv1.PartitionMove, dry, wantDry bool, want []Move) {
	t.Helper()
	if dry != wantDry {
		t.Errorf("%s: dry_run = %v, want %v", what, dry, wantDry)
	}
	if g := movesOfProto(got); !slices.Equal(g, want) {
		t.Errorf("%s: moves %v, want %v", what, g, want)
	}
}

// TestAdminRefusals: every mutation refuses what it cannot do, dry run or
// not, with a code and a message that says why, and changes nothing.
func TestAdminRefusals(t *testing.T) {
	const parts = 16
	w, co, _ := ownedWorld(t, parts, "a", "b", "c")
	if _, err := co.client.DrainMember(ctxT(t), &clickaggv1.DrainMemberRequest{Member: "b"}); err != nil {
		t.Fatal(err)
	}
	before := w.waitOwners(true, "a", "c")
	owner0 := before.Owners[0].Member

	move := func(p int32, to string, dry bool) func() error {
		return func() error {
			_, err := co.client.MovePartition(ctxT(t), &clickaggv1.MovePartitionRequest{Partition: p, ToMember: to, DryRun: dry})
			return err
		}
	}
	drain := func(m string, cancel, dry bool) func() error {
		return func() error {
			_, err := co.client.DrainMember(ctxT(t), &clickaggv1.DrainMemberRequest{Member: m, Cancel: cancel, DryRun: dry})
			return err
		}
	}
	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"move: partition out of range", move(parts, "a", false), codes.InvalidArgument, "partition 16"},
		{"move: negative partition", move(-1, "a", true), codes.InvalidArgument, "partition -1"},
		{"move: no member", move(0, "", false), codes.InvalidArgument, "to_member"},
		{"move: unknown member", move(0, "zz", false), codes.NotFound, `"zz"`},
		{"move: unknown member, dry run", move(0, "zz", true), codes.NotFound, `"zz"`},
		{"move: draining member", move(0, "b", false), codes.FailedPrecondition, "b is draining"},
		{"move: draining member, dry run", move(0, "b", true), codes.FailedPrecondition, "b is draining"},
		{"move: to its owner", move(0, owner0, false), codes.FailedPrecondition, "already owns partition 0"},
		{"drain: no member", drain("", false, false), codes.InvalidArgument, "member"},
		{"drain: unknown member", drain("zz", false, false), codes.NotFound, `"zz"`},
		{"drain: unknown member, dry run", drain("zz", false, true), codes.NotFound, `"zz"`},
		{"cancel drain: unknown member", drain("zz", true, false), codes.NotFound, `"zz"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.msg) {
				t.Fatalf("got %v, want %v mentioning %q", err, tt.code, tt.msg)
			}
		})
	}

	// The last member that can own partitions cannot be drained.
	if _, err := co.client.DrainMember(ctxT(t), &clickaggv1.DrainMemberRequest{Member: "a"}); err != nil {
		t.Fatal(err)
	}
	w.waitOwners(true, "c")
	for _, dry := range []bool{true, false} {
		err := drain("c", false, dry)()
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "only aggregator") {
			t.Fatalf("drain of the last member (dry run %v) = %v, want FAILED_PRECONDITION", dry, err)
		}
	}
	after := w.assignment()
	d, err := w.cl.Draining(ctxT(t))
	if err != nil || len(d) != 2 || d["c"] != (time.Time{}) {
		t.Fatalf("draining after the refusals = %v, %v; want a and b", d, err)
	}
	if pins, err := w.cl.Pins(ctxT(t)); err != nil || len(pins) != 0 {
		t.Fatalf("pins after the refusals = %v, %v; want none", pins, err)
	}
	if after.Version != before.Version+1 {
		t.Fatalf("assignment went from version %d to %d; only a's drain should have written", before.Version, after.Version)
	}
}

// TestAdminOperationsUnderTraffic moves, drains, undrains and rebalances
// while clicks flow: each dry run is the exact plan the call then carries
// out, pins and drains hold across membership changes, every move is a live
// handoff with its pause reported, and every count is exact.
func TestAdminOperationsUnderTraffic(t *testing.T) {
	const parts = 16
	w, co, _ := ownedWorld(t, parts, "a", "b", "c")
	r := w.startRouter()
	v0 := w.waitSettled()
	stats0 := co.c.Stats()
	r.waitSent(1000)
	var made []Move // every move an admin call made, with the epoch below
	var epochs []uint64
	record := func(ms []*clickaggv1.PartitionMove) {
		a := w.assignment()
		for _, m := range movesOfProto(ms) {
			made = append(made, m)
			epochs = append(epochs, a.Owners[m.Partition].Epoch)
		}
	}

	// MovePartition: the dry run changes nothing; the move is exactly it.
	// The partition is one of a's that the ring would not give c even
	// with d, so that the Rebalance at the end has a pin to undo.
	ring4, err := ring.Assign([]string{"a", "b", "c", "d"}, parts, ring.DefaultLoad)
	if err != nil {
		t.Fatal(err)
	}
	p := -1
	for q, o := range v0.Owners {
		if o.Member == "a" && ring4[q] != "c" {
			p = q
			break
		}
	}
	if p < 0 {
		t.Fatalf("no partition of a that the ring keeps off c: %v, %v", v0.Owners, ring4)
	}
	req := &clickaggv1.MovePartitionRequest{Partition: int32(p), ToMember: "c", DryRun: true}
	dry, err := co.client.MovePartition(ctxT(t), req)
	if err != nil {
		t.Fatal(err)
	}
	wantMoves(t, "move dry run", dry.GetMoves(), dry.GetDryRun(), true, []Move{{p, "a", "c"}})
	if v := w.assignment(); v.Version != v0.Version {
		t.Fatalf("dry run wrote version %d", v.Version)
	}
	req.DryRun = false
	moved, err := co.client.MovePartition(ctxT(t), req)
	if err != nil {
		t.Fatal(err)
	}
	wantMoves(t, "move", moved.GetMoves(), moved.GetDryRun(), false, movesOfProto(dry.GetMoves()))
	record(moved.GetMoves())
	v1 := w.assignment()
	if got := diffMoves(v0, v1); v1.Version != v0.Version+1 || !slices.Equal(got, []Move{{p, "a", "c"}}) || v1.Owners[p].Epoch != v1.Version {
		t.Fatalf("after the move: version %d (from %d), moves %v, epoch %d", v1.Version, v0.Version, got, v1.Owners[p].Epoch)
	}
	if pins, err := w.cl.Pins(ctxT(t)); err != nil || !maps.Equal(pins, map[int]string{p: "c"}) {
		t.Fatalf("pins = %v, %v; want %d on c", pins, err, p)
	}
	wantShown(t, co, "after the move", map[int]string{p: "c"}, nil)
	r.waitSent(1000)

	// A join moves partitions to d, but not the pinned one.
	w.startAggregator("d", aggOpts{})
	v2 := w.waitOwners(true, "a", "b", "c", "d")
	if v2.Owners[p].Member != "c" {
		t.Fatalf("after d joined, pinned partition %d is on %s", p, v2.Owners[p].Member)
	}
	w.waitSettled()
	r.waitSent(1000)

	// Drain c: the dry run is the plan; c ends up with nothing, the pinned
	// partition included.
	dr := &clickaggv1.DrainMemberRequest{Member: "c", DryRun: true}
	dryDrain, err := co.client.DrainMember(ctxT(t), dr)
	if err != nil {
		t.Fatal(err)
	}
	if len(dryDrain.GetMoves()) < counts(v2)["c"] {
		t.Fatalf("drain plan %v moves fewer than c's %d partitions", dryDrain.GetMoves(), counts(v2)["c"])
	}
	dr.DryRun = false
	drained, err := co.client.DrainMember(ctxT(t), dr)
	if err != nil {
		t.Fatal(err)
	}
	wantMoves(t, "drain", drained.GetMoves(), drained.GetDryRun(), false, movesOfProto(dryDrain.GetMoves()))
	record(drained.GetMoves())
	v3 := w.assignment()
	if got := diffMoves(v2, v3); !slices.Equal(got, movesOfProto(drained.GetMoves())) || counts(v3)["c"] != 0 {
		t.Fatalf("drain: assignment moves %v, c owns %d", got, counts(v3)["c"])
	}
	if d, err := w.cl.Draining(ctxT(t)); err != nil || len(d) != 1 || d["c"].IsZero() {
		t.Fatalf("draining = %v, %v; want c", d, err)
	}
	wantShown(t, co, "during the drain", map[int]string{p: "c"}, []string{"c"})
	w.waitSettled()
	r.waitSent(1000)

	// Cancel the drain: c gets partitions again, the pinned one first.
	dr = &clickaggv1.DrainMemberRequest{Member: "c", Cancel: true, DryRun: true}
	dryCancel, err := co.client.DrainMember(ctxT(t), dr)
	if err != nil {
		t.Fatal(err)
	}
	dr.DryRun = false
	undrained, err := co.client.DrainMember(ctxT(t), dr)
	if err != nil {
		t.Fatal(err)
	}
	wantMoves(t, "cancel drain", undrained.GetMoves(), undrained.GetDryRun(), false, movesOfProto(dryCancel.GetMoves()))
	record(undrained.GetMoves())
	v4 := w.assignment()
	if v4.Owners[p].Member != "c" || !slices.Equal(diffMoves(v3, v4), movesOfProto(undrained.GetMoves())) {
		t.Fatalf("after the cancel: partition %d on %s, moves %v", p, v4.Owners[p].Member, diffMoves(v3, v4))
	}
	if d, err := w.cl.Draining(ctxT(t)); err != nil || len(d) != 0 {
		t.Fatalf("draining after cancel = %v, %v", d, err)
	}
	w.waitSettled()
	r.waitSent(1000)

	// Rebalance drops the pin: the plan is exactly the way back to the ring.
	var wantRebalance []Move
	for q, o := range v4.Owners {
		if o.Member != ring4[q] {
			wantRebalance = append(wantRebalance, Move{q, o.Member, ring4[q]})
		}
	}
	if len(wantRebalance) == 0 {
		t.Fatal("nothing to rebalance: the test needs a pin that the ring undoes")
	}
	dryReb, err := co.client.Rebalance(ctxT(t), &clickaggv1.RebalanceRequest{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	wantMoves(t, "rebalance dry run", dryReb.GetMoves(), dryReb.GetDryRun(), true, wantRebalance)
	reb, err := co.client.Rebalance(ctxT(t), &clickaggv1.RebalanceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wantMoves(t, "rebalance", reb.GetMoves(), reb.GetDryRun(), false, wantRebalance)
	record(reb.GetMoves())
	if pins, err := w.cl.Pins(ctxT(t)); err != nil || len(pins) != 0 {
		t.Fatalf("pins after rebalance = %v, %v", pins, err)
	}
	wantShown(t, co, "after the rebalance", map[int]string{}, nil)
	again, err := co.client.Rebalance(ctxT(t), &clickaggv1.RebalanceRequest{DryRun: true})
	if err != nil || len(again.GetMoves()) != 0 {
		t.Fatalf("rebalance after a rebalance plans %v, %v; want nothing", again.GetMoves(), err)
	}
	r.waitSent(1000)

	w.checkExact(r)

	// Every move is a live handoff: released by its owner, then served by
	// the new one, with the pause in between reported.
	hs := w.handoffs(v0.Version)
	type key struct {
		p     int
		epoch uint64
	}
	byKey := map[key]cluster.Handoff{}
	var maxPause time.Duration
	for _, h := range hs {
		byKey[key{h.Partition, h.Epoch}] = h
		if !h.Planned {
			t.Errorf("handoff %+v is unplanned; every old owner was alive", h)
		}
		maxPause = max(maxPause, h.Pause())
	}
	for i, m := range made {
		h, ok := byKey[key{m.Partition, epochs[i]}]
		if !ok || h.From != m.From || h.To != m.To {
			t.Errorf("move %+v at epoch %d: recorded as %+v", m, epochs[i], h)
		}
	}
	st := co.c.Stats()
	if st.FailedReleases != stats0.FailedReleases || st.UnplannedHandoffs != stats0.UnplannedHandoffs || st.PlannedHandoffs-stats0.PlannedHandoffs != int64(len(hs)) {
		t.Errorf("stats %+v (at start %+v) for %d recorded handoffs", st, stats0, len(hs))
	}
	t.Logf("%d live handoffs (%d by admin calls), longest pause %v", len(hs), len(made), maxPause)

	// GetHandoffs reports them, with their pauses.
	resp, err := co.client.GetHandoffs(ctxT(t), &clickaggv1.GetHandoffsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, h := range resp.GetHandoffs() {
		want, ok := byKey[key{int(h.GetPartition()), h.GetEpoch()}]
		if !ok {
			continue
		}
		n++
		if h.GetFromMember() != want.From || h.GetToMember() != want.To || !h.GetPlanned() || !h.GetStopped().AsTime().Equal(want.Stopped) ||
			!h.GetServing().AsTime().Equal(want.Serving) || h.GetPause().AsDuration() != want.Pause() {
			t.Errorf("GetHandoffs reports %v, want %+v", h, want)
		}
	}
	if n != len(hs) {
		t.Errorf("GetHandoffs reports %d of the %d handoffs", n, len(hs))
	}
}

// TestScaleOutAndInUnderTraffic grows the aggregators 2 → 5 (three joining
// at once) and shrinks them 5 → 3 by graceful shutdowns while clicks flow:
// with 5 the most loaded owns at most 1.25 times the mean, the shutdowns
// hand their partitions over live, and every count is exact.
func TestScaleOutAndInUnderTraffic(t *testing.T) {
	const parts = 64 // the default
	w, co, nodes := ownedWorld(t, parts, "a", "b")
	r := w.startRouter()
	v0 := w.waitSettled()
	r.waitSent(2000)

	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, id := range []string{"c", "d", "e"} {
		wg.Go(func() {
			n := w.startAggregator(id, aggOpts{})
			mu.Lock()
			nodes[id] = n
			mu.Unlock()
		})
	}
	wg.Wait()
	five := w.waitRing("a", "b", "c", "d", "e")
	mean := float64(parts) / 5
	for id, n := range counts(five) {
		if float64(n) > 1.25*mean {
			t.Errorf("%s owns %d partitions, above 1.25 × the mean %.1f", id, n, mean)
		}
	}
	t.Logf("partitions per aggregator with 5: %v", counts(five))
	w.waitSettled()
	out := w.handoffs(v0.Version)
	// In waves: no new owner loads more than moveWave partitions at once.
	type step struct {
		to    string
		epoch uint64
	}
	perStep, perOwner := map[step]int{}, map[string]int{}
	for _, h := range out {
		perStep[step{h.To, h.Epoch}]++
		perOwner[h.To]++
	}
	for s, n := range perStep {
		if n > moveWave {
			t.Errorf("%s took %d partitions at epoch %d, more than %d at once", s.to, n, s.epoch, moveWave)
		}
	}
	if slices.Max(slices.Collect(maps.Values(perOwner))) <= moveWave {
		t.Fatalf("handoffs per new owner %v: the test needs one that takes more than a wave", perOwner)
	}
	r.waitSent(2000)

	// Graceful shutdowns, one after the other, as a rolling scale-in does.
	stats0 := co.c.Stats()
	v1 := w.assignment()
	nodes["d"].shutdown()
	w.waitRing("a", "b", "c", "e")
	w.waitSettled()
	r.waitSent(1000)
	nodes["e"].shutdown()
	three := w.waitRing("a", "b", "c")
	w.waitSettled()
	r.waitSent(1000)
	w.checkExact(r)

	in := w.handoffs(v1.Version)
	if len(in) < counts(five)["d"]+counts(five)["e"] {
		t.Errorf("%d handoffs for the scale-in; d and e owned %d", len(in), counts(five)["d"]+counts(five)["e"])
	}
	for _, h := range in {
		if !h.Planned {
			t.Errorf("scale-in handoff %+v is unplanned; the leaving owners handed over live", h)
		}
	}
	if st := co.c.Stats(); st.FailedReleases != stats0.FailedReleases || st.UnplannedHandoffs != stats0.UnplannedHandoffs {
		t.Errorf("stats %+v (before the scale-in %+v)", st, stats0)
	}
	for _, id := range []string{"d", "e"} {
		if st := nodes[id].a.Stats(); st.FencedWrites != 0 || st.SnapshotErrors != 0 {
			t.Errorf("%s stats %+v: a graceful handoff writes nothing the next owner refuses", id, st)
		}
	}
	t.Logf("partitions per aggregator with 3: %v", counts(three))
	t.Logf("scale-out: %d handoffs, pauses %v", len(out), pauses(out))
	t.Logf("scale-in: %d handoffs, pauses %v", len(in), pauses(in))
}

// pauses summarizes the pauses of hs: median, 99th percentile, largest.
func pauses(hs []cluster.Handoff) string {
	if len(hs) == 0 {
		return "none"
	}
	ds := make([]time.Duration, len(hs))
	for i, h := range hs {
		ds[i] = h.Pause()
	}
	slices.Sort(ds)
	return fmt.Sprintf("p50 %v p99 %v max %v", ds[len(ds)/2], ds[(len(ds)*99)/100], ds[len(ds)-1])
}

// TestFollowerForwardsMutations: a follower forwards mutations (dry runs
// included) to the leader, answers reads itself, and refuses a forwarded
// call instead of forwarding it again.
func TestFollowerForwardsMutations(t *testing.T) {
	w := newWorld(t, 8)
	w.startAggregator("a", aggOpts{})
	w.startAggregator("b", aggOpts{})
	leader := w.startCoordinator("coord-1", "", ttl)
	w.waitLeader("coord-1")
	follower := w.startCoordinator("coord-2", "", ttl)
	v0 := w.waitOwners(true, "a", "b")
	w.waitSettled()
	p := 0
	from := v0.Owners[p].Member
	to := map[string]string{"a": "b", "b": "a"}[from]

	dry, err := follower.client.MovePartition(ctxT(t), &clickaggv1.MovePartitionRequest{Partition: int32(p), ToMember: to, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	wantMoves(t, "forwarded dry run", dry.GetMoves(), dry.GetDryRun(), true, []Move{{p, from, to}})
	moved, err := follower.client.MovePartition(ctxT(t), &clickaggv1.MovePartitionRequest{Partition: int32(p), ToMember: to})
	if err != nil {
		t.Fatal(err)
	}
	wantMoves(t, "forwarded move", moved.GetMoves(), moved.GetDryRun(), false, []Move{{p, from, to}})
	if v := w.assignment(); v.Owners[p].Member != to || v.Version != v0.Version+1 {
		t.Fatalf("after the forwarded move: partition %d on %s at version %d", p, v.Owners[p].Member, v.Version)
	}
	if st := leader.c.Stats(); st.PlannedHandoffs == 0 {
		t.Errorf("leader stats %+v: the leader did not execute the move", st)
	}
	if st := follower.c.Stats(); st != (Stats{}) {
		t.Errorf("follower stats %+v: the follower executed something", st)
	}
	// Refusals come back through the forward unchanged.
	_, err = follower.client.DrainMember(ctxT(t), &clickaggv1.DrainMemberRequest{Member: "zz"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("forwarded drain of an unknown member = %v, want NOT_FOUND", err)
	}

	// A call already forwarded once is not forwarded again.
	ctx := metadata.AppendToOutgoingContext(ctxT(t), forwardedBy, "coord-x")
	_, err = follower.client.Rebalance(ctx, &clickaggv1.RebalanceRequest{DryRun: true})
	if msg := status.Convert(err).Message(); status.Code(err) != codes.FailedPrecondition || !strings.Contains(msg, `"coord-1"`) || !strings.Contains(msg, leader.addr) {
		t.Fatalf("forwarded call at a follower = %v, want FAILED_PRECONDITION naming coord-1 at %s", err, leader.addr)
	}

	// Reads are the follower's own: the same answers as the leader's.
	w.handoffs(v0.Version)
	fh, err := follower.client.GetHandoffs(ctxT(t), &clickaggv1.GetHandoffsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	lh, err := leader.client.GetHandoffs(ctxT(t), &clickaggv1.GetHandoffsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(lh, fh); d != "" || len(fh.GetHandoffs()) == 0 {
		t.Fatalf("follower's handoffs differ from the leader's (-leader +follower):\n%s", d)
	}
}

// TestForwardToStoppedLeader: a leader that is stopped (its connections
// frozen as by SIGSTOP: open and silent, its election key kept) makes a
// forwarded mutation fail within -coordinator.forward-timeout with
// DEADLINE_EXCEEDED naming the leader, instead of waiting as long as the
// caller does; once it runs again, forwards reach it again.
func TestForwardToStoppedLeader(t *testing.T) {
	e := newEnv(t)
	const forwardTimeout = time.Second
	cfg := Config{Load: ring.DefaultLoad, SessionTTL: ttl, StatusTimeout: 2 * time.Second, ReleaseTimeout: 2 * time.Second, ForwardTimeout: forwardTimeout}
	start := func(id string, via func(addr string) string) clickaggv1.CoordinatorServiceClient {
		lis := testserver.Listen(t)
		c := New(cfg, cluster.Candidate{ID: id, Addr: via(lis.Addr().String())}, e.client(), 8, e.dial, coordLogger(t, id))
		client := serveCoordinator(t, lis, c)
		runCoordinator(t, id, c)
		return client
	}
	var leader *testserver.Proxy
	start("coord-1", func(addr string) string { leader = testserver.NewProxy(t, addr); return leader.Addr() })
	e.waitLeader("coord-1")
	follower := start("coord-2", func(addr string) string { return addr })

	drain := func() error {
		_, err := follower.DrainMember(ctxT(t), &clickaggv1.DrainMemberRequest{Member: "zz"})
		return err
	}
	// The leader's refusal comes back: the forward reached it.
	if err := drain(); status.Code(err) != codes.NotFound {
		t.Fatalf("forwarded drain of an unknown member = %v, want NOT_FOUND from the leader", err)
	}

	leader.Freeze()
	// Thawed before the cleanups: a gRPC server does not stop while a
	// connection of its holds unsent bytes.
	defer leader.Thaw()
	began := time.Now()
	err := drain()
	took := time.Since(began)
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(msg, `leader coord-1 at `+leader.Addr()) || !strings.Contains(msg, "-coordinator.forward-timeout") {
		t.Fatalf("forward to a stopped leader = %v, want DEADLINE_EXCEEDED naming coord-1 at %s and the flag", err, leader.Addr())
	}
	// The caller's own deadline is 30s: only the forward timeout can
	// have ended the call this early (a generous bound, not a timing).
	if took < forwardTimeout || took > 15*time.Second {
		t.Fatalf("forward to a stopped leader took %v, want about %v", took, forwardTimeout)
	}
	t.Logf("forward to a stopped leader failed after %v: %s", took, msg)

	leader.Thaw()
	testserver.Eventually(t, wait, func() error {
		if err := drain(); status.Code(err) != codes.NotFound {
			return fmt.Errorf("forwarded drain after the leader resumed = %v, want NOT_FOUND", err)
		}
		return nil
	})
}

// TestGetLoad: per-partition rates and lag as the owners report them, and
// their sums per member, with the draining flag; with every other member
// draining or gone, a drained member owns partitions again rather than
// leaving them unserved.
func TestGetLoad(t *testing.T) {
	const parts = 8
	w := newWorld(t, parts)
	t0 := time.Unix(time.Now().Unix(), 0)
	fixed := func() time.Time { return t0 }
	a := w.startAggregator("a", aggOpts{now: fixed})
	w.startAggregator("b", aggOpts{now: fixed})
	co := w.startCoordinator("coord-1", "", ttl)
	w.waitOwners(true, "a", "b")
	if _, err := co.client.DrainMember(ctxT(t), &clickaggv1.DrainMemberRequest{Member: "b"}); err != nil {
		t.Fatal(err)
	}
	w.waitOwners(true, "a")
	w.waitSettled()

	// Clicks, all applied at t0 by the fixed clocks: each partition's rate
	// is its number of events (over the one second it has been held).
	r := &router{w: w, stop: make(chan struct{}), done: make(chan struct{}), events: map[string]*clickaggv1.LogEvent{}, last: map[int]string{}, rng: testsupport.NewRand(7), base: t0.Unix()/60 - 120}
	sent := map[int]float64{}
	for i := range 30 {
		var evs []*clickaggv1.LogEvent
		for j := range 20 {
			ad := fmt.Sprintf("ad-%d", r.rnd(25))
			evs = append(evs, &clickaggv1.LogEvent{EventId: fmt.Sprintf("ev-%d-%d", i, j), AdId: ad, ClickTimeMs: r.base * 60_000})
			sent[w.part.Partition(ad)]++
		}
		if err := r.send(evs); err != nil {
			t.Fatal(err)
		}
	}
	testserver.Eventually(t, wait, func() error {
		_, err := w.served(r.last)
		return err
	})
	resp, err := co.client.GetLoad(ctxT(t), &clickaggv1.GetLoadRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &clickaggv1.GetLoadResponse{Members: []*clickaggv1.MemberLoad{
		{Member: "a", Partitions: parts, EventsPerSecond: 600},
		{Member: "b", Draining: true},
	}}
	for p := range parts {
		want.Partitions = append(want.Partitions, &clickaggv1.PartitionLoad{Partition: int32(p), Member: "a", EventsPerSecond: sent[p]})
	}
	if d := diff(want, resp); d != "" {
		t.Fatalf("GetLoad (-want +got):\n%s", d)
	}

	// a goes: b, draining, is the only one left and takes everything.
	a.stop()
	w.waitOwners(true, "b")
	w.waitSettled()
	resp, err = co.client.GetLoad(ctxT(t), &clickaggv1.GetLoadRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetMembers()) != 1 || resp.GetMembers()[0].GetPartitions() != parts || !resp.GetMembers()[0].GetDraining() || len(resp.GetUnavailable()) != 0 {
		t.Fatalf("GetLoad with a gone: %v", resp)
	}
}

// wantShown checks that GetAssignment shows an operator exactly these pins
// and drains.
func wantShown(t *testing.T, co *coordNode, when string, pins map[int]string, draining []string) {
	t.Helper()
	a, err := co.client.GetAssignment(ctxT(t), &clickaggv1.GetAssignmentRequest{})
	if err != nil {
		t.Fatalf("%s: GetAssignment: %v", when, err)
	}
	shown := map[int]string{}
	for _, pa := range a.GetPartitions() {
		if pa.GetPinnedTo() != "" {
			shown[int(pa.GetPartition())] = pa.GetPinnedTo()
		}
	}
	var members []string
	for _, d := range a.GetDraining() {
		if d.GetSince().AsTime().IsZero() || d.GetSince().AsTime().After(time.Now()) {
			t.Errorf("%s: drain of %s since %v", when, d.GetMember(), d.GetSince().AsTime())
		}
		members = append(members, d.GetMember())
	}
	if !maps.Equal(shown, pins) || !slices.Equal(members, draining) {
		t.Fatalf("%s: GetAssignment shows pins %v and drains %v, want %v and %v", when, shown, members, pins, draining)
	}
}
