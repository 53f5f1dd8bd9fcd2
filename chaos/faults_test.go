package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testserver"
)

// faultCase is one fault of TestFaults. prepare runs before Inject and
// returns during, run while the fault is in force, and after, run once
// the cluster is healthy again; each checks that the fault really
// happened (a process gone, a proxy cutting traffic, a leader changed).
type faultCase struct {
	fault   Fault
	prepare func(t *testing.T, c *Cluster) (during, after func(t *testing.T))
}

// TestFaults starts one cluster and injects each kind of fault in turn,
// checks that it really happened, heals it and waits until the cluster
// is healthy again. One cluster for all: starting one takes the 2 cores
// for about 15 seconds.
func TestFaults(t *testing.T) {
	c := startCluster(t)
	cases := []faultCase{
		{Fault{Kind: KillOne, Targets: []string{"aggregator-1"}}, prepareKill},
		{Fault{Kind: KillSeveral}, prepareKill}, // the default: an aggregator, a router, a coordinator
		{Fault{Kind: Pause, Targets: []string{"aggregator-2"}}, preparePause},
		{Fault{Kind: RedisRestart}, prepareRedisRestart},
		{Fault{Kind: RedisFailover}, prepareRedisFailover},
		{Fault{Kind: EtcdMemberKill}, prepareEtcdKill},
		{Fault{Kind: EtcdLeaderKill}, prepareEtcdKill},
		{Fault{Kind: EtcdUnreachable, Duration: 7 * time.Second}, prepareEtcdUnreachable},
		{Fault{Kind: NetLatency, Targets: []string{"aggregator-3"}, Param: "300ms"}, prepareLatency},
		{Fault{Kind: NetReset, Targets: []string{LinkRedis}}, prepareReset},
		{Fault{Kind: NetOneWay, Targets: []string{LinkEtcd}}, prepareOneWay},
		{Fault{Kind: Rebalance}, prepareRebalance},
		{Fault{Kind: Drain, Targets: []string{"aggregator-3"}}, prepareDrain},
		{Fault{Kind: Split, Targets: []string{"ad-hot"}}, prepareSplit(true)},
		{Fault{Kind: Unsplit, Targets: []string{"ad-hot"}}, prepareSplit(false)},
	}
	var kinds []Kind
	for _, tc := range cases {
		kinds = append(kinds, tc.fault.Kind)
	}
	if !slices.Equal(kinds, Kinds) {
		t.Fatalf("cases of kinds %v, want one of each of %v", kinds, Kinds)
	}
	for _, tc := range cases {
		t.Run(string(tc.fault.Kind), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			during, after := tc.prepare(t, c)
			start := time.Now()
			heal, err := c.Inject(ctx, tc.fault)
			if err != nil {
				t.Fatal(err)
			}
			injected := time.Since(start)
			during(t)
			if d := tc.fault.Duration - time.Since(start); d > 0 {
				time.Sleep(d)
			}
			start = time.Now()
			if err := heal(ctx); err != nil {
				t.Fatal(err)
			}
			healed := time.Since(start)
			// A runner retries a heal that failed: a second one is
			// harmless.
			if err := heal(ctx); err != nil {
				t.Errorf("a second heal: %v", err)
			}
			start = time.Now()
			if err := c.WaitHealthy(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: injected in %v, healed in %v, healthy %v later", tc.fault, injected.Round(time.Millisecond), healed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			after(t)
		})
		if t.Failed() {
			return
		}
	}
	t.Run("crash", func(t *testing.T) { testCrash(t, c) })
	t.Run("undo", func(t *testing.T) { testUndo(t, c) })
}

// testUndo: a fault that fails half way is undone by Inject. Pausing
// router-2 and queryd-2, which is down, pauses router-2, fails on
// queryd-2, and must leave router-2 running.
func testUndo(t *testing.T, c *Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, _ := c.process("router-2")
	q, _ := c.process("queryd-2")
	if err := q.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inject(ctx, Fault{Kind: Pause, Targets: []string{"router-2", "queryd-2"}}); err == nil {
		t.Fatal("pausing a process that is down succeeded")
	} else {
		t.Logf("Inject: %v", err)
	}
	if r.Paused() {
		t.Error("router-2 is left paused")
	}
	if st, err := procState(r.Pid()); err != nil || st == "T" {
		t.Errorf("router-2: state %q (%v), want running again", st, err)
	}
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
}

