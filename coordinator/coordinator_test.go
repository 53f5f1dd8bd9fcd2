package coordinator

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

const (
	ttl  = 2 * time.Second
	wait = 20 * time.Second
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConfig(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.Load != ring.DefaultLoad {
		t.Fatalf("default load %v, want %v", c.Load, ring.DefaultLoad)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Usage == "" {
			t.Errorf("flag -%s has no help text", f.Name)
		}
	})
	good := c
	tests := []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"defaults", func(*Config) {}, true},
		{"load 1", func(c *Config) { c.Load = 1 }, false},
		{"load NaN", func(c *Config) { c.Load = math.NaN() }, false},
		{"load 2", func(c *Config) { c.Load = 2 }, true},
		{"session ttl 1s", func(c *Config) { c.SessionTTL = time.Second }, false},
		{"session ttl 2.5s", func(c *Config) { c.SessionTTL = 2500 * time.Millisecond }, false},
		{"zero status timeout", func(c *Config) { c.StatusTimeout = 0 }, false},
		{"zero release timeout", func(c *Config) { c.ReleaseTimeout = 0 }, false},
		{"negative join delay", func(c *Config) { c.JoinDelay = -time.Second }, false},
		{"join delay 0", func(c *Config) { c.JoinDelay = 0 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.change(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// env is an embedded etcd with the cluster state of one test.
type env struct {
	t        *testing.T
	endpoint string
	cl       *cluster.Client

	mu    sync.Mutex
	conns []*grpc.ClientConn
}

func newEnv(t *testing.T) *env {
	e := testserver.Etcd(t)
	en := &env{t: t, endpoint: e.Endpoint}
	en.cl = en.client()
	t.Cleanup(func() {
		en.mu.Lock()
		defer en.mu.Unlock()
		for _, c := range en.conns {
			_ = c.Close()
		}
	})
	return en
}

// client returns a cluster client on its own etcd connection, as a separate
// process would have.
func (e *env) client() *cluster.Client {
	return cluster.NewClient(e.etcd(), "/t")
}

func (e *env) etcd() *clientv3.Client {
	return testserver.NewEtcdClient(e.t, e.endpoint)
}

func (e *env) dial(addr string) (grpc.ClientConnInterface, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.conns = append(e.conns, conn)
	return conn, nil
}

func (e *env) register(id, addr string) *cluster.Registration {
	e.t.Helper()
	r, err := e.cl.Register(ctxT(e.t), cluster.Member{ID: id, Role: cluster.RoleAggregator, Addr: addr}, ttl)
	if err != nil {
		e.t.Fatalf("register %s: %v", id, err)
	}
	e.t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

// start runs a coordinator until stop (or the test's end); stop returns
// Run's error.
func (e *env) start(id string, partitions int) (*Coordinator, func() error) {
	return e.startOn(e.etcd(), id, partitions)
}

// startOn is start on the given etcd connection.
func (e *env) startOn(etcd *clientv3.Client, id string, partitions int, opts ...Option) (*Coordinator, func() error) {
	cfg := Config{Load: ring.DefaultLoad, SessionTTL: ttl, StatusTimeout: 2 * time.Second, ReleaseTimeout: 2 * time.Second}
	c := New(cfg, cluster.Candidate{ID: id}, cluster.NewClient(etcd, "/t"), partitions, e.dial, coordLogger(e.t, id), opts...)
	return c, runCoordinator(e.t, id, c)
}

// coordLogger is a coordinator's log, in the test's output.
func coordLogger(t *testing.T, id string) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil)).With("coordinator", id)
}

// runCoordinator runs c until stop or the test's end; stop returns Run's
// error, and an error left at the test's end fails the test.
func runCoordinator(t *testing.T, id string, c *Coordinator) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("coordinator %s: Run = %v", id, err)
		}
	})
	return stop
}

// serveCoordinator serves c's admin API on lis until the test's end and
// returns a client of it. Called before runCoordinator, its cleanup runs
// after the coordinator has stopped.
func serveCoordinator(t *testing.T, lis net.Listener, c *Coordinator) clickaggv1.CoordinatorServiceClient {
	t.Helper()
	conn := testserver.ServeGRPC(t, lis, func(gs *grpc.Server) {
		clickaggv1.RegisterCoordinatorServiceServer(gs, NewServer(c))
	})
	return clickaggv1.NewCoordinatorServiceClient(conn)
}

