package hotkey_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/router"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

const (
	etcdPrefix  = "/hk"
	redisPrefix = "clickagg"
	wait        = 30 * time.Second
	leaseTTL    = 10 * time.Second
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// hotkeyConfig is the flag defaults with test timings: confirmations every
// 20ms of real time, and a router skew of 5s.
func hotkeyConfig(t *testing.T) hotkey.Config {
	t.Helper()
	var c hotkey.Config
	c.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
	c.MaxStaleness = 2 * time.Second
	c.ConfirmInterval = 20 * time.Millisecond
	c.LeadTime = 20 * time.Second
	c.Safety = 10 * time.Second
	c.AckPollInterval = 10 * time.Millisecond
	c.CheckInterval = 50 * time.Millisecond
	c.MaxSkew = 5 * time.Second
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// env is one cluster's etcd and Redis, and the test's injected clock.
type env struct {
	t     *testing.T
	etcd  *clientv3.Client
	cl    *cluster.Client
	rdb   *redis.Client
	parts *ring.Partitioner
	store *hotkey.Store
	cfg   hotkey.Config
	clk   *testsupport.Clock
}

func newEnv(t *testing.T, partitions int, start time.Time) *env {
	t.Helper()
	return newEnvOn(t, testserver.EtcdClient(t), partitions, start)
}

// newEnvOn is newEnv on an etcd the test started.
func newEnvOn(t *testing.T, etcd *clientv3.Client, partitions int, start time.Time) *env {
	t.Helper()
	parts, err := ring.NewPartitioner(partitions)
	if err != nil {
		t.Fatal(err)
	}
	return &env{
		t:     t,
		etcd:  etcd,
		cl:    cluster.NewClient(etcd, etcdPrefix),
		rdb:   testserver.RedisClient(t),
		parts: parts,
		store: hotkey.NewStore(etcd, etcdPrefix, partitions),
		cfg:   hotkeyConfig(t),
		clk:   testsupport.NewClock(start),
	}
}

// leader wins an election and returns its fence: the condition
// cluster.Leadership checks, its election key at the revision it won with.
// resign ends the leadership.
func leader(t *testing.T, cli *clientv3.Client, name string) (fence clientv3.Cmp, resign func()) {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	// Not the cluster's own election prefix, so that a test can also
	// campaign with cluster.Client for the assignment.
	e := concurrency.NewElection(s, etcdPrefix+"/splits-leader")
	if err := e.Campaign(ctxT(t), name); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resign = func() {
		once.Do(func() {
			_ = e.Resign(context.Background())
			_ = s.Close()
		})
	}
	t.Cleanup(resign)
	return clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev()), resign
}

// run runs fn until the test ends or stop is called, failing the test if
// fn returns an error.
func run(t *testing.T, what string, fn func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", what, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// follower runs a follower of e's table until the test ends.
func (e *env) follower(acker *hotkey.Acker, name string) *hotkey.Follower {
	f := hotkey.NewFollower(e.cfg, e.store, acker, testLogger(e.t).With("follower", name), e.clk.Now)
	run(e.t, "follower "+name, f.Run)
	return f
}

// routerNode is a router as the cli wires it: registered as a member,
// following the split table and acknowledging it on its lease.
type routerNode struct {
	id       string
	reg      *cluster.Registration
	fol      *hotkey.Follower
	r        *router.Router
	stopTick func()
}

func (e *env) startRouter(id string) *routerNode {
	e.t.Helper()
	reg, err := e.cl.Register(ctxT(e.t), cluster.Member{ID: id, Role: cluster.RoleRouter, Addr: "127.0.0.1:1"}, leaseTTL)
	if err != nil {
		e.t.Fatalf("register router %s: %v", id, err)
	}
	e.t.Cleanup(func() { _ = reg.Close(context.Background()) })
	fol := e.follower(&hotkey.Acker{ID: id, Lease: clientv3.LeaseID(reg.Member().Incarnation)}, id)
	var rc router.Config
	rc.RegisterFlags(flag.NewFlagSet(id, flag.ContinueOnError))
	rc.MaxSkew = e.cfg.MaxSkew
	rc.TickInterval = 50 * time.Millisecond
	if err := rc.Validate(); err != nil {
		e.t.Fatal(err)
	}
	r := router.New(rc, id, e.parts, partlog.New(e.rdb, redisPrefix), testLogger(e.t).With("router", id), e.clk.Now, router.WithSplits(fol))
	n := &routerNode{id: id, reg: reg, fol: fol, r: r}
	n.stopTick = run(e.t, "router "+id, r.Run)
	return n
}

// fresh waits until every follower's copy is confirmed at the clock's
// current time and holds at least version.
func (e *env) fresh(version uint64, fs ...*hotkey.Follower) {
	e.t.Helper()
	testserver.Eventually(e.t, wait, func() error {
		for i, f := range fs {
			tab, err := f.Table()
			if err != nil {
				return fmt.Errorf("follower %d: %w", i, err)
			}
			if tab.Version() < version {
				return fmt.Errorf("follower %d holds version %d, want %d", i, tab.Version(), version)
			}
		}
		return nil
	})
}

// click is a valid click event.
func click(id, ad string, at time.Time, country string) *clickaggv1.ClickEvent {
	return &clickaggv1.ClickEvent{
		EventId:   id,
		AdId:      ad,
		ClickTime: timestamppb.New(at),
		UserId:    "user-" + id[len(id)-1:],
		Ip:        "192.0.2.1",
		Country:   country,
	}
}

// logged is one event found in a partition log.
type logged struct {
	partition int
	ev        *clickaggv1.LogEvent
}

// readLogs returns every event in every partition log.
func (e *env) readLogs() []logged {
	e.t.Helper()
	var out []logged
	for p := range e.parts.Partitions() {
		msgs, err := e.rdb.XRange(ctxT(e.t), partlog.Key(redisPrefix, p), "-", "+").Result()
		if err != nil {
			e.t.Fatal(err)
		}
		for _, m := range msgs {
			d, _ := m.Values["d"].(string)
			var le clickaggv1.LogEntry
			if err := proto.Unmarshal([]byte(d), &le); err != nil {
				e.t.Fatalf("entry %s of partition %d: %v", m.ID, p, err)
			}
			for _, ev := range le.GetEvents() {
				out = append(out, logged{p, ev})
			}
		}
	}
	return out
}