// testCrash: a process that exits without a fault (here: SIGTERM from
// outside the harness) makes WaitHealthy fail at once, naming it, and
// is fine again after Start.
func testCrash(t *testing.T, c *Cluster) {
	p, err := c.process("router-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(p.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	testserver.Eventually(t, 30*time.Second, func() error {
		if p.Running() {
			return errors.New("router-1 still runs")
		}
		return nil
	})
	err = c.WaitHealthy(ctx)
	if err == nil || !strings.Contains(err.Error(), "router-1 exited on its own") || ctx.Err() != nil {
		t.Fatalf("WaitHealthy with router-1 gone: %v (ctx %v), want its crash at once", err, ctx.Err())
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
}

// prepareKill: the targets are gone (not running, no health answer)
// while the fault lasts, and run with new pids after.
func prepareKill(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	pids := map[string]int{}
	for _, p := range c.Processes() {
		pids[p.Name] = p.Pid()
	}
	var f []string
	during = func(t *testing.T) {
		for n, pid := range pids {
			p, _ := c.process(n)
			if !p.Running() {
				f = append(f, n)
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("%s: kill -0 %d: %v, want ESRCH", n, pid, err)
				}
				if err := healthServing(context.Background(), p.Addr); err == nil {
					t.Errorf("%s answers its health check after SIGKILL", n)
				}
			}
		}
		if len(f) == 0 {
			t.Error("no process was killed")
		}
	}
	after = func(t *testing.T) {
		for _, n := range f {
			p, _ := c.process(n)
			if p.Pid() == pids[n] || p.Pid() == 0 {
				t.Errorf("%s: pid %d after the restart, %d before", n, p.Pid(), pids[n])
			}
		}
	}
	return during, after
}

