// Package clustertest is the contract suite of the cluster state the
// roles share, through their three narrow interfaces on it:
// aggregator.Cluster, coordinator.Cluster and queryd.Cluster. Each of
// their methods has a case that checks what it returns against what the
// writers wrote: registrations, the leader's commits and handoff records,
// and the batch jobs' records. Every implementation runs Run on its real
// backend (package cluster on an embedded etcd).
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/testserver"
)

// Cluster is the union of aggregator.Cluster, coordinator.Cluster and
// queryd.Cluster. The leader's writes are the methods of the Leadership
// that CampaignAt returns.
type Cluster interface {
	Register(ctx context.Context, m cluster.Member, ttl time.Duration) (*cluster.Registration, error)
	CampaignAt(ctx context.Context, cand cluster.Candidate, ttl time.Duration) (*cluster.Leadership, error)
	Leader(ctx context.Context) (string, error)
	LeaderCandidate(ctx context.Context) (cluster.Candidate, error)
	Members(ctx context.Context, role string) ([]cluster.Member, error)
	WatchMembers(ctx context.Context, role string, fn func([]cluster.Member)) error
	Assignment(ctx context.Context) (cluster.Assignment, error)
	WatchAssignment(ctx context.Context, fn func(cluster.Assignment)) error
	Draining(ctx context.Context) (map[string]time.Time, error)
	Pins(ctx context.Context) (map[int]string, error)
	Handoffs(ctx context.Context) ([]cluster.Handoff, error)
	LastReconcileRun(ctx context.Context) (r cluster.ReconcileRun, ok bool, err error)
	WatchAppliedRevisions(ctx context.Context, fn func([]byte) error) error
}

// Jobs is what the batch jobs write for the roles to read: clickagg
// reconcile its last run, clickagg recalc the applied history revisions.
type Jobs interface {
	PutReconcileRun(ctx context.Context, r cluster.ReconcileRun) error
	AppliedRevisions(ctx context.Context) ([]byte, int64, error)
	PutAppliedRevisions(ctx context.Context, data []byte, mod int64) error
}

// Fixture is one implementation under test, empty: no member, no
// assignment, no leader, no records.
type Fixture struct {
	Cluster Cluster
	Jobs    Jobs
}

// TTL is the lease of the suite's registrations and leaders.
const TTL = 2 * time.Second

// Run runs the contract on fixtures from newFixture, one per subtest.
func Run(t *testing.T, newFixture func(t *testing.T) Fixture) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, f Fixture)
	}{
		{"register and list", testRegisterAndList},
		{"invalid registrations", testRegisterRejectsInvalid},
		{"registering again changes the incarnation", testReRegistration},
		{"watch assignment", testWatchAssignment},
		{"leader", testLeader},
		{"leader candidate", testLeaderCandidate},
		{"watch members", testWatchMembers},
		{"leader's drains, pins and assignment", testCommitDrainsAndPins},
		{"handoffs keep the newest", testRecordHandoffsKeepsTheNewest},
		{"last reconcile run", testReconcileRun},
		{"watch applied revisions", testWatchAppliedRevisions},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newFixture(t)) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func register(t *testing.T, f Fixture, id, role, addr string) *cluster.Registration {
	t.Helper()
	return registerMember(t, f, cluster.Member{ID: id, Role: role, Addr: addr})
}

