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
	// cli is the redis-cli that created the cluster; Reshard uses it too.
	cli string
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
	c = &RedisCluster{Password: pw, cli: cli}
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
	if _, err := c.redisCLI(ctx, args...); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, r := range c.Nodes {
		for {
			err := clusterReady(r.Addr, pw, n, cfg.Primaries, cfg.ReplicasPerPrimary)
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
func clusterReady(addr, password string, nodes, primaries, replicas int) error {
	ci, err := clusterInfo(addr, password)
	if err != nil {
		return err
	}
	if ci["cluster_state"] != "ok" {
		return fmt.Errorf("cluster_state:%s", ci["cluster_state"])
	}
	if ci["cluster_known_nodes"] != strconv.Itoa(nodes) {
		return fmt.Errorf("cluster_known_nodes:%s, want %d", ci["cluster_known_nodes"], nodes)
	}
	// Every node must know every replica as one, as clients count a
	// primary's replicas (-redis.wait-replicas) from any node's view.
	table, err := bulk(addr, password, "CLUSTER NODES")
	if err != nil {
		return err
	}
	known := 0
	for line := range strings.Lines(table) {
		if f := strings.Fields(line); len(f) > 2 && strings.Contains(f[2], "slave") {
			known++
		}
	}
	if known != primaries*replicas {
		return fmt.Errorf("CLUSTER NODES lists %d replicas, want %d", known, primaries*replicas)
	}
	// cluster_state:ok comes before the replicas' first sync ends; until
	// then a write that waits for a replica (WAIT, -redis.wait-replicas)
	// reaches none.
	repl, err := info(addr, password, "INFO replication")
	if err != nil {
		return err
	}
	if repl["role"] != "master" {
		return nil
	}
	online := 0
	for k, v := range repl {
		if strings.HasPrefix(k, "slave") && strings.Contains(v, "state=online") {
			online++
		}
	}
	if online != replicas {
		return fmt.Errorf("primary: %d of %d replicas online", online, replicas)
	}
	return nil
}

// clusterInfo returns the fields of CLUSTER INFO of the node at addr.
func clusterInfo(addr, password string) (map[string]string, error) {
	return info(addr, password, "CLUSTER INFO")
}

// info returns the fields of the reply to cmd (INFO, INFO replication,
// CLUSTER INFO: a bulk string of key:value lines) of the server at addr.
func info(addr, password, cmd string) (map[string]string, error) {
	body, err := bulk(addr, password, cmd)
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for line := range strings.Lines(body) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	return fields, nil
}

// bulk returns the reply to cmd, a bulk string, of the server at addr,
// speaking RESP itself as ready does.
func bulk(addr, password, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(authCommand(password) + cmd + "\r\n")); err != nil {
		return "", err
	}
	rd := bufio.NewReader(c)
	if err := readAuth(rd, password); err != nil {
		return "", err
	}
	head, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if err != nil || !strings.HasPrefix(head, "$") {
		return "", fmt.Errorf("unexpected %s reply %q", cmd, strings.TrimSpace(head))
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(rd, body); err != nil {
		return "", err
	}
	return string(body), nil
}

// redisCLI runs redis-cli with args against the cluster and returns its
// output.
func (c *RedisCluster) redisCLI(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.cli, args...)
	// REDISCLI_AUTH, not -a: ps would show the password to every user.
	cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+c.Password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("redis-cli %s: %w: %s", strings.Join(args[:min(len(args), 2)], " "), err, out)
	}
	return string(out), nil
}

// NodeID returns the cluster node ID of the node at addr (CLUSTER MYID).
func (c *RedisCluster) NodeID(ctx context.Context, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	out, err := c.redisCLI(ctx, "-h", host, "-p", port, "--no-auth-warning", "CLUSTER", "MYID")
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(out)
	if len(id) != 40 {
		return "", fmt.Errorf("CLUSTER MYID of %s: unexpected reply %q", addr, id)
	}
	return id, nil
}

// Reshard moves slots hash slots from the primary at from to the primary
// at to while the cluster serves, as an operator does: `redis-cli
// --cluster reshard --cluster-yes`, which takes from's lowest-numbered
// slots, and for each marks it migrating and importing, MIGRATEs its keys
// (clients meanwhile get ASK for the keys already moved, and TRYAGAIN for
// a multi-key command over keys on both sides), then gives it to to.
//
// redis-cli refuses to start while the nodes disagree about the slot map,
// as they do for a moment after a reshard while the other nodes learn it
// by gossip; so Reshard first waits, up to a minute, for `redis-cli
// --cluster check` to pass, and waits for it again after moving the slots.
func (c *RedisCluster) Reshard(ctx context.Context, from, to string, slots int) error {
	if err := c.waitAgreed(ctx, from); err != nil {
		return fmt.Errorf("reshard: %w", err)
	}
	fromID, err := c.NodeID(ctx, from)
	if err != nil {
		return fmt.Errorf("reshard: %w", err)
	}
	toID, err := c.NodeID(ctx, to)
	if err != nil {
		return fmt.Errorf("reshard: %w", err)
	}
	_, err = c.redisCLI(ctx, "--cluster", "reshard", from,
		"--cluster-from", fromID, "--cluster-to", toID,
		"--cluster-slots", strconv.Itoa(slots), "--cluster-yes")
	if err != nil {
		return fmt.Errorf("reshard %d slots from %s to %s: %w", slots, from, to, err)
	}
	if err := c.waitAgreed(ctx, from); err != nil {
		return fmt.Errorf("after resharding: %w", err)
	}
	return nil
}

// waitAgreed waits, up to a minute, until `redis-cli --cluster check`
// through the node at addr passes: every node agrees about the slot map,
// no slot is open (migrating or importing), and every slot is served.
func (c *RedisCluster) waitAgreed(ctx context.Context, addr string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := c.redisCLI(ctx, "--cluster", "check", addr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not settled within a minute: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
