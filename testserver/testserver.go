package testserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/localserver"
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
	e, err := localserver.StartEtcd(localserver.EtcdConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	return e
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
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(localserver.ErrNoRedisServer)
	}
	dir := t.TempDir()
	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	host, mport, _ := strings.Cut(master.Addr, ":")
	conf := filepath.Join(dir, "sentinel.conf")
	// Sentinel rewrites its config file, so it gets one of its own.
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s %s %s 1\nsentinel auth-pass %s %s\n",
		port, dir, name, host, mport, name, master.Password)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf, "--sentinel", "--logfile", filepath.Join(dir, "sentinel.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
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
	return addr
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
	// cluster_state:ok comes before the replicas' first sync ends, and
	// until it does a write waited for (WAIT) reaches no replica.
	for _, n := range c.Nodes {
		rc := redis.NewClient(RedisOptions(n))
		Eventually(t, 60*time.Second, func() error {
			info, err := rc.Info(context.Background(), "replication").Result()
			if err != nil {
				return err
			}
			if strings.Contains(info, "role:master") && strings.Count(info, ",state=online,") != replicasPerPrimary {
				return fmt.Errorf("primary %s: not every replica online: %q", n.Addr, info)
			}
			return nil
		})
		_ = rc.Close()
	}
	return c
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
