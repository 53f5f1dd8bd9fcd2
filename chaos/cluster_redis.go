package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/localserver"
)

// masterName is the name the sentinels know the primary by.
const masterName = "clickagg"

// Sentinel timing. DownAfter is 5s, not 1s, for the reason
// test/cluster_test.go gives: a primary that stalls on an fsync on two
// busy cores is otherwise failed over, and failed back. A failover that
// did not complete is retried after twice FailoverTimeout.
const (
	sentinelDownAfter       = 5 * time.Second
	sentinelFailoverTimeout = 15 * time.Second
)

// redisNode is one redis-server, primary or replica, with the proxy in
// front of it. It announces the proxy (replica-announce-ip/-port) so
// that the sentinels, and through them every client, reach it by the
// proxy; replicas replicate through the primary's proxy too.
type redisNode struct {
	name  string // "redis-0"
	dir   string
	port  int    // its own port, kept across restarts
	addr  string // 127.0.0.1:port
	proxy string // the proxy's host:port

	mu  sync.Mutex
	srv *localserver.Redis // nil while killed
}

// redisSet is the cluster's Redis: nodes under sentinels.
type redisSet struct {
	nodes        []*redisNode
	sentinels    []*localserver.Sentinel
	password     string
	passwordFile string
}

// startRedis starts 1+RedisReplicas nodes behind proxies and three
// sentinels watching the first, and waits until the sentinels know every
// replica and each other.
func (c *Cluster) startRedis(ctx context.Context) error {
	dir := filepath.Join(c.cfg.Dir, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	rs := &redisSet{password: hex.EncodeToString(b), passwordFile: filepath.Join(dir, localserver.PasswordFileName)}
	c.redis = rs
	if err := os.WriteFile(rs.passwordFile, []byte(rs.password+"\n"), 0o600); err != nil {
		return err
	}
	for i := range 1 + c.cfg.RedisReplicas {
		port, err := localserver.FreePort()
		if err != nil {
			return err
		}
		n := &redisNode{name: fmt.Sprintf("redis-%d", i), dir: filepath.Join(dir, fmt.Sprintf("node%d", i)), port: port}
		n.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if n.proxy, err = c.proxies.add(n.name, n.addr); err != nil {
			return err
		}
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(n.dir, localserver.PasswordFileName), []byte(rs.password+"\n"), 0o600); err != nil {
			return err
		}
		rs.nodes = append(rs.nodes, n)
		var of *redisNode
		if i > 0 {
			of = rs.nodes[0]
		}
		if err := n.start(ctx, of); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, time.Minute, func() error { return rs.replicasOnline(ctx, rs.nodes[0]) }); err != nil {
		return fmt.Errorf("redis replicas: %w", err)
	}
	for i := range 3 {
		s, err := localserver.StartSentinel(ctx, localserver.SentinelConfig{
			Dir:             filepath.Join(dir, fmt.Sprintf("sentinel%d", i)),
			MasterName:      masterName,
			MasterAddr:      rs.nodes[0].proxy,
			MasterPassword:  rs.password,
			Quorum:          2,
			DownAfter:       sentinelDownAfter,
			FailoverTimeout: sentinelFailoverTimeout,
		})
		if err != nil {
			return fmt.Errorf("sentinel %d: %w", i, err)
		}
		rs.sentinels = append(rs.sentinels, s)
	}
	want := fmt.Sprintf("status=ok,address=%s,slaves=%d,sentinels=%d", rs.nodes[0].proxy, c.cfg.RedisReplicas, len(rs.sentinels))
	return waitFor(ctx, time.Minute, func() error {
		for _, s := range rs.sentinels {
			sc := redis.NewClient(&redis.Options{Addr: s.Addr})
			info, err := infoMap(ctx, sc, "sentinel")
			sc.Close()
			if err != nil {
				return err
			}
			if !strings.Contains(info["master0"], want) {
				return fmt.Errorf("sentinel %s: master0:%s, want %s", s.Addr, info["master0"], want)
			}
		}
		return nil
	})
}

