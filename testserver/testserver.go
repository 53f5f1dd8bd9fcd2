package testserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// Redis starts a redis-server for the test and returns it. The test fails
// (never skips) when redis-server is missing: .ci/run installs it.
func Redis(t testing.TB) *localserver.Redis {
	t.Helper()
	r, err := localserver.StartRedis(context.Background(), localserver.RedisConfig{Dir: t.TempDir(), AppendFsync: "no"})
	if err != nil {
		if errors.Is(err, localserver.ErrNoRedisServer) {
			t.Fatalf("%v", err)
		}
		t.Fatalf("start redis: %v", err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	return r
}

// RedisReplica starts a redis-server replicating primary and returns it
// once primary counts it as an online replica (the first sync done).
func RedisReplica(t testing.TB, primary *localserver.Redis) *localserver.Redis {
	t.Helper()
	c := redis.NewClient(RedisOptions(primary))
	defer c.Close()
	// The primary would wait 5s for more replicas before a diskless sync.
	if err := c.ConfigSet(context.Background(), "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatalf("redis replica: %v", err)
	}
	r, err := localserver.StartReplica(context.Background(), primary, localserver.RedisConfig{Dir: t.TempDir(), AppendFsync: "no"})
	if err != nil {
		t.Fatalf("start redis replica: %v", err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	_, port, _ := strings.Cut(r.Addr, ":")
	Eventually(t, 30*time.Second, func() error {
		info, err := c.Info(context.Background(), "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "port="+port+",state=online") {
			return fmt.Errorf("replica %s not online in INFO replication: %q", r.Addr, info)
		}
		return nil
	})
	return r
}

// RedisClientWithReplica starts a redis-server with one replica and
// returns a client to the primary, and the replica.
func RedisClientWithReplica(t testing.TB) (*redis.Client, *localserver.Redis) {
	t.Helper()
	p := Redis(t)
	r := RedisReplica(t, p)
	c := redis.NewClient(RedisOptions(p))
	t.Cleanup(func() { _ = c.Close() })
	return c, r
}

// RedisClient starts a redis-server and returns a client to it.
func RedisClient(t testing.TB) *redis.Client {
	t.Helper()
	r := Redis(t)
	c := redis.NewClient(RedisOptions(r))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// RedisOptions are the client options that reach r: its address and
// password.
func RedisOptions(r *localserver.Redis) *redis.Options {
	return &redis.Options{Addr: r.Addr, Password: r.Password}
}

// Etcd starts an embedded etcd for the test and returns it.
func Etcd(t testing.TB) *localserver.Etcd {
	t.Helper()
	return EtcdWith(t, localserver.EtcdConfig{})
}

// EtcdWith starts an embedded etcd configured by cfg, in a directory of
// the test's, and returns it.
func EtcdWith(t testing.TB, cfg localserver.EtcdConfig) *localserver.Etcd {
	t.Helper()
	cfg.Dir = t.TempDir()
	e, err := localserver.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// EtcdTLS starts an embedded etcd that serves https with a certificate
// of ca and requires client certificates of ca (etcd's
// --client-cert-auth), and returns it with the path of ca's certificate.
func EtcdTLS(t testing.TB, ca *tlstest.CA) (*localserver.Etcd, string) {
	t.Helper()
	dir := t.TempDir()
	caFile := ca.WriteCA(t, dir)
	cert, key := ca.Issue(t, tlstest.Options{CommonName: "etcd"}).WriteFiles(t, dir)
	return EtcdWith(t, localserver.EtcdConfig{CertFile: cert, KeyFile: key, ClientCAFile: caFile}), caFile
}

// EtcdClient starts an embedded etcd and returns a client to it.
func EtcdClient(t testing.TB) *clientv3.Client {
	t.Helper()
	e := Etcd(t)
	return NewEtcdClient(t, e.Endpoint)
}

// NewEtcdClient returns a client to endpoint, closed by t.Cleanup.
func NewEtcdClient(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// DeadAddr returns a loopback address that nobody listens on: a port
// that was free a moment ago, which FreePort hands out to nobody else.
func DeadAddr(t testing.TB) string {
	t.Helper()
	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// Eventually polls cond every 10ms until it returns nil or timeout passes,
// then fails the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Sentinel starts `redis-server --sentinel` on loopback watching master
// under name, and returns its address once it names the master.
func Sentinel(t testing.TB, name string, master *localserver.Redis) string {
	t.Helper()
	s, err := localserver.StartSentinel(context.Background(), localserver.SentinelConfig{
		Dir: t.TempDir(), MasterName: name, MasterAddr: master.Addr, MasterPassword: master.Password,
	})
	if err != nil {
		t.Fatalf("start sentinel: %v", err)
	}
	t.Cleanup(s.Kill)
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
	defer sc.Close()
	Eventually(t, 30*time.Second, func() error {
		got, err := sc.GetMasterAddrByName(context.Background(), name).Result()
		if err != nil {
			return err
		}
		if strings.Join(got, ":") != master.Addr {
			return errors.New("sentinel names " + strings.Join(got, ":"))
		}
		return nil
	})
	return s.Addr
}

// RedisSentinel starts a primary with cfg.Replicas replicas under
// cfg.Sentinels sentinels, in a directory of the test's, every server
// with AOF fsynced on every write as in production. Unless cfg says
// otherwise, a sentinel thinks the primary down after 1s without an
// answer and a failover may take 5s, so that a test sees one within
// seconds (Redis's defaults: 30s and 3m).
func RedisSentinel(t testing.TB, cfg localserver.RedisSentinelConfig) *localserver.RedisSentinel {
	t.Helper()
	cfg.Dir = t.TempDir()
	if cfg.DownAfter == 0 {
		cfg.DownAfter = time.Second
	}
	if cfg.FailoverTimeout == 0 {
		cfg.FailoverTimeout = 5 * time.Second
	}
	if cfg.AppendFsync == "" {
		cfg.AppendFsync = "always"
	}
	r, err := localserver.StartRedisSentinel(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start redis sentinel: %v", err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	return r
}

// RedisSentinelOptions are the client options that reach r's primary
// through its sentinels.
func RedisSentinelOptions(r *localserver.RedisSentinel) *redis.FailoverOptions {
	return &redis.FailoverOptions{MasterName: r.MasterName, SentinelAddrs: r.SentinelAddrs(), SentinelPassword: r.SentinelPassword, Password: r.Password}
}

// RedisCluster starts a Redis Cluster of primaries primaries with
// replicasPerPrimary replicas each, every node with AOF fsynced on every
// write as in production, and returns it once every node reports
// cluster_state:ok. The test fails when redis-server or redis-cli is
// missing.
func RedisCluster(t testing.TB, primaries, replicasPerPrimary int) *localserver.RedisCluster {
	t.Helper()
	c, err := localserver.StartRedisCluster(context.Background(), localserver.RedisClusterConfig{
		Dir:                t.TempDir(),
		Primaries:          primaries,
		ReplicasPerPrimary: replicasPerPrimary,
		AppendFsync:        "always",
	})
	if err != nil {
		t.Fatalf("start redis cluster: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c
}

// RedisClusterNode starts a Redis Cluster of one node that assigns itself
// the hash slots from through through, and returns it once its CLUSTER
// INFO says so. With fewer than all 16384 slots, its cluster_state is
// fail: a cluster with uncovered slots, for tests of what refuses one.
func RedisClusterNode(t testing.TB, from, through int) *localserver.Redis {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	node, err := localserver.StartRedis(ctx, localserver.RedisConfig{Dir: dir, AppendFsync: "no",
		Args: []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf")}})
	if err != nil {
		t.Fatalf("start redis cluster node: %v", err)
	}
	t.Cleanup(func() { _ = node.Stop() })
	admin := redis.NewClient(RedisOptions(node))
	defer admin.Close()
	if err := admin.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", from, through).Err(); err != nil {
		t.Fatal(err)
	}
	want := "cluster_state:ok"
	if through-from+1 < 16384 {
		want = "cluster_state:fail"
	}
	Eventually(t, 30*time.Second, func() error {
		info, err := admin.ClusterInfo(ctx).Result()
		if err != nil || !strings.Contains(info, want) || !strings.Contains(info, fmt.Sprintf("cluster_slots_assigned:%d", through-from+1)) {
			return fmt.Errorf("cluster not settled: %v %q", err, info)
		}
		return nil
	})
	return node
}

// RedisClusterClient starts a Redis Cluster of 3 primaries with one
// replica each and returns a client to it.
func RedisClusterClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	c := redis.NewClusterClient(RedisClusterOptions(RedisCluster(t, 3, 1)))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// RedisClusterOptions are the client options that reach c: its nodes as
// seeds and its password.
func RedisClusterOptions(c *localserver.RedisCluster) *redis.ClusterOptions {
	return &redis.ClusterOptions{Addrs: c.Addrs(), Password: c.Password}
}

// RedisClusterPrimaries returns the address of the primary that serves
// key's hash slot, and those of the other primaries.
func RedisClusterPrimaries(t testing.TB, rdb *redis.ClusterClient, key string) (owner string, others []string) {
	t.Helper()
	ctx := context.Background()
	slot, err := rdb.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	shards, err := rdb.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range shards {
		serves := false
		for _, r := range s.Slots {
			serves = serves || (r.Start <= slot && slot <= r.End)
		}
		for _, n := range s.Nodes {
			switch addr := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10)); {
			case n.Role != "master":
			case serves:
				owner = addr
			default:
				others = append(others, addr)
			}
		}
	}
	if owner == "" {
		t.Fatalf("no primary serves slot %d of %q", slot, key)
	}
	return owner, others
}