func registerMember(t *testing.T, f Fixture, m cluster.Member) *cluster.Registration {
	t.Helper()
	r, err := f.Cluster.Register(ctxT(t), m, TTL)
	if err != nil {
		t.Fatalf("register %s: %v", m.ID, err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

// campaign becomes the leader as id, waiting for the current leader to
// go; the leadership is resigned when the test ends.
func campaign(t *testing.T, f Fixture, id string) *cluster.Leadership {
	t.Helper()
	l, err := f.Cluster.CampaignAt(ctxT(t), cluster.Candidate{ID: id}, TTL)
	if err != nil {
		t.Fatalf("campaign %s: %v", id, err)
	}
	t.Cleanup(func() { _ = l.Resign(context.Background()) })
	return l
}

// sameMembers compares members field by field, times by Equal.
func sameMembers(a, b []cluster.Member) bool {
	return slices.EqualFunc(a, b, func(x, y cluster.Member) bool {
		return x.ID == y.ID && x.Role == y.Role && x.Addr == y.Addr && x.Incarnation == y.Incarnation && x.RegisteredAt.Equal(y.RegisteredAt) &&
			x.Version == y.Version && x.HTTPAddr == y.HTTPAddr
	})
}

// testRegisterAndList: every registration is of the member given (its
// version and HTTP address too, for the members that say them), with a
// fresh incarnation and its time; Members lists a role's members (every role's for ""), sorted
// by ID, then role, and refuses an unknown role.
func testRegisterAndList(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	before := time.Now()
	in := []cluster.Member{
		{ID: "b", Role: cluster.RoleAggregator, Addr: "127.0.0.1:2"},
		{ID: "a", Role: cluster.RoleAggregator, Addr: "127.0.0.1:1"},
		{ID: "a", Role: cluster.RoleRouter, Addr: "127.0.0.1:3"},
		{ID: "c", Role: cluster.RoleQueryd, Addr: "127.0.0.1:4", Version: "v1.2.3", HTTPAddr: "127.0.0.1:8084"},
	}
	var regs []*cluster.Registration
	for _, m := range in {
		regs = append(regs, registerMember(t, f, m))
	}
	seen := map[int64]bool{}
	for i, r := range regs {
		m := r.Member()
		if m.ID != in[i].ID || m.Role != in[i].Role || m.Addr != in[i].Addr || m.Version != in[i].Version || m.HTTPAddr != in[i].HTTPAddr {
			t.Fatalf("registered %+v as %+v", in[i], m)
		}
		if m.Incarnation == 0 || seen[m.Incarnation] {
			t.Fatalf("member %+v: incarnation must be fresh", m)
		}
		seen[m.Incarnation] = true
		if m.RegisteredAt.Before(before.Add(-time.Second)) || m.RegisteredAt.After(time.Now().Add(time.Second)) {
			t.Fatalf("member %+v: RegisteredAt not set to now", m)
		}
	}
	for _, tt := range []struct {
		role string
		want []cluster.Member
	}{
		{"", []cluster.Member{regs[1].Member(), regs[2].Member(), regs[0].Member(), regs[3].Member()}},
		{cluster.RoleAggregator, []cluster.Member{regs[1].Member(), regs[0].Member()}},
		{cluster.RoleRouter, []cluster.Member{regs[2].Member()}},
		{cluster.RoleCoordinator, []cluster.Member{}},
	} {
		t.Run("role="+tt.role, func(t *testing.T) {
			got, err := f.Cluster.Members(ctx, tt.role)
			if err != nil {
				t.Fatal(err)
			}
			if !sameMembers(got, tt.want) {
				t.Fatalf("Members(%q) = %+v, want %+v", tt.role, got, tt.want)
			}
		})
	}
	if _, err := f.Cluster.Members(ctx, "bogus"); !errors.Is(err, cluster.ErrInvalid) {
		t.Fatalf("Members(bogus) = %v, want ErrInvalid", err)
	}
}

func testRegisterRejectsInvalid(t *testing.T, f Fixture) {
	for _, tt := range []struct {
		name string
		m    cluster.Member
		ttl  time.Duration
	}{
		{"empty id", cluster.Member{Role: cluster.RoleRouter}, TTL},
		{"slash in id", cluster.Member{ID: "a/b", Role: cluster.RoleRouter}, TTL},
		{"unknown role", cluster.Member{ID: "a", Role: "routers"}, TTL},
		{"short ttl", cluster.Member{ID: "a", Role: cluster.RoleRouter}, time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.Cluster.Register(ctxT(t), tt.m, tt.ttl); !errors.Is(err, cluster.ErrInvalid) {
				t.Fatalf("Register = %v, want ErrInvalid", err)
			}
		})
	}
	ms, err := f.Cluster.Members(ctxT(t), "")
	if err != nil || len(ms) != 0 {
		t.Fatalf("members after refused registrations = %v, %v", ms, err)
	}
}

// testReRegistration: registering an ID again replaces the member with a
// new incarnation; closing the earlier registration leaves the current
// one, closing that removes the member.
func testReRegistration(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	first := register(t, f, "a", cluster.RoleAggregator, "127.0.0.1:1")
	second := register(t, f, "a", cluster.RoleAggregator, "127.0.0.1:9")
	if first.Member().Incarnation == second.Member().Incarnation {
		t.Fatalf("both registrations have incarnation %d", first.Member().Incarnation)
	}
	check := func(what string, want ...cluster.Member) {
		t.Helper()
		ms, err := f.Cluster.Members(ctx, cluster.RoleAggregator)
		if err != nil || !sameMembers(ms, want) {
			t.Fatalf("members %s = %+v, %v; want %+v", what, ms, err, want)
		}
	}
	check("after registering twice", second.Member())
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.Done():
		t.Fatal("second registration lost its lease")
	default:
	}
	check("after closing the first", second.Member())
	if err := second.Close(ctx); err != nil {
		t.Fatal(err)
	}
	check("after closing both")
}

// testWatchAssignment: the watch delivers the assignment at start (none:
// the zero one) and then every committed one, in order, each once.
func testWatchAssignment(t *testing.T, f Fixture) {
	ctx, cancel := context.WithCancel(ctxT(t))
	got := make(chan cluster.Assignment, 16)
	done := make(chan error, 1)
	go func() { done <- f.Cluster.WatchAssignment(ctx, func(a cluster.Assignment) { got <- a }) }()
	next := func(what string, want cluster.Assignment) {
		t.Helper()
		select {
		case a := <-got:
			if !reflect.DeepEqual(a, want) {
				t.Fatalf("%s: delivered %+v, want %+v", what, a, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: nothing delivered", what)
		}
	}
	next("at start", cluster.Assignment{})
	l, err := f.Cluster.CampaignAt(ctx, cluster.Candidate{ID: "coord"}, TTL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Resign(context.Background()) })
	for _, a := range []cluster.Assignment{
		{Version: 1, Owners: []cluster.Owner{{Member: "a", Incarnation: 7, Epoch: 1}, {}}},
		{Version: 2, Owners: []cluster.Owner{{Member: "a", Incarnation: 7, Epoch: 1}, {Member: "b", Incarnation: 9, Epoch: 2}}},
	} {
		if err := l.Commit(ctx, cluster.Update{Assignment: &a}); err != nil {
			t.Fatal(err)
		}
		next(fmt.Sprintf("version %d", a.Version), a)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("WatchAssignment after cancel = %v, want context.Canceled", err)
	}
	select {
	case a := <-got:
		t.Fatalf("delivered %+v more", a)
	default:
	}
}

// testLeader: no leader at first; the first campaigner leads while a
// second one waits; after it resigns, the second leads.
func testLeader(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	leader := func() string {
		t.Helper()
		id, err := f.Cluster.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	if id := leader(); id != "" {
		t.Fatalf("leader before any campaign = %q, want none", id)
	}
	a, err := f.Cluster.CampaignAt(ctx, cluster.Candidate{ID: "coord-a"}, TTL)
	if err != nil {
		t.Fatal(err)
	}
	if id := leader(); id != "coord-a" {
		t.Fatalf("leader = %q, want coord-a", id)
	}
	type won struct {
		l   *cluster.Leadership
		err error
	}
	second := make(chan won, 1)
	go func() {
		l, err := f.Cluster.CampaignAt(ctx, cluster.Candidate{ID: "coord-b"}, TTL)
		second <- won{l, err}
	}()
	if id := leader(); id != "coord-a" {
		t.Fatalf("leader while coord-b campaigns = %q, want coord-a", id)
	}
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	w := <-second
	if w.err != nil {
		t.Fatalf("coord-b's campaign: %v", w.err)
	}
	t.Cleanup(func() { _ = w.l.Resign(context.Background()) })
	testserver.Eventually(t, 10*time.Second, func() error {
		if id := leader(); id != "coord-b" {
			return fmt.Errorf("leader after coord-a resigned = %q, want coord-b", id)
		}
		return nil
	})
}