// start runs the node: a replica of of's proxy when of is set, a primary
// otherwise. It keeps its port, Dir (AOF) and password across restarts.
func (n *redisNode) start(ctx context.Context, of *redisNode) error {
	_, pport, _ := net.SplitHostPort(n.proxy)
	args := []string{"--replica-announce-ip", "127.0.0.1", "--replica-announce-port", pport}
	if of != nil {
		host, port, _ := net.SplitHostPort(of.proxy)
		args = append(args, "--replicaof", host, port)
	}
	srv, err := localserver.StartRedis(ctx, localserver.RedisConfig{Dir: n.dir, Port: n.port, AppendFsync: "always", Args: args})
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
	return nil
}

// kill SIGKILLs the node.
func (n *redisNode) kill() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Kill()
	}
}

// running reports whether the node runs.
func (n *redisNode) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv != nil
}

// client returns a client to the node itself, not through its proxy.
func (rs *redisSet) client(n *redisNode) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.addr, Password: rs.password, MaxRetries: -1, DialTimeout: 2 * time.Second})
}

// byProxy returns the node whose proxy is addr.
func (rs *redisSet) byProxy(addr string) *redisNode {
	for _, n := range rs.nodes {
		if n.proxy == addr {
			return n
		}
	}
	return nil
}

// primary returns the node a majority of the sentinels name the
// primary.
func (rs *redisSet) primary(ctx context.Context) (*redisNode, error) {
	votes := map[string]int{}
	var errs []string
	for _, s := range rs.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		addr, err := sc.GetMasterAddrByName(cctx, masterName).Result()
		cancel()
		sc.Close()
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", s.Addr, err))
			continue
		}
		votes[net.JoinHostPort(addr[0], addr[1])]++
	}
	for addr, v := range votes {
		if v > len(rs.sentinels)/2 {
			if n := rs.byProxy(addr); n != nil {
				return n, nil
			}
			return nil, fmt.Errorf("the sentinels name %s, no node's proxy", addr)
		}
	}
	return nil, fmt.Errorf("no majority of the sentinels names a primary: %v %s", votes, strings.Join(errs, "; "))
}

// replicasOnline returns nil when primary is a primary with every other
// running node an online replica (WaitHealthy wants them all running).
func (rs *redisSet) replicasOnline(ctx context.Context, primary *redisNode) error {
	cl := rs.client(primary)
	defer cl.Close()
	info, err := infoMap(ctx, cl, "replication")
	if err != nil {
		return fmt.Errorf("%s: %w", primary.name, err)
	}
	if info["role"] != "master" {
		return fmt.Errorf("%s: role %s, want master", primary.name, info["role"])
	}
	want := 0
	for _, n := range rs.nodes {
		if n != primary && n.running() {
			want++
		}
	}
	online := 0
	for k, v := range info {
		if strings.HasPrefix(k, "slave") && strings.Contains(v, "state=online") {
			online++
		}
	}
	if online < want {
		return fmt.Errorf("%s: %d replicas online, want %d", primary.name, online, want)
	}
	return nil
}

// stop stops the sentinels, then the nodes: a sentinel outliving its
// primary would fail it over.
func (rs *redisSet) stop() {
	for _, s := range rs.sentinels {
		s.Kill()
	}
	for _, n := range rs.nodes {
		n.mu.Lock()
		srv := n.srv
		n.srv = nil
		n.mu.Unlock()
		if srv != nil {
			_ = srv.Stop()
		}
	}
}

// infoMap runs INFO section on cl and returns its fields.
func infoMap(ctx context.Context, cl *redis.Client, section string) (map[string]string, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := cl.Info(cctx, section).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for line := range strings.Lines(s) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// waitFor polls cond every 100ms until it returns nil, for at most
// timeout.
func waitFor(ctx context.Context, timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
