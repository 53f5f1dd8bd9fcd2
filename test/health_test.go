package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/testserver"
)

// wantHealth polls until p's health service reports st.
func wantHealth(t *testing.T, p *proc, service string, st healthpb.HealthCheckResponse_ServingStatus, timeout time.Duration) {
	t.Helper()
	testserver.Eventually(t, timeout, func() error {
		got, err := p.health(service)
		if err != nil {
			return err
		}
		if got != st {
			return fmt.Errorf("%s health %q = %v, want %v", p.name, service, got, st)
		}
		return nil
	})
}

// smallWorkload ingests a few thousand clicks over the last minutes and
// returns their ground truth.
func smallWorkload(t *testing.T, c *testCluster, seed uint64) *truth {
	t.Helper()
	start := time.Now().Truncate(time.Minute).Add(-5 * time.Minute)
	w := newWorkload(seed, 5_000, 300, 3, start, 0.05, 0, 0, 100)
	ingest(t, w, c.ingestClients(), nil)
	return &truth{clicks: w.unique}
}

// owners returns the members that own partitions, by partition count.
func owners(t *testing.T, c *testCluster) map[string]int {
	t.Helper()
	cli := c.etcdClient()
	a, err := cluster.NewClient(cli, cluster.DefaultPrefix).Assignment(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, o := range a.Owners {
		out[o.Member]++
	}
	return out
}

// TestAggregatorWithUnreachableRedisGetsNoPartitions starts an aggregator
// whose -redis.addr has nobody listening beside a healthy one: it reports
// NOT_SERVING (and live), never registers, so every partition is served by
// the healthy one, and every count is exact.
func TestAggregatorWithUnreachableRedisGetsNoPartitions(t *testing.T) {
	c := newTestCluster(t, clusterSpec{partitions: 8, coordinators: 1, routers: 1, aggregators: 1,
		routerFlags: []string{"-router.idle-watermark-lag=1h"}})
	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	bad := startLive(t, c.dir, "aggregator-bad", append(c.flags("-target=aggregator", nil), fmt.Sprintf("-redis.addr=127.0.0.1:%d", port))...)
	tr := smallWorkload(t, c, 7)
	waitCaughtUp(t, c.coordinatorClient(), 8, time.Minute)
	checkEveryAdMinute(t, c.queryClient(), tr)
	if got := owners(t, c); got["aggregator-1"] != 8 {
		t.Errorf("owners %v, want aggregator-1 to own all 8 partitions", got)
	}
	for _, svc := range []string{"", "clickagg.v1.AggregatorService"} {
		if st, err := bad.health(svc); err != nil || st != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("aggregator-bad health %q = %v, %v; want NOT_SERVING", svc, st, err)
		}
	}
	if st, err := bad.health("liveness"); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("aggregator-bad liveness = %v, %v; want SERVING", st, err)
	}
	testserver.Eventually(t, 30*time.Second, func() error {
		if bad.logCount(`msg="verify redis identity"`) == 0 {
			return errors.New("aggregator-bad logged no failed verification")
		}
		return nil
	})
}