// waitVersion waits for the stored assignment to reach version v exactly.
func (e *env) waitVersion(v uint64) cluster.Assignment {
	e.t.Helper()
	var a cluster.Assignment
	testserver.Eventually(e.t, wait, func() error {
		var err error
		if a, err = e.cl.Assignment(ctxT(e.t)); err != nil {
			return err
		}
		if a.Version != v {
			return fmt.Errorf("assignment version %d, want %d", a.Version, v)
		}
		return nil
	})
	return a
}

func (e *env) waitLeader(id string) {
	e.t.Helper()
	testserver.Eventually(e.t, wait, func() error {
		got, err := e.cl.Leader(ctxT(e.t))
		if err != nil {
			return err
		}
		if got != id {
			return fmt.Errorf("leader %q, want %q", got, id)
		}
		return nil
	})
}

// checkOwners checks that a places the partitions exactly as ring.Assign
// does over regs, with their incarnations, within the bounded load.
func checkOwners(t *testing.T, a cluster.Assignment, partitions int, regs ...*cluster.Registration) {
	t.Helper()
	inc := map[string]int64{}
	var ids []string
	for _, r := range regs {
		inc[r.Member().ID] = r.Member().Incarnation
		ids = append(ids, r.Member().ID)
	}
	want, err := ring.Assign(ids, partitions, ring.DefaultLoad)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Owners) != partitions {
		t.Fatalf("assignment has %d owners, want %d", len(a.Owners), partitions)
	}
	count := map[string]int{}
	for p, o := range a.Owners {
		if o.Member != want[p] || o.Incarnation != inc[want[p]] {
			t.Fatalf("partition %d owned by %s@%d, want %s@%d", p, o.Member, o.Incarnation, want[p], inc[want[p]])
		}
		count[o.Member]++
	}
	limit := int(math.Ceil(float64(partitions) / float64(len(ids)) * ring.DefaultLoad))
	for id, n := range count {
		if n > limit {
			t.Fatalf("%s owns %d partitions, above the bound %d", id, n, limit)
		}
	}
}

// checkEpochs checks the epoch rule between two consecutive assignments: a
// partition whose owner (ID and incarnation) stayed keeps its epoch, any
// other gets next's version. It returns the partitions that moved.
func checkEpochs(t *testing.T, prev, next cluster.Assignment) []int {
	t.Helper()
	if next.Version != prev.Version+1 {
		t.Fatalf("version went %d → %d, want +1", prev.Version, next.Version)
	}
	var moved []int
	for p, o := range next.Owners {
		old := prev.Owners[p]
		if o.Member == old.Member && o.Incarnation == old.Incarnation {
			if o.Epoch != old.Epoch {
				t.Fatalf("partition %d kept owner %s but its epoch went %d → %d", p, o.Member, old.Epoch, o.Epoch)
			}
			continue
		}
		if o.Epoch != next.Version || o.Epoch <= old.Epoch {
			t.Fatalf("partition %d moved %s@%d → %s@%d with epoch %d → %d, want %d", p, old.Member, old.Incarnation, o.Member, o.Incarnation, old.Epoch, o.Epoch, next.Version)
		}
		moved = append(moved, p)
	}
	return moved
}

func TestAssignsWithinBoundedLoad(t *testing.T) {
	const parts = 24
	e := newEnv(t)
	a, b, c := e.register("a", "127.0.0.1:1"), e.register("b", "127.0.0.1:2"), e.register("c", "127.0.0.1:3")
	e.start("coord-1", parts)
	got := e.waitVersion(1)
	checkOwners(t, got, parts, a, b, c)
	for p, o := range got.Owners {
		if o.Epoch != 1 {
			t.Fatalf("partition %d epoch %d, want 1", p, o.Epoch)
		}
	}
}

