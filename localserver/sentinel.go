package localserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SentinelConfig describes a `redis-server --sentinel` child process
// watching one primary.
type SentinelConfig struct {
	// Dir holds the sentinel's config file, which it rewrites as it
	// learns the other sentinels, the replicas and each failover.
	Dir string
	// Port is the loopback port; 0 picks a free one.
	Port int
	// MasterName is the name clients ask for; MasterAddr the primary's
	// host:port and MasterPassword its password (sentinel auth-pass).
	MasterName, MasterAddr, MasterPassword string
	// Quorum is how many sentinels must agree that the primary is down
	// before a failover; 0 is 1.
	Quorum int
	// DownAfter is how long the primary may not answer before this
	// sentinel thinks it down; 0 is Redis's default, 30s.
	DownAfter time.Duration
	// FailoverTimeout bounds a failover (and spaces the retries of one
	// that failed); 0 is Redis's default, 3m.
	FailoverTimeout time.Duration
	// Password is the sentinel's own password (requirepass), also the
	// one it gives the other sentinels (sentinel-pass): all sentinels of
	// a primary share it. Empty: none.
	Password string
	// Binary is the redis-server path, as RedisConfig.Binary.
	Binary string
	// Args are more arguments (e.g. a TLS port), after the config file.
	Args []string
}

// Sentinel is a running sentinel child process.
type Sentinel struct {
	Addr     string
	Password string
	p        *child
}

// StartSentinel starts a sentinel on 127.0.0.1 and waits until it
// answers. A picked port taken meanwhile is picked again, as StartRedis
// does.
func StartSentinel(ctx context.Context, cfg SentinelConfig) (*Sentinel, error) {
	return pickAgain(cfg.Port == 0, func() (*Sentinel, error) { return startSentinel(ctx, cfg) })
}

