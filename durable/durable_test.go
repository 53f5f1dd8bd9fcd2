package durable_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/durable"
	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

// backend is a Redis whose every primary has one replica.
type backend struct {
	rdb redis.UniversalClient
	// replica returns the replica of the primary that holds key.
	replica func(t *testing.T, key string) *localserver.Redis
	// primary returns a client to the primary that holds key.
	primary func(t *testing.T, key string) *redis.Client
	// flush empties every primary's script cache.
	flush func(t *testing.T)
}

// single is one primary with one replica.
func single(t *testing.T) backend {
	c, r := testserver.RedisClientWithReplica(t)
	return backend{
		rdb:     c,
		replica: func(*testing.T, string) *localserver.Redis { return r },
		primary: func(*testing.T, string) *redis.Client { return c },
		flush: func(t *testing.T) {
			if err := c.ScriptFlush(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// cluster is a Redis Cluster of 3 primaries with one replica each.
func cluster(t *testing.T) backend {
	rc := testserver.RedisCluster(t, 3, 1)
	cc := redis.NewClusterClient(testserver.RedisClusterOptions(rc))
	t.Cleanup(func() { _ = cc.Close() })
	primary := func(t *testing.T, key string) *redis.Client {
		t.Helper()
		c, err := cc.MasterForKey(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return backend{
		rdb:     cc,
		primary: primary,
		replica: func(t *testing.T, key string) *localserver.Redis {
			t.Helper()
			addr := replicaAddr(t, primary(t, key))
			for _, n := range rc.Nodes {
				if n.Addr == addr {
					return n
				}
			}
			t.Fatalf("no node at %s", addr)
			return nil
		},
		flush: func(t *testing.T) {
			if err := cc.ScriptFlush(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		},
	}
}

var slaveLine = regexp.MustCompile(`slave0:ip=([^,]+),port=(\d+),`)

// replicaAddr returns the address of the first replica of the primary c.
func replicaAddr(t *testing.T, c *redis.Client) string {
	t.Helper()
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	m := slaveLine.FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("no replica in INFO replication of %s: %q", c.Options().Addr, info)
	}
	return m[1] + ":" + m[2]
}

var backends = []struct {
	name  string
	start func(*testing.T) backend
}{
	{"single", single},
	{"cluster", cluster},
}

// setScript sets KEYS[1] to ARGV[1] and answers the value it replaced.
var setScript = redis.NewScript(`
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
return old or ''
`)

// keys are spread over many slots, so over every primary of a cluster.
func keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("t:{p%d}:log", i)
	}
	return ks
}

// appendAll XADDs one entry to each key and sets each key's ":v" twin by
// script, in one Do, and returns the XADD commands.
func appendAll(ctx context.Context, w *durable.Writer, ks []string, v string) ([]*redis.StringCmd, []*redis.Cmd, error) {
	var writes []durable.Write
	adds := make([]*redis.StringCmd, len(ks))
	sets := make([]*redis.Cmd, len(ks))
	for i, k := range ks {
		adds[i] = redis.NewStringCmd(ctx, "xadd", k, "*", "d", v)
		writes = append(writes, durable.Command(k, adds[i]))
		var wr durable.Write
		wr, sets[i] = durable.Script(ctx, setScript, []string{k + ":v"}, v)
		writes = append(writes, wr)
	}
	return adds, sets, w.Do(ctx, writes...)
}

func TestDoWaitsForReplica(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			be := b.start(t)
			w := durable.New(be.rdb, durable.Options{Replicas: 1, Timeout: 2 * time.Second})
			if err := w.Check(ctx); err != nil {
				t.Fatalf("Check with one replica each: %v", err)
			}
			ks := keys(32)
			// The servers are new: the scripts run by EVAL after NOSCRIPT.
			adds, sets, err := appendAll(ctx, w, ks, "a")
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			for i := range ks {
				if adds[i].Val() == "" || sets[i].Val() != "" {
					t.Fatalf("write %d: id %q, script replaced %q, want an id and nothing", i, adds[i].Val(), sets[i].Val())
				}
			}
			// Now the scripts are cached and run by EVALSHA.
			_, sets, err = appendAll(ctx, w, ks, "b")
			if err != nil {
				t.Fatalf("Do again: %v", err)
			}
			for i := range ks {
				if sets[i].Val() != "a" {
					t.Fatalf("write %d: script replaced %q, want a", i, sets[i].Val())
				}
			}
			// Every key is on its primary's replica: WAIT said so.
			for _, k := range ks {
				r := be.replica(t, k)
				rc := redis.NewClient(&redis.Options{Addr: r.Addr, Password: r.Password,
					// A cluster replica answers reads only after READONLY.
					OnConnect: func(ctx context.Context, cn *redis.Conn) error {
						if _, ok := be.rdb.(*redis.ClusterClient); ok {
							return cn.ReadOnly(ctx).Err()
						}
						return nil
					}})
				n, err := rc.XLen(ctx, k).Result()
				v, err2 := rc.Get(ctx, k+":v").Result()
				_ = rc.Close()
				if err != nil || err2 != nil || n != 2 || v != "b" {
					t.Fatalf("replica of %s holds %d entries (%v) and %q (%v), want 2 and b", k, n, err, v, err2)
				}
			}
			// A flushed script cache is refilled by EVAL.
			be.flush(t)
			if _, sets, err = appendAll(ctx, w, ks, "c"); err != nil || sets[0].Val() != "b" {
				t.Fatalf("Do after SCRIPT FLUSH: %v, replaced %q", err, sets[0].Val())
			}
		})
	}
}

func TestDoFailsWithoutReplica(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			be := b.start(t)
			// A generous wait while the replica is up (the machine may
			// be busy), a short one while it is frozen and cannot
			// answer anyway.
			up := durable.New(be.rdb, durable.Options{Replicas: 1, Timeout: 2 * time.Second})
			w := durable.New(be.rdb, durable.Options{Replicas: 1, Timeout: 300 * time.Millisecond})
			ks := keys(32)
			if _, _, err := appendAll(ctx, up, ks, "a"); err != nil {
				t.Fatalf("Do: %v", err)
			}
			// A frozen replica stays connected and acknowledges nothing.
			k := ks[0]
			r := be.replica(t, k)
			if err := r.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			cont := func() { _ = r.Signal(syscall.SIGCONT) }
			t.Cleanup(cont)
			_, _, err := appendAll(ctx, w, []string{k}, "b")
			want := "write reached 0 of 1 replicas within 300ms (-redis.wait-replicas, -redis.wait-timeout)"
			if !errors.Is(err, durable.ErrNotReplicated) || !strings.Contains(err.Error(), want) {
				t.Fatalf("Do with the replica stopped: %v, want %q", err, want)
			}
			// The write is on the primary all the same: not
			// acknowledged is not undone.
			if n, err := be.primary(t, k).XLen(ctx, k).Result(); err != nil || n != 2 {
				t.Fatalf("primary holds %d entries (%v), want 2", n, err)
			}
			cont()
			testserver.Eventually(t, 30*time.Second, func() error {
				_, _, err := appendAll(ctx, up, []string{k}, "c")
				return err
			})
		})
	}
}