func TestMembershipChangesMoveAndFence(t *testing.T) {
	const parts = 24
	e := newEnv(t)
	a, b, c := e.register("a", "127.0.0.1:1"), e.register("b", "127.0.0.1:2"), e.register("c", "127.0.0.1:3")
	e.start("coord-1", parts)
	v1 := e.waitVersion(1)

	// b's registration ends: its partitions go to a and c at epoch 2, and
	// the partitions that stay put keep epoch 1.
	if err := b.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	v2 := e.waitVersion(2)
	checkOwners(t, v2, parts, a, c)
	moved := checkEpochs(t, v1, v2)
	bs := 0
	for p, o := range v1.Owners {
		if o.Member == "b" {
			bs++
			if v2.Owners[p].Epoch != 2 {
				t.Fatalf("b's partition %d has epoch %d after b left, want 2", p, v2.Owners[p].Epoch)
			}
		}
	}
	if bs == 0 || len(moved) < bs {
		t.Fatalf("b owned %d partitions, %d moved", bs, len(moved))
	}

	// a restarts: a new incarnation under the same ID. Its partitions stay
	// with a but their epochs rise, so the old life's writes are fenced.
	a2 := e.register("a", "127.0.0.1:11")
	v3 := e.waitVersion(3)
	checkOwners(t, v3, parts, a2, c)
	moved = checkEpochs(t, v2, v3)
	var wantMoved []int
	for p, o := range v2.Owners {
		if o.Member == "a" {
			wantMoved = append(wantMoved, p)
		}
	}
	if !reflect.DeepEqual(moved, wantMoved) {
		t.Fatalf("partitions with a new epoch %v, want a's %v", moved, wantMoved)
	}

	// Closing a's old life deletes nothing (the key belongs to the new
	// lease), so the next change is exactly one version later.
	if err := a.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	d := e.register("d", "127.0.0.1:4")
	v4 := e.waitVersion(4)
	checkOwners(t, v4, parts, a2, c, d)
	checkEpochs(t, v3, v4)
}

func TestNoAggregatorsLeavesPartitionsUnassigned(t *testing.T) {
	const parts = 4
	e := newEnv(t)
	e.start("coord-1", parts)
	v1 := e.waitVersion(1)
	if want := uniform(1, parts, cluster.Owner{}); !reflect.DeepEqual(v1, want) {
		t.Fatalf("assignment %+v, want %+v", v1, want)
	}
	a := e.register("a", "127.0.0.1:1")
	v2 := e.waitVersion(2)
	if want := uniform(2, parts, cluster.Owner{Member: "a", Incarnation: a.Member().Incarnation, Epoch: 2}); !reflect.DeepEqual(v2, want) {
		t.Fatalf("assignment %+v, want %+v", v2, want)
	}
	if err := a.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	v3 := e.waitVersion(3)
	if want := uniform(3, parts, cluster.Owner{Epoch: 3}); !reflect.DeepEqual(v3, want) {
		t.Fatalf("assignment %+v, want %+v", v3, want)
	}
}

func TestFailoverKeepsVersionsAndEpochsRising(t *testing.T) {
	const parts = 16
	e := newEnv(t)
	a, b, c := e.register("a", "127.0.0.1:1"), e.register("b", "127.0.0.1:2"), e.register("c", "127.0.0.1:3")
	_, stop1 := e.start("coord-1", parts)
	e.waitLeader("coord-1")
	e.waitVersion(1)
	coord2etcd := e.etcd()
	e.startOn(coord2etcd, "coord-2", parts)
	if err := c.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	v2 := e.waitVersion(2)

	// The leader's process ends: the follower takes over and continues from
	// version 2; a follower that started over would write version 1 again.
	if err := stop1(); err != nil {
		t.Fatalf("coord-1 Run = %v", err)
	}
	e.waitLeader("coord-2")
	d := e.register("d", "127.0.0.1:4")
	v3 := e.waitVersion(3)
	checkOwners(t, v3, parts, a, b, d)
	if moved := checkEpochs(t, v2, v3); len(moved) == 0 {
		t.Fatal("no partition moved to d")
	}

	// coord-2's process dies without resigning (its etcd connection goes
	// away): after its session lease expires coord-3 leads, again
	// continuing from the stored versions.
	e.start("coord-3", parts)
	if err := coord2etcd.Close(); err != nil {
		t.Fatal(err)
	}
	e.waitLeader("coord-3")
	if err := b.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	v4 := e.waitVersion(4)
	checkOwners(t, v4, parts, a, d)
	checkEpochs(t, v3, v4)
}

