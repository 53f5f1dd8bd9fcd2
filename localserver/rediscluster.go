package localserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrNoRedisCLI is returned when no redis-cli binary can be found.
var ErrNoRedisCLI = errors.New("redis-cli not found: install it (Debian: apt-get install redis-tools) or set REDIS_CLI to its path")

// RedisClusterConfig describes a Redis Cluster of redis-server children.
type RedisClusterConfig struct {
	// Dir holds one directory per node (node0, node1, ...).
	Dir string
	// Primaries is the number of primaries, at least 3 (redis-cli's
	// minimum); the hash slots are spread evenly over them.
	Primaries int
	// ReplicasPerPrimary is the number of replicas of each primary.
	ReplicasPerPrimary int
	// AppendFsync is each node's AOF fsync policy: always, everysec or no.
	AppendFsync string
	// Binary is the redis-server path, as RedisConfig.Binary.
	Binary string
	// CLI is the redis-cli path; empty looks in $REDIS_CLI, then PATH.
	CLI string
}

// RedisCluster is a running Redis Cluster: every node is a redis-server
// child with the same password.
type RedisCluster struct {
	// Nodes are the primaries first, then the replicas, as redis-cli
	// first assigned them (a failover may swap roles later).
	Nodes    []*Redis
	Password string
}

// Addrs returns every node's address, usable as the seeds of a client.
func (c *RedisCluster) Addrs() []string { return addrsOf(c.Nodes) }

// addrsOf returns the servers' addresses.
func addrsOf(nodes []*Redis) []string {
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// Stop stops every node.
func (c *RedisCluster) Stop() error {
	for _, n := range c.Nodes {
		_ = n.Stop()
	}
	return nil
}

// StartRedisCluster starts Primaries*(1+ReplicasPerPrimary) redis-server
// children in cluster mode, joins them with `redis-cli --cluster create`,
// and waits until every node reports cluster_state:ok and knows every
// other node.
func StartRedisCluster(ctx context.Context, cfg RedisClusterConfig) (c *RedisCluster, err error) {
	if cfg.Primaries < 3 {
		return nil, fmt.Errorf("redis cluster: %d primaries, need at least 3", cfg.Primaries)
	}
	if cfg.ReplicasPerPrimary < 0 {
		return nil, fmt.Errorf("redis cluster: %d replicas per primary", cfg.ReplicasPerPrimary)
	}
	cli := cfg.CLI
	if cli == "" {
		cli = os.Getenv("REDIS_CLI")
	}
	if cli == "" {
		p, err := exec.LookPath("redis-cli")
		if err != nil {
			return nil, ErrNoRedisCLI
		}
		cli = p
	}
	n := cfg.Primaries * (1 + cfg.ReplicasPerPrimary)
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("redis cluster dir: %w", err)
	}
	// One password for all nodes: replicas authenticate to their primary
	// with their own (masterauth = requirepass), and a client has one.
	pw, err := password(filepath.Join(cfg.Dir, PasswordFileName))
	if err != nil {
		return nil, err
	}
	c = &RedisCluster{Password: pw}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	for i := range n {
		dir := filepath.Join(cfg.Dir, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("redis cluster dir: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, PasswordFileName), []byte(pw+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("redis password: %w", err)
		}
		r, err := startClusterNode(ctx, cfg, dir)
		if err != nil {
			return nil, fmt.Errorf("redis cluster node %d: %w", i, err)
		}
		c.Nodes = append(c.Nodes, r)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(cfg.ReplicasPerPrimary), "--cluster-yes")
	cmd := exec.CommandContext(ctx, cli, args...)
	// REDISCLI_AUTH, not -a: ps would show the password to every user.
	cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+pw)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %w: %s", err, out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, r := range c.Nodes {
		for {
			err := clusterReady(r.Addr, pw, n)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("redis cluster node %s not ready within 60s: %w", r.Addr, err)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return c, nil
}

// startClusterNode starts one cluster node in dir. It picks the client
// port and the cluster bus port itself: the bus port's default, the
// client port + 10000, may be taken or beyond 65535. A picked port may be
// taken between the pick and the bind; it then picks both again.
func startClusterNode(ctx context.Context, cfg RedisClusterConfig, dir string) (*Redis, error) {
	return pickAgain(true, func() (*Redis, error) {
		port, err := redisPort()
		if err != nil {
			return nil, err
		}
		bus, err := FreePort()
		if err != nil {
			return nil, err
		}
		return startRedis(ctx, RedisConfig{
			Dir:         dir,
			Port:        port,
			AppendFsync: cfg.AppendFsync,
			Binary:      cfg.Binary,
			Args: []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-port", strconv.Itoa(bus),
			},
		})
	})
}

// clusterReady returns nil when the node at addr reports, in CLUSTER INFO,
// that the cluster is ok and that it knows all nodes: a client that learns
// the slot map from a node that has not yet met every other would be sent
// back and forth with MOVED.
func clusterReady(addr, password string, nodes int) error {
	info, err := clusterInfo(addr, password)
	if err != nil {
		return err
	}
	if info["cluster_state"] != "ok" {
		return fmt.Errorf("cluster_state:%s", info["cluster_state"])
	}
	if info["cluster_known_nodes"] != strconv.Itoa(nodes) {
		return fmt.Errorf("cluster_known_nodes:%s, want %d", info["cluster_known_nodes"], nodes)
	}
	return nil
}

// clusterInfo returns the fields of CLUSTER INFO of the node at addr.
func clusterInfo(addr, password string) (map[string]string, error) {
	return info(addr, password, "CLUSTER INFO")
}

// info returns the fields of the reply to cmd (INFO, INFO replication,
// CLUSTER INFO: a bulk string of key:value lines) of the server at addr,
// speaking RESP itself as ready does.
func info(addr, password, cmd string) (map[string]string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(authCommand(password) + cmd + "\r\n")); err != nil {
		return nil, err
	}
	rd := bufio.NewReader(c)
	if err := readAuth(rd, password); err != nil {
		return nil, err
	}
	head, err := rd.ReadString('\n')
	if err != nil {
		return nil, err
	}
	size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if err != nil || !strings.HasPrefix(head, "$") {
		return nil, fmt.Errorf("unexpected %s reply %q", cmd, strings.TrimSpace(head))
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(rd, body); err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for line := range strings.Lines(string(body)) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	return fields, nil
}
