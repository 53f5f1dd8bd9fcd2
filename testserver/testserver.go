package testserver

import (
	"context"
	"errors"
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

// RedisClient starts a redis-server and returns a client to it.
func RedisClient(t testing.TB) *redis.Client {
	t.Helper()
	r := Redis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
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
