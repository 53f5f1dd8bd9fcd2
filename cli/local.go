package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/localserver"
)

// localDeps are what a one-machine cluster runs on: an embedded etcd and,
// unless the configuration names a Redis, a redis-server child process.
// `clickagg dev` and `clickagg bench` start them.
type localDeps struct {
	etcd  *localserver.Etcd
	redis *localserver.Redis // nil when the configuration named a Redis
	once  sync.Once
}

// localDepsConfig is where and how to start them.
type localDepsConfig struct {
	// Dir holds etcd's data under etcd/ and redis-server's under redis/.
	Dir         string
	EtcdPort    int
	EtcdLog     string
	AppendFsync string
}

// startLocalDeps starts etcd, then redis-server when -redis.addr is
// empty (and no other Redis mode is set), and points cfg at them: its
// address and its password file. On error nothing is left running.
func startLocalDeps(ctx context.Context, cfg *ServerConfig, dc localDepsConfig) (*localDeps, error) {
	if err := localEtcdOnly(cfg.Cluster); err != nil {
		return nil, err
	}
	etcd, err := localserver.StartEtcd(localserver.EtcdConfig{Dir: filepath.Join(dc.Dir, "etcd"), ClientPort: dc.EtcdPort, LogLevel: dc.EtcdLog})
	if err != nil {
		return nil, err
	}
	d := &localDeps{etcd: etcd}
	cfg.Cluster.Endpoints = []string{etcd.Endpoint}
	if cfg.Redis.Addr == "" && cfg.Redis.ClusterAddrs == "" && cfg.Redis.SentinelMaster == "" {
		r, err := localserver.StartRedis(ctx, localserver.RedisConfig{Dir: filepath.Join(dc.Dir, "redis"), AppendFsync: dc.AppendFsync})
		if err != nil {
			etcd.Close()
			return nil, err
		}
		d.redis = r
		cfg.Redis.Addr, cfg.Redis.PasswordFile = r.Addr, r.PasswordFile
	}
	return d, nil
}

// localEtcdOnly refuses -etcd.* flags that only make sense for another
// etcd: the embedded one serves plaintext on loopback, without auth.
func localEtcdOnly(c cluster.Config) error {
	for _, f := range []struct{ name, value string }{
		{"cert-file", c.CertFile}, {"key-file", c.KeyFile}, {"ca-file", c.CAFile},
		{"username", c.Username}, {"password-file", c.PasswordFile},
	} {
		if f.value != "" {
			return fmt.Errorf("-etcd.%s: the embedded etcd serves plaintext on loopback, without auth; leave it unset", f.name)
		}
	}
	return nil
}

// Close stops redis-server (which flushes its AOF), then etcd. Calls after
// the first do nothing.
func (d *localDeps) Close() {
	d.once.Do(func() {
		if d.redis != nil {
			_ = d.redis.Stop()
		}
		d.etcd.Close()
	})
}