// preparePause: the target exists but is stopped (state T) and its
// health check runs into its deadline; after, it runs with the same pid.
func preparePause(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	p, err := c.process("aggregator-2")
	if err != nil {
		t.Fatal(err)
	}
	pid := p.Pid()
	during = func(t *testing.T) {
		if st, err := procState(pid); st != "T" {
			t.Errorf("%s: state %q (%v), want T (stopped)", p.Name, st, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := healthServing(ctx, p.Addr); status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("%s: health check %v, want its deadline exceeded", p.Name, err)
		}
	}
	after = func(t *testing.T) {
		if p.Pid() != pid {
			t.Errorf("%s: pid %d after SIGCONT, %d before", p.Name, p.Pid(), pid)
		}
	}
	return during, after
}

// prepareRedisRestart writes a key, acknowledged by a replica too;
// during: the primary's port and proxy refuse; after: the same node is
// still the primary (no failover) with a new pid, and the key is there
// (read from its AOF).
func prepareRedisRestart(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	ctx := context.Background()
	primary, err := c.redis.primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rdb := c.RedisClient()
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Set(ctx, "chaos-test-restart", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.Do(ctx, "WAIT", 1, 5000).Int64(); err != nil || n < 1 {
		t.Fatalf("WAIT: %d replicas, %v", n, err)
	}
	during = func(t *testing.T) {
		if primary.running() {
			t.Errorf("%s still runs", primary.name)
		}
		for _, addr := range []string{primary.addr, primary.proxy} {
			if err := ping(ctx, addr, c.redis.password); err == nil {
				t.Errorf("PING through %s answered: the primary is not down", addr)
			}
		}
	}
	after = func(t *testing.T) {
		now, err := c.redis.primary(ctx)
		if err != nil || now != primary {
			t.Fatalf("primary after the restart %v (%v), want %s: it was failed over", now, err, primary.name)
		}
		cl := c.redis.client(primary)
		defer cl.Close()
		if v, err := cl.Get(ctx, "chaos-test-restart").Result(); v != "v1" {
			t.Errorf("GET after the restart: %q, %v; want v1 from the AOF", v, err)
		}
	}
	return during, after
}

// ping sends AUTH and PING to the Redis server at addr.
func ping(ctx context.Context, addr, password string) error {
	cl := redis.NewClient(&redis.Options{Addr: addr, Password: password, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer cl.Close()
	return cl.Ping(ctx).Err()
}

// prepareRedisFailover: during, the sentinels name another primary;
// after, the old primary is its replica and a write through the failover
// client reaches both.
func prepareRedisFailover(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	ctx := context.Background()
	old, err := c.redis.primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var now *redisNode
	during = func(t *testing.T) {
		if now, err = c.redis.primary(ctx); err != nil || now == old {
			t.Fatalf("primary %v (%v) after the failover, was %s", now, err, old.name)
		}
		t.Logf("failover: %s -> %s", old.name, now.name)
	}
	after = func(t *testing.T) {
		cl := c.redis.client(old)
		defer cl.Close()
		info, err := infoMap(ctx, cl, "replication")
		if err != nil {
			t.Fatal(err)
		}
		if info["role"] != "slave" || info["master_port"] != strings.Split(now.proxy, ":")[1] {
			t.Errorf("%s: role %s of master port %s, want a replica of %s's proxy %s", old.name, info["role"], info["master_port"], now.name, now.proxy)
		}
	}
	return during, after
}

// prepareEtcdKill: during, the killed member refuses, the leader is
// another (a new one when the leader was killed) and a write through the
// proxies succeeds; after, the member is back and agrees on the leader.
func prepareEtcdKill(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	ctx := context.Background()
	leader, err := c.etcdLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	during = func(t *testing.T) {
		var killed []*etcdMember
		for _, m := range c.etcd {
			if !m.Running() {
				killed = append(killed, m)
				if _, err := memberStatus(ctx, m.client); err == nil {
					t.Errorf("%s answers after SIGKILL", m.Name)
				}
			}
		}
		if len(killed) != 1 {
			t.Fatalf("%d members killed, want 1", len(killed))
		}
		now, err := c.etcdLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if killed[0] == leader && now == leader || now == killed[0] {
			t.Errorf("leader %s, killed %s, leader before %s", now.Name, killed[0].Name, leader.Name)
		}
		t.Logf("killed %s; leader %s, before %s", killed[0].Name, now.Name, leader.Name)
		cli := etcdClient(t, c.etcdProxyURLs())
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := cli.Put(cctx, "chaos-test", "x"); err != nil {
			t.Errorf("put through the proxies with one member down: %v", err)
		}
	}
	after = func(t *testing.T) {
		for _, m := range c.etcd {
			if _, err := memberStatus(ctx, m.client); err != nil {
				t.Errorf("%s: %v", m.Name, err)
			}
		}
	}
	return during, after
}

// etcdProxyURLs are the URLs of the etcd proxies, as the processes dial.
func (c *Cluster) etcdProxyURLs() []string {
	var out []string
	for _, m := range c.etcd {
		out = append(out, "http://"+m.proxy)
	}
	return out
}

// etcdClient returns a client of endpoints, closed by the test's cleanup.
func etcdClient(t *testing.T, endpoints []string) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// prepareEtcdUnreachable: during, every proxy refuses connections and a
// client through them fails, while the members answer directly; the
// fault lasts longer than the lease TTL.
func prepareEtcdUnreachable(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	during = func(t *testing.T) {
		for _, m := range c.etcd {
			if conn, err := net.DialTimeout("tcp", m.proxy, time.Second); err == nil {
				conn.Close()
				t.Errorf("%s's proxy %s accepts a connection", m.Name, m.proxy)
			}
			if _, err := memberStatus(context.Background(), m.client); err != nil {
				t.Errorf("%s directly: %v", m.Name, err)
			}
		}
		cli := etcdClient(t, c.etcdProxyURLs())
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := cli.Get(ctx, "chaos-test"); err == nil {
			t.Error("a read through the proxies succeeded")
		}
	}
	return during, func(*testing.T) {}
}

// prepareLatency: a health check through aggregator-3's proxy, and the
// calls of the coordinator and of queryd that reach aggregator-3, take at
// least one round trip of the toxic (2×300ms less jitter).
func prepareLatency(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	p, err := c.process("aggregator-3")
	if err != nil {
		t.Fatal(err)
	}
	during = func(t *testing.T) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := healthServing(ctx, p.Advertise); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 500*time.Millisecond {
			t.Errorf("a health check through the proxy took %v, want at least 2×300ms less jitter", d)
		}
		// Members dial aggregator-3 by its proxy: the coordinator's
		// status (a call to every aggregator) and queryd's count of an
		// ad of aggregator-3's wait for the toxic too.
		a, err := coordinator(t, c).GetAssignment(ctx, &clickaggv1.GetAssignmentRequest{})
		if err != nil {
			t.Fatal(err)
		}
		owned := 0
		for _, p := range a.Partitions {
			if p.Member == "aggregator-3" {
				owned++
			}
		}
		start = time.Now()
		if _, err := coordinator(t, c).GetClusterStatus(ctx, &clickaggv1.GetClusterStatusRequest{Summary: true}); err != nil {
			t.Fatal(err)
		}
		t.Logf("aggregator-3 owns %d partitions; GetClusterStatus took %v", owned, time.Since(start))
		if d := time.Since(start); d < 500*time.Millisecond {
			t.Errorf("GetClusterStatus took %v, want at least 2×300ms less jitter: the coordinator does not reach aggregator-3 through its proxy", d)
		}
		// An ad of a partition aggregator-3 owns, over the current
		// minute: queryd can only ask the owner.
		parts, err := ring.NewPartitioner(c.cfg.Partitions)
		if err != nil {
			t.Fatal(err)
		}
		owner := map[int]string{}
		for _, p := range a.Partitions {
			owner[int(p.Partition)] = p.Member
		}
		ad := ""
		for i := 0; ad == ""; i++ {
			if id := fmt.Sprintf("ad-%d", i); owner[parts.Partition(id)] == "aggregator-3" {
				ad = id
			}
		}
		conn, err := grpcDial(c.QuerydAddrs()[0])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start = time.Now()
		if _, err := clickaggv1.NewQueryServiceClient(conn).GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, LastMinutes: 1}); err != nil {
			t.Fatal(err)
		}
		t.Logf("GetAggregatedCount of %s took %v", ad, time.Since(start))
		if d := time.Since(start); d < 500*time.Millisecond {
			t.Errorf("GetAggregatedCount of %s (aggregator-3's) took %v, want at least 2×300ms less jitter: queryd does not reach aggregator-3 through its proxy", ad, d)
		}
	}
	return during, func(*testing.T) {}
}

// prepareReset: a PING through the primary's proxy fails, directly it
// answers, and a click sent to a router is not acknowledged: the
// router's Redis connection goes through the proxy. After, the click is
// acknowledged.
func prepareReset(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	ctx := context.Background()
	primary, err := c.redis.primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	during = func(t *testing.T) {
		if err := ping(ctx, primary.proxy, c.redis.password); err == nil {
			t.Error("PING through the proxy answered under reset_peer")
		} else {
			t.Logf("PING through the proxy: %v", err)
		}
		if err := ping(ctx, primary.addr, c.redis.password); err != nil {
			t.Errorf("PING directly: %v", err)
		}
		if err := ingestOne(t, c, 3*time.Second); err == nil {
			t.Error("a click was acknowledged while the link to Redis resets every connection")
		}
	}
	after = func(t *testing.T) {
		if err := ping(ctx, primary.proxy, c.redis.password); err != nil {
			t.Errorf("PING through the proxy after heal: %v", err)
		}
		if err := ingestOne(t, c, 30*time.Second); err != nil {
			t.Errorf("a click after heal: %v", err)
		}
	}
	return during, after
}

// prepareOneWay: a connection through an etcd proxy is accepted (the
// link is up) but a request on it is never answered.
func prepareOneWay(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	during = func(t *testing.T) {
		m := c.etcd[0]
		conn, err := net.DialTimeout("tcp", m.proxy, time.Second)
		if err != nil {
			t.Fatalf("%s's proxy refuses: %v, want it open one way", m.Name, err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		var b [64]byte
		if n, err := conn.Read(b[:]); !errors.Is(err, syscall.EAGAIN) && !isTimeout(err) {
			t.Errorf("read through the one-way proxy: %q, %v; want a timeout", b[:n], err)
		}
		if _, err := memberStatus(context.Background(), m.client); err != nil {
			t.Errorf("%s directly: %v", m.Name, err)
		}
	}
	after = func(t *testing.T) {
		cli := etcdClient(t, c.etcdProxyURLs())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cli.Get(ctx, "chaos-test"); err != nil {
			t.Errorf("read through the proxies after heal: %v", err)
		}
	}
	return during, after
}

// ingestOne sends one click to router-1 and returns nil when it is
// acknowledged within timeout.
func ingestOne(t *testing.T, c *Cluster, timeout time.Duration) error {
	conn, err := grpcDial(c.RouterAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ev := &clickaggv1.ClickEvent{EventId: "chaos-test-reset", AdId: "ad-1", ClickTime: timestamppb.Now(),
		UserId: "user-1", Ip: "198.51.100.20", Country: "DE"}
	resp, err := clickaggv1.NewIngestServiceClient(conn).Ingest(ctx, &clickaggv1.IngestRequest{Events: []*clickaggv1.ClickEvent{ev}})
	if err != nil {
		return err
	}
	if resp.Accepted != 1 {
		return fmt.Errorf("accepted %d, rejected %v", resp.Accepted, resp.Rejected)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// coordinator returns a client of the first coordinator that answers.
func coordinator(t *testing.T, c *Cluster) clickaggv1.CoordinatorServiceClient {
	conn, err := grpcDial(c.CoordinatorAddrs()[1])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return clickaggv1.NewCoordinatorServiceClient(conn)
}

// prepareRebalance: the call is made (it succeeds; Inject fails
// otherwise) and the assignment is whole after.
func prepareRebalance(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	return func(*testing.T) {}, func(t *testing.T) {
		a, err := coordinator(t, c).GetAssignment(context.Background(), &clickaggv1.GetAssignmentRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Partitions) != c.cfg.Partitions {
			t.Errorf("%d partitions assigned, want %d", len(a.Partitions), c.cfg.Partitions)
		}
	}
}

// prepareDrain: during, aggregator-3 is draining and, eventually, owns
// no partition; after the heal, no drain is in force.
func prepareDrain(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	cl := coordinator(t, c)
	during = func(t *testing.T) {
		err := waitFor(context.Background(), time.Minute, func() error {
			a, err := cl.GetAssignment(context.Background(), &clickaggv1.GetAssignmentRequest{})
			if err != nil {
				return err
			}
			if len(a.Draining) != 1 || a.Draining[0].Member != "aggregator-3" {
				return fmt.Errorf("draining %v, want aggregator-3", a.Draining)
			}
			for _, p := range a.Partitions {
				if p.Member == "aggregator-3" {
					return fmt.Errorf("aggregator-3 still owns partition %d", p.Partition)
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	after = func(t *testing.T) {
		a, err := cl.GetAssignment(context.Background(), &clickaggv1.GetAssignmentRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Draining) != 0 {
			t.Errorf("draining %v after heal, want none", a.Draining)
		}
	}
	return during, after
}

// prepareSplit: during, the coordinators list ad-hot's split as in force
// (split) or ended (unsplit).
func prepareSplit(split bool) func(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
	return func(t *testing.T, c *Cluster) (during, after func(t *testing.T)) {
		during = func(t *testing.T) {
			hk, err := coordinator(t, c).GetHotKeys(context.Background(), &clickaggv1.GetHotKeysRequest{})
			if err != nil {
				t.Fatal(err)
			}
			inForce := false
			for _, s := range hk.Splits {
				if s.AdId == "ad-hot" && s.To == nil {
					inForce = true
				}
			}
			if inForce != split {
				t.Errorf("ad-hot split in force: %v, want %v (splits %v)", inForce, split, hk.Splits)
			}
		}
		return during, func(*testing.T) {}
	}
}

func TestFaultString(t *testing.T) {
	for _, tc := range []struct {
		f    Fault
		want string
	}{
		{Fault{At: 12 * time.Second, Kind: Pause, Targets: []string{"aggregator-2"}, Duration: 7 * time.Second}, "+12.0s pause aggregator-2 for 7s"},
		{Fault{At: 1500 * time.Millisecond, Kind: NetLatency, Targets: []string{LinkRedis}, Duration: 3 * time.Second, Param: "200ms"}, "+1.5s net-latency redis 200ms for 3s"},
		{Fault{Kind: KillSeveral, Targets: []string{"router-1", "aggregator-3"}}, "+0.0s kill-several router-1,aggregator-3"},
		{Fault{At: time.Minute, Kind: Rebalance}, "+60.0s rebalance"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.f, got, tc.want)
		}
	}
}