func TestTooFewReplicas(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			be := b.start(t)
			w := durable.New(be.rdb, durable.Options{Replicas: 2, Timeout: 100 * time.Millisecond})
			err := w.Check(ctx)
			if !errors.Is(err, durable.ErrTooFewReplicas) || !strings.Contains(err.Error(), "has 1 replicas") || !strings.Contains(err.Error(), "-redis.wait-replicas asks every write to reach 2") {
				t.Fatalf("Check: %v, want ErrTooFewReplicas naming -redis.wait-replicas", err)
			}
			_, _, err = appendAll(ctx, w, keys(4), "a")
			if !errors.Is(err, durable.ErrNotReplicated) || !strings.Contains(err.Error(), "of 2 replicas within 100ms (-redis.wait-replicas") {
				t.Fatalf("Do: %v, want ErrNotReplicated naming -redis.wait-replicas", err)
			}
		})
	}
}

// TestCheckCountsReplicasDown: on Redis Cluster, Check counts a replica
// that is down, which may come back, while the writes to its primary
// fail until it does.
func TestCheckCountsReplicasDown(t *testing.T) {
	ctx := context.Background()
	be := cluster(t)
	w := durable.New(be.rdb, durable.Options{Replicas: 1, Timeout: 300 * time.Millisecond})
	k := keys(1)[0]
	be.replica(t, k).Kill()
	testserver.Eventually(t, 30*time.Second, func() error {
		_, _, err := appendAll(ctx, w, []string{k}, "a")
		if !errors.Is(err, durable.ErrNotReplicated) {
			return fmt.Errorf("Do with the replica killed: %v, want ErrNotReplicated", err)
		}
		return nil
	})
	if err := w.Check(ctx); err != nil {
		t.Fatalf("Check with a replica down: %v", err)
	}
}