// TestHealthFollowsRedis stops the cluster's redis-server under running
// processes: the router and the aggregator report NOT_SERVING while it is
// down and stay live, and SERVING again once it is back.
func TestHealthFollowsRedis(t *testing.T) {
	c := newTestCluster(t, clusterSpec{partitions: 4, coordinators: 1, routers: 1, aggregators: 1,
		commonFlags: []string{"-health.check-interval=200ms"}})
	port := c.redis.Addr[strings.LastIndexByte(c.redis.Addr, ':')+1:]
	procs := []*proc{c.routers[0], c.aggregators[0], c.queryd}
	for _, p := range procs {
		wantHealth(t, p, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	}
	c.redis.Stop()
	for _, p := range procs {
		wantHealth(t, p, "", healthpb.HealthCheckResponse_NOT_SERVING, 30*time.Second)
		wantHealth(t, p, "liveness", healthpb.HealthCheckResponse_SERVING, time.Second)
	}
	var n int
	fmt.Sscan(port, &n)
	rs, err := localserver.StartRedis(context.Background(), localserver.RedisConfig{Dir: filepath.Join(c.dir, "redis"), Port: n, AppendFsync: "everysec"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Stop() })
	for _, p := range procs {
		wantHealth(t, p, "", healthpb.HealthCheckResponse_SERVING, time.Minute)
	}
}

// TestWrongRedisIsRefused starts an aggregator and a router against a
// second, empty redis-server: each exits with an error that names the
// wrong Redis, and never registers.
func TestWrongRedisIsRefused(t *testing.T) {
	c := newTestCluster(t, clusterSpec{partitions: 4, coordinators: 1, aggregators: 1})
	other, err := localserver.StartRedis(context.Background(), localserver.RedisConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Stop() })
	for _, role := range []string{"aggregator", "router"} {
		port, err := localserver.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		args := append(c.flags("-target="+role, nil), "-redis.addr="+other.Addr, "-redis.password-file="+other.PasswordFile, fmt.Sprintf("-grpc.addr=127.0.0.1:%d", port), "-http.addr=", "-id=wrong-"+role)
		code, out := runToExit(t, time.Minute, args...)
		if code == 0 {
			t.Errorf("%s exited with status 0, want a non-zero status", role)
		}
		if !strings.Contains(out, "not the cluster's redis") {
			t.Errorf("%s output does not say why:\n%s", role, out)
		}
	}
	if got := owners(t, c); got["wrong-aggregator"] != 0 || got["aggregator-1"] != 4 {
		t.Errorf("owners %v, want aggregator-1 to own all 4", got)
	}
}

// proxy forwards loopback TCP connections to a backend until cut.
type proxy struct {
	lis     net.Listener
	backend string
	mu      sync.Mutex
	cut     bool
	conns   []net.Conn
}

func startProxy(t *testing.T, backend string) *proxy {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, backend: backend}
	t.Cleanup(func() { lis.Close(); p.setCut(true) })
	go func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			cut := p.cut
			p.mu.Unlock()
			if cut {
				in.Close()
				continue
			}
			out, err := net.Dial("tcp", backend)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return p
}

// setCut refuses (true) or forwards (false) connections; cutting closes
// the open ones.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// TestAggregatorGivesPartitionsBack cuts one aggregator off Redis while it
// serves: within -aggregator.claim-timeout it marks itself unhealthy, the
// coordinator moves its partitions to the other one, and every count is
// exact. Reconnected, it asks for partitions again and gets some.
func TestAggregatorGivesPartitionsBack(t *testing.T) {
	c := newTestCluster(t, clusterSpec{partitions: 8, coordinators: 1, routers: 1, aggregators: 1,
		routerFlags: []string{"-router.idle-watermark-lag=1h"}})
	px := startProxy(t, c.redis.Addr)
	flags := append(c.flags("-target=aggregator", nil), "-redis.addr="+px.lis.Addr().String(), "-aggregator.claim-timeout=3s")
	a2 := startProc(t, c.dir, "aggregator-2", flags...)
	testserver.Eventually(t, time.Minute, func() error {
		if got := owners(t, c); got["aggregator-2"] == 0 {
			return fmt.Errorf("owners %v: aggregator-2 owns nothing yet", got)
		}
		return nil
	})
	waitCaughtUp(t, c.coordinatorClient(), 8, time.Minute)
	px.setCut(true)
	wantHealth(t, a2, "", healthpb.HealthCheckResponse_NOT_SERVING, 30*time.Second)
	testserver.Eventually(t, time.Minute, func() error {
		if got := owners(t, c); got["aggregator-1"] != 8 {
			return fmt.Errorf("owners %v, want aggregator-1 to own all 8", got)
		}
		return nil
	})
	tr := smallWorkload(t, c, 11)
	waitCaughtUp(t, c.coordinatorClient(), 8, time.Minute)
	checkEveryAdMinute(t, c.queryClient(), tr)

	px.setCut(false)
	testserver.Eventually(t, time.Minute, func() error {
		if got := owners(t, c); got["aggregator-2"] == 0 {
			return fmt.Errorf("owners %v: aggregator-2 got nothing back", got)
		}
		return nil
	})
	wantHealth(t, a2, "", healthpb.HealthCheckResponse_SERVING, time.Minute)
	waitCaughtUp(t, c.coordinatorClient(), 8, time.Minute)
	checkEveryAdMinute(t, c.queryClient(), tr)
}