func TestRunRefusesAssignmentOfOtherPartitionCount(t *testing.T) {
	e := newEnv(t)
	e.register("a", "127.0.0.1:1")
	_, stop := e.start("coord-1", 8)
	e.waitVersion(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	c := New(Config{Load: ring.DefaultLoad, SessionTTL: ttl, StatusTimeout: time.Second, ReleaseTimeout: time.Second}, cluster.Candidate{ID: "coord-2"}, e.client(), 16, e.dial, slog.New(slog.NewTextHandler(t.Output(), nil)))
	err := c.Run(ctxT(t))
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run over an 8-partition assignment with 16 partitions = %v, want a refusal", err)
	}
}

// TestJoinsWaitForMore: aggregators that join are planned together after
// JoinDelay, or at once with a loss; a lost owner does not wait.
func TestJoinsWaitForMore(t *testing.T) {
	const parts = 12
	e := newEnv(t)
	a := e.register("a", "127.0.0.1:1")
	cfg := Config{Load: ring.DefaultLoad, SessionTTL: ttl, StatusTimeout: time.Second, ReleaseTimeout: time.Second, JoinDelay: time.Minute}
	c := New(cfg, cluster.Candidate{ID: "coord-1"}, e.client(), parts, e.dial, slog.New(slog.NewTextHandler(t.Output(), nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	v1 := e.waitVersion(1)
	checkOwners(t, v1, parts, a)
	b, d := e.register("b", "127.0.0.1:2"), e.register("d", "127.0.0.1:4")

	// The leader has seen b and d (its plan moves partitions to them) but
	// has written nothing: the joins wait.
	cl := coordinatorClient(t, c)
	testserver.Eventually(t, wait, func() error {
		resp, err := cl.Rebalance(ctxT(t), &clickaggv1.RebalanceRequest{DryRun: true})
		if err != nil {
			return err
		}
		to := map[string]bool{}
		for _, m := range resp.GetMoves() {
			to[m.GetToMember()] = true
		}
		if !to["b"] || !to["d"] {
			return fmt.Errorf("plan %v does not move to b and d yet", resp.GetMoves())
		}
		return nil
	})
	if got, err := e.cl.Assignment(ctxT(t)); err != nil || got.Version != 1 {
		t.Fatalf("assignment version %d, %v while joins wait; want 1", got.Version, err)
	}

	// a goes: one plan for the loss and both joins.
	if err := a.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	v2 := e.waitVersion(2)
	checkOwners(t, v2, parts, b, d)
}

// TestMaxIDLength: WithMaxIDLength, the routers' -router.max-id-length,
// bounds the ads SplitKey accepts (0: the routers' default); a negative
// one stops Run before any I/O.
func TestMaxIDLength(t *testing.T) {
	cfg := Config{Load: ring.DefaultLoad, SessionTTL: ttl, StatusTimeout: time.Second, ReleaseTimeout: time.Second}
	self := cluster.Candidate{ID: "coord-1"}
	for _, tt := range []struct {
		max, ad int // bytes
		ok      bool
	}{{8, 8, true}, {8, 9, false}, {0, 128, true}, {0, 129, false}} {
		c := New(cfg, self, nil, 16, nil, nil, WithMaxIDLength(tt.max))
		if err := c.validAdID(strings.Repeat("x", tt.ad)); (err == nil) != tt.ok {
			t.Errorf("max %d, %d-byte ad_id: %v, want ok=%v", tt.max, tt.ad, err, tt.ok)
		}
	}
	err := New(cfg, self, nil, 16, nil, nil, WithMaxIDLength(-1)).Run(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "-router.max-id-length -1: ") {
		t.Errorf("Run with -router.max-id-length -1 = %v, want an error naming the flag", err)
	}
}