// TestClusterFollowsMoved fails a primary over to its replica behind the
// client's back: the writes meet MOVED at the old primary, follow it, and
// wait on the new one (whose replica is now the old primary).
func TestClusterFollowsMoved(t *testing.T) {
	ctx := context.Background()
	be := cluster(t)
	// A client made just before the failover does not reload its slot
	// map for 10s unless a command is redirected.
	o := be.rdb.(*redis.ClusterClient).Options()
	stale := redis.NewClusterClient(&redis.ClusterOptions{Addrs: o.Addrs, Password: o.Password})
	defer stale.Close()
	w := durable.New(stale, durable.Options{Replicas: 1, Timeout: 2 * time.Second})
	ks := keys(32)
	if _, _, err := appendAll(ctx, w, ks, "a"); err != nil {
		t.Fatalf("Do: %v", err)
	}
	k := ks[0]
	r := be.replica(t, k)
	rc := redis.NewClient(&redis.Options{Addr: r.Addr, Password: r.Password})
	defer rc.Close()
	if err := rc.Do(ctx, "cluster", "failover").Err(); err != nil {
		t.Fatalf("CLUSTER FAILOVER: %v", err)
	}
	testserver.Eventually(t, 30*time.Second, func() error {
		info, err := rc.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "role:master") || !strings.Contains(info, "connected_slaves:1") {
			return fmt.Errorf("not yet a primary with its replica: %q", info)
		}
		return nil
	})
	if p, err := stale.MasterForKey(ctx, k); err != nil || p.Options().Addr == r.Addr {
		t.Fatalf("the stale client names %v (%v) the primary of %s: the writes would not be redirected", p, err, k)
	}
	adds, sets, err := appendAll(ctx, w, ks, "b")
	if err != nil {
		t.Fatalf("Do after the failover: %v", err)
	}
	if n, err := rc.XLen(ctx, k).Result(); err != nil || n != 2 || sets[0].Val() != "a" || adds[0].Val() == "" {
		t.Fatalf("new primary holds %d entries (%v), script replaced %q; want 2 and a", n, err, sets[0].Val())
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		o    durable.Options
		want string
	}{
		{durable.Options{}, ""},
		{durable.Options{Replicas: 1, Timeout: time.Second}, ""},
		{durable.Options{Replicas: -1}, "-redis.wait-replicas -1"},
		{durable.Options{Replicas: 1}, "-redis.wait-timeout 0s: must be positive"},
		{durable.Options{Replicas: 1, Timeout: time.Microsecond}, "-redis.wait-timeout 1µs"},
	} {
		err := tc.o.Validate()
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}