func startSentinel(ctx context.Context, cfg SentinelConfig) (*Sentinel, error) {
	bin, err := redisBinary(cfg.Binary)
	if err != nil {
		return nil, err
	}
	host, mport, err := net.SplitHostPort(cfg.MasterAddr)
	if err != nil {
		return nil, fmt.Errorf("sentinel master address: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("sentinel dir: %w", err)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	port := cfg.Port
	if port == 0 {
		if port, err = redisPort(); err != nil {
			return nil, err
		}
	}
	quorum := max(cfg.Quorum, 1)
	var b strings.Builder
	fmt.Fprintf(&b, "port %d\nbind 127.0.0.1\ndir %s\n", port, dir)
	fmt.Fprintf(&b, "sentinel monitor %s %s %s %d\n", cfg.MasterName, host, mport, quorum)
	if cfg.MasterPassword != "" {
		fmt.Fprintf(&b, "sentinel auth-pass %s %s\n", cfg.MasterName, cfg.MasterPassword)
	}
	if cfg.DownAfter > 0 {
		fmt.Fprintf(&b, "sentinel down-after-milliseconds %s %d\n", cfg.MasterName, cfg.DownAfter.Milliseconds())
	}
	if cfg.FailoverTimeout > 0 {
		fmt.Fprintf(&b, "sentinel failover-timeout %s %d\n", cfg.MasterName, cfg.FailoverTimeout.Milliseconds())
	}
	if cfg.Password != "" {
		fmt.Fprintf(&b, "requirepass %s\nsentinel sentinel-pass %s\n", cfg.Password, cfg.Password)
	}
	// Sentinel rewrites its config file, so each gets one of its own; it
	// holds passwords, so only its owner reads it.
	conf := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		return nil, fmt.Errorf("sentinel config: %w", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logFile := filepath.Join(dir, "sentinel.log")
	args := append([]string{conf, "--sentinel", "--logfile", logFile}, cfg.Args...)
	p, err := startChild(ctx, "sentinel", bin, args, addr, cfg.Password, logFile)
	if err != nil {
		return nil, err
	}
	return &Sentinel{Addr: addr, Password: cfg.Password, p: p}, nil
}

// Kill stops the sentinel with SIGKILL.
func (s *Sentinel) Kill() { s.p.kill() }

// RedisSentinelConfig describes a primary with replicas under sentinels.
type RedisSentinelConfig struct {
	// Dir holds one directory per server (node0 is the first primary,
	// node1... its replicas) and per sentinel (sentinel0...).
	Dir string
	// MasterName is the name the sentinels know the primary by; empty
	// is "mymaster".
	MasterName string
	// Replicas and Sentinels are how many of each; Quorum how many
	// sentinels must agree that the primary is down (0: a majority).
	Replicas, Sentinels, Quorum int
	// DownAfter and FailoverTimeout are each sentinel's, as in
	// SentinelConfig.
	DownAfter, FailoverTimeout time.Duration
	// AppendFsync is each server's AOF fsync policy.
	AppendFsync string
	// SentinelPassword gives the sentinels a password of their own,
	// other than the servers'.
	SentinelPassword bool
	// Binary is the redis-server path, as RedisConfig.Binary.
	Binary string
}

// RedisSentinel is a running primary with replicas under sentinels. All
// servers share one password, in each one's PasswordFile.
type RedisSentinel struct {
	MasterName string
	// Nodes are the first primary, then its replicas; a failover swaps
	// roles (ask a sentinel which is the primary now).
	Nodes     []*Redis
	Sentinels []*Sentinel
	Password  string
	// SentinelPassword is the sentinels' password, in
	// SentinelPasswordFile; empty without RedisSentinelConfig's.
	SentinelPassword, SentinelPasswordFile string
}

// NodeAddrs returns the servers' addresses.
func (r *RedisSentinel) NodeAddrs() []string { return addrsOf(r.Nodes) }

// SentinelAddrs returns the sentinels' addresses.
func (r *RedisSentinel) SentinelAddrs() []string {
	addrs := make([]string, len(r.Sentinels))
	for i, s := range r.Sentinels {
		addrs[i] = s.Addr
	}
	return addrs
}

// Node returns the server at addr, nil if none is.
func (r *RedisSentinel) Node(addr string) *Redis {
	for _, n := range r.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// Stop stops the sentinels, then the servers (a sentinel outliving its
// primary would start a failover).
func (r *RedisSentinel) Stop() error {
	for _, s := range r.Sentinels {
		s.Kill()
	}
	for _, n := range r.Nodes {
		_ = n.Stop()
	}
	return nil
}

// StartRedisSentinel starts a primary, its replicas (replicaof, with
// masterauth its password) and the sentinels that watch it, and returns
// once every replica's link to the primary is up and every sentinel knows
// the primary, its replicas and the other sentinels: only then can they
// fail over.
func StartRedisSentinel(ctx context.Context, cfg RedisSentinelConfig) (r *RedisSentinel, err error) {
	if cfg.Sentinels < 1 {
		return nil, fmt.Errorf("redis sentinel: %d sentinels, need at least 1", cfg.Sentinels)
	}
	if cfg.MasterName == "" {
		cfg.MasterName = "mymaster"
	}
	quorum := cfg.Quorum
	if quorum == 0 {
		quorum = cfg.Sentinels/2 + 1
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("redis sentinel dir: %w", err)
	}
	pw, err := password(filepath.Join(cfg.Dir, PasswordFileName))
	if err != nil {
		return nil, err
	}
	r = &RedisSentinel{MasterName: cfg.MasterName, Password: pw}
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	var replicaOf []string
	for i := range 1 + cfg.Replicas {
		dir := filepath.Join(cfg.Dir, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("redis sentinel dir: %w", err)
		}
		// One password for all: a replica authenticates to its primary
		// with its own (masterauth = requirepass), and after a failover
		// any server may be the primary.
		if err := os.WriteFile(filepath.Join(dir, PasswordFileName), []byte(pw+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("redis password: %w", err)
		}
		n, err := StartRedis(ctx, RedisConfig{Dir: dir, AppendFsync: cfg.AppendFsync, Binary: cfg.Binary, Args: replicaOf})
		if err != nil {
			return nil, fmt.Errorf("redis sentinel node %d: %w", i, err)
		}
		r.Nodes = append(r.Nodes, n)
		if i == 0 {
			host, port, _ := net.SplitHostPort(n.Addr)
			replicaOf = []string{"--replicaof", host, port}
		}
	}
	if cfg.SentinelPassword {
		file := filepath.Join(cfg.Dir, "sentinel.password")
		if r.SentinelPassword, err = password(file); err != nil {
			return nil, err
		}
		r.SentinelPasswordFile = file
	}
	primary := r.Nodes[0]
	if err := waitFor(ctx, func() error { return replicasUp(primary, cfg.Replicas) }); err != nil {
		return nil, fmt.Errorf("redis sentinel replicas: %w", err)
	}
	for i := range cfg.Sentinels {
		s, err := StartSentinel(ctx, SentinelConfig{
			Dir:             filepath.Join(cfg.Dir, "sentinel"+strconv.Itoa(i)),
			MasterName:      cfg.MasterName,
			MasterAddr:      primary.Addr,
			MasterPassword:  pw,
			Quorum:          quorum,
			DownAfter:       cfg.DownAfter,
			FailoverTimeout: cfg.FailoverTimeout,
			Password:        r.SentinelPassword,
			Binary:          cfg.Binary,
		})
		if err != nil {
			return nil, fmt.Errorf("redis sentinel %d: %w", i, err)
		}
		r.Sentinels = append(r.Sentinels, s)
	}
	// Sentinels find the replicas in the primary's INFO and each other
	// through its __sentinel__:hello channel, within seconds.
	want := fmt.Sprintf("status=ok,address=%s,slaves=%d,sentinels=%d", primary.Addr, cfg.Replicas, cfg.Sentinels)
	for _, s := range r.Sentinels {
		err := waitFor(ctx, func() error {
			f, err := info(s.Addr, s.Password, "INFO sentinel")
			if err != nil {
				return err
			}
			if got := f["master0"]; !strings.Contains(got, "name="+cfg.MasterName+","+want) {
				return fmt.Errorf("sentinel %s: master0:%s, want %s", s.Addr, got, want)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

// replicasUp returns nil once primary reports n replicas online.
func replicasUp(primary *Redis, n int) error {
	f, err := info(primary.Addr, primary.Password, "INFO replication")
	if err != nil {
		return err
	}
	if f["role"] != "master" || f["connected_slaves"] != strconv.Itoa(n) {
		return fmt.Errorf("%s: role:%s connected_slaves:%s, want master with %d", primary.Addr, f["role"], f["connected_slaves"], n)
	}
	for i := range n {
		if v := f["slave"+strconv.Itoa(i)]; !strings.Contains(v, "state=online") {
			return fmt.Errorf("%s: slave%d:%s, not online", primary.Addr, i, v)
		}
	}
	return nil
}

// waitFor polls cond until it returns nil, for at most a minute.
func waitFor(ctx context.Context, cond func() error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within 1m: %w", err)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
