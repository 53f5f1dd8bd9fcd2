package redisconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/durable"
)

// DefaultAddr is -redis.addr's default.
const DefaultAddr = "127.0.0.1:6379"

// DefaultWaitTimeout is -redis.wait-timeout's default.
const DefaultWaitTimeout = time.Second

// Config says how to reach Redis. The zero value names no Redis:
// RegisterFlags sets -redis.addr's default.
type Config struct {
	Addr           string
	ClusterAddrs   string
	SentinelMaster string
	SentinelAddrs  string
	Username       string
	PasswordFile   string
	// SentinelPasswordFile holds the sentinels' own password (their
	// requirepass), which need not be the data nodes'.
	SentinelPasswordFile string
	TLS                  bool
	TLSCAFile            string
	TLSServerName        string
	// WaitReplicas is how many replicas each acknowledged write must
	// reach within WaitTimeout (package durable); 0 does not wait.
	WaitReplicas int
	WaitTimeout  time.Duration
	// CheckTimeout bounds NewClient's check of a Cluster's seeds or a
	// Sentinel's master; 0 means 10 seconds.
	CheckTimeout time.Duration

	// addrSet is whether -redis.addr was given (flag or environment): its
	// default stands aside for another mode, an explicit value conflicts.
	addrSet bool
}

// addrValue is -redis.addr, remembering whether it was set.
type addrValue struct{ c *Config }

func (v addrValue) String() string {
	if v.c == nil {
		return ""
	}
	return v.c.Addr
}

func (v addrValue) Set(s string) error { v.c.Addr, v.c.addrSet = s, true; return nil }

// addr is the single server's address, empty in the other modes.
func (c *Config) addr() string {
	if !c.addrSet && c.Addr == DefaultAddr && (c.ClusterAddrs != "" || c.SentinelMaster != "") {
		return ""
	}
	return c.Addr
}

// RegisterFlags registers the -redis.* connection flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Addr = DefaultAddr
	fs.Var(addrValue{c}, "redis.addr", "`host:port` of a single Redis server (partition logs, snapshots, published top ads); its default gives way to -redis.cluster-addrs or -redis.sentinel-master")
	fs.StringVar(&c.ClusterAddrs, "redis.cluster-addrs", "", "Redis Cluster seed addresses, comma-separated host:port; the client learns the other nodes from them")
	fs.StringVar(&c.SentinelMaster, "redis.sentinel-master", "", "name of the Redis primary that the sentinels of -redis.sentinel-addrs watch")
	fs.StringVar(&c.SentinelAddrs, "redis.sentinel-addrs", "", "Sentinel addresses, comma-separated host:port, asked for the primary of -redis.sentinel-master; list them all")
	fs.StringVar(&c.SentinelPasswordFile, "redis.sentinel-password-file", "", "file holding the sentinels' own password (their requirepass; may be the same file as -redis.password-file), read at start; empty: the sentinels need none")
	fs.StringVar(&c.Username, "redis.username", "", "Redis ACL user; empty is the default user (needs -redis.password-file)")
	fs.StringVar(&c.PasswordFile, "redis.password-file", "", "file holding the Redis password (a mounted Kubernetes Secret), read at start; a trailing newline is ignored; empty: no password")
	fs.BoolVar(&c.TLS, "redis.tls", false, "connect to Redis over TLS")
	fs.StringVar(&c.TLSCAFile, "redis.tls-ca-file", "", "PEM file of the CA certificates that Redis's certificate must chain to (needs -redis.tls); empty: the system's roots")
	fs.StringVar(&c.TLSServerName, "redis.tls-server-name", "", "name Redis's certificate must hold (needs -redis.tls); empty: the host of each address dialled")
	fs.IntVar(&c.WaitReplicas, "redis.wait-replicas", 0, "replicas each click append and snapshot write must reach (Redis WAIT) before it is acknowledged, else it is refused; 0: the primary alone")
	fs.DurationVar(&c.WaitTimeout, "redis.wait-timeout", DefaultWaitTimeout, "how long a write waits for -redis.wait-replicas replicas before it is refused")
}

// Durability returns the options of package durable's writer that
// -redis.wait-replicas and -redis.wait-timeout give.
func (c *Config) Durability() durable.Options {
	return durable.Options{Replicas: c.WaitReplicas, Timeout: c.WaitTimeout}
}

// Validate checks that exactly one mode is chosen and that the password
// and CA files can be read and used.
func (c *Config) Validate() error {
	modes := 0
	addr := c.addr()
	for _, s := range []string{addr, c.ClusterAddrs, c.SentinelMaster} {
		if s != "" {
			modes++
		}
	}
	switch {
	case modes == 0:
		return errors.New("-redis.addr, -redis.cluster-addrs and -redis.sentinel-master are all empty: set one")
	case modes > 1 && addr != "":
		other := "-redis.cluster-addrs"
		if c.SentinelMaster != "" {
			other = "-redis.sentinel-master"
		}
		return fmt.Errorf("-redis.addr %q and %s are both set: set one", addr, other)
	case modes > 1:
		return errors.New("-redis.cluster-addrs and -redis.sentinel-master are both set: set one")
	}
	if c.ClusterAddrs != "" {
		if _, err := addrList("-redis.cluster-addrs", c.ClusterAddrs); err != nil {
			return err
		}
	}
	if c.SentinelMaster != "" {
		if c.SentinelAddrs == "" {
			return fmt.Errorf("-redis.sentinel-master %q: needs -redis.sentinel-addrs, the sentinels to ask for it", c.SentinelMaster)
		}
		if _, err := addrList("-redis.sentinel-addrs", c.SentinelAddrs); err != nil {
			return err
		}
	} else if c.SentinelAddrs != "" {
		return errors.New("-redis.sentinel-addrs: set without -redis.sentinel-master, the primary's name to ask them for")
	} else if c.SentinelPasswordFile != "" {
		return errors.New("-redis.sentinel-password-file: set without -redis.sentinel-master")
	}
	if c.Username != "" && c.PasswordFile == "" {
		return fmt.Errorf("-redis.username %q: needs -redis.password-file", c.Username)
	}
	if c.PasswordFile != "" {
		if _, err := readPassword(c.PasswordFile); err != nil {
			return err
		}
	}
	if c.SentinelPasswordFile != "" {
		if _, err := ReadPasswordFile(c.SentinelPasswordFile, "-redis.sentinel-password-file"); err != nil {
			return err
		}
	}
	if !c.TLS {
		if c.TLSCAFile != "" {
			return errors.New("-redis.tls-ca-file: set without -redis.tls")
		}
		if c.TLSServerName != "" {
			return errors.New("-redis.tls-server-name: set without -redis.tls")
		}
	}
	if _, err := c.tlsConfig(); err != nil {
		return err
	}
	return c.Durability().Validate()
}

// String describes where Redis is, for logs and errors; it holds no secret.
func (c *Config) String() string {
	switch {
	case c.ClusterAddrs != "":
		return "cluster " + c.ClusterAddrs
	case c.SentinelMaster != "":
		return fmt.Sprintf("sentinel master %s (via %s)", c.SentinelMaster, c.SentinelAddrs)
	default:
		return c.addr()
	}
}

// Options returns the client options the configuration gives, reading
// the password and CA files.
func (c *Config) Options() (*redis.UniversalOptions, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	o := &redis.UniversalOptions{Username: c.Username}
	if c.WaitReplicas > 0 {
		// A pipeline reads every reply, WAIT's too, within the read
		// timeout (go-redis's default 3s): it must outlast the wait.
		o.ReadTimeout = max(3*time.Second, c.WaitTimeout+3*time.Second)
	}
	if c.PasswordFile != "" {
		pw, err := readPassword(c.PasswordFile)
		if err != nil {
			return nil, err
		}
		o.Password = pw
	}
	var err error
	if o.TLSConfig, err = c.tlsConfig(); err != nil {
		return nil, err
	}
	switch {
	case c.ClusterAddrs != "":
		o.Addrs, _ = addrList("-redis.cluster-addrs", c.ClusterAddrs)
		// Even one seed means a cluster.
		o.IsClusterMode = true
	case c.SentinelMaster != "":
		o.MasterName = c.SentinelMaster
		o.Addrs, _ = addrList("-redis.sentinel-addrs", c.SentinelAddrs)
		if c.SentinelPasswordFile != "" {
			if o.SentinelPassword, err = ReadPasswordFile(c.SentinelPasswordFile, "-redis.sentinel-password-file"); err != nil {
				return nil, err
			}
		}
	default:
		o.Addrs = []string{c.addr()}
	}
	return o, nil
}

// NewClient returns a client for the configuration. In Cluster and
// Sentinel modes it first checks, within CheckTimeout, that a seed answers
// as a cluster node and that the cluster assigns every hash slot, or that
// a sentinel knows the master and the master answers; its error names the
// flag to fix. A single server is not contacted. A Sentinel client dials
// only a primary that most sentinels name and none contradicts (see
// agreement). poolSize is the connection pool per server, which only the
// process knows it needs; 0 is go-redis's default.
func (c *Config) NewClient(ctx context.Context, poolSize int) (redis.UniversalClient, error) {
	o, err := c.Options()
	if err != nil {
		return nil, err
	}
	o.PoolSize = poolSize
	timeout := c.CheckTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case c.ClusterAddrs != "":
		rdb := redis.NewClusterClient(o.Cluster())
		if err := c.checkCluster(cctx, rdb); err != nil {
			_ = rdb.Close()
			return nil, err
		}
		return rdb, nil
	case c.SentinelMaster != "":
		if err := c.checkSentinels(cctx, o); err != nil {
			return nil, err
		}
		agree := newAgreement(o)
		fo := o.Failover()
		fo.Dialer = agree.dial
		rdb := &failoverClient{Client: redis.NewFailoverClient(fo), agreement: agree}
		if err := rdb.Ping(cctx).Err(); err != nil {
			_ = rdb.Close()
			if errors.Is(err, ErrSentinelsDisagree) {
				return nil, fmt.Errorf("-redis.sentinel-addrs %s: %w", c.SentinelAddrs, err)
			}
			if cerr := c.CredentialsError(err); cerr != nil {
				return nil, fmt.Errorf("-redis.sentinel-master %s: %w", c.SentinelMaster, cerr)
			}
			return nil, fmt.Errorf("-redis.sentinel-master %s: the primary the sentinels name does not answer: %w", c.SentinelMaster, err)
		}
		return rdb, nil
	default:
		return redis.NewClient(o.Simple()), nil
	}
}

// checkCluster checks that a seed answers as a cluster node and that the
// cluster serves every hash slot: clickagg's keys hash to any slot, and a
// slot that no node holds would fail every write to it with CLUSTERDOWN
// until someone assigns it (a cluster half created, a node removed with
// its slots). A slot whose primary is down but assigned passes: failover
// brings it back without anyone's help.
func (c *Config) checkCluster(ctx context.Context, rdb *redis.ClusterClient) error {
	// The PING goes to a node of the slot map, which the client first
	// loads from a seed, trying each in turn: it fails when no seed
	// answers as a cluster node.
	if err := rdb.Ping(ctx).Err(); err != nil {
		if cerr := c.CredentialsError(err); cerr != nil {
			return fmt.Errorf("-redis.cluster-addrs %s: %w", c.ClusterAddrs, cerr)
		}
		return fmt.Errorf("-redis.cluster-addrs %s: no seed answered as a Redis Cluster node: %w", c.ClusterAddrs, err)
	}
	//lint:ignore SA1019 CLUSTER SHARDS needs Redis 7; SLOTS answers on 6 and 7, and is what the client itself loads its slot map with.
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		return fmt.Errorf("-redis.cluster-addrs %s: CLUSTER SLOTS: %w", c.ClusterAddrs, err)
	}
	if missing, n := uncovered(slots); n > 0 {
		return fmt.Errorf("-redis.cluster-addrs %s: the Redis Cluster assigns hash slots %s (%d of %d) to no node: assign them (redis-cli --cluster fix, or CLUSTER ADDSLOTSRANGE) and start again",
			c.ClusterAddrs, missing, n, clusterSlots)
	}
	return nil
}

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// uncovered returns the hash slots that no range of slots names, as
// comma-separated ranges, and how many they are.
func uncovered(slots []redis.ClusterSlot) (string, int) {
	var covered [clusterSlots]bool
	for _, s := range slots {
		for i := max(s.Start, 0); i <= min(s.End, clusterSlots-1); i++ {
			covered[i] = true
		}
	}
	var ranges []string
	n := 0
	for i := 0; i < clusterSlots; {
		if covered[i] {
			i++
			continue
		}
		j := i
		for j+1 < clusterSlots && !covered[j+1] {
			j++
		}
		n += j - i + 1
		if i == j {
			ranges = append(ranges, strconv.Itoa(i))
		} else {
			ranges = append(ranges, fmt.Sprintf("%d-%d", i, j))
		}
		i = j + 1
	}
	return strings.Join(ranges, ","), n
}

// checkSentinels asks each sentinel for the master, so that a wrong name
// is told apart from sentinels that cannot be reached, and a sentinel
// that refuses clickagg's sentinel password from one that is down.
func (c *Config) checkSentinels(ctx context.Context, o *redis.UniversalOptions) error {
	var errs []error
	for _, addr := range o.Addrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr, Password: o.SentinelPassword, TLSConfig: o.TLSConfig, MaxRetries: -1})
		_, err := sc.GetMasterAddrByName(ctx, c.SentinelMaster).Result()
		_ = sc.Close()
		if err == nil {
			return nil
		}
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("-redis.sentinel-master %q: sentinel %s knows no master by that name", c.SentinelMaster, addr)
		}
		if refused(err) {
			if c.SentinelPasswordFile == "" {
				return fmt.Errorf("-redis.sentinel-password-file: empty, and sentinel %s requires a password: %w: %w", addr, ErrCredentials, err)
			}
			return fmt.Errorf("-redis.sentinel-password-file %s: sentinel %s refused it: %w: %w", c.SentinelPasswordFile, addr, ErrCredentials, err)
		}
		errs = append(errs, fmt.Errorf("sentinel %s: %w", addr, err))
	}
	return fmt.Errorf("-redis.sentinel-addrs %s: no sentinel answered: %w", c.SentinelAddrs, errors.Join(errs...))
}

// ErrCredentials means that Redis refused clickagg's user or password, or
// the user may not run a command clickagg needs: configuration that
// retrying cannot fix.
var ErrCredentials = errors.New("redis refused the credentials")

// CredentialsError returns err wrapped with ErrCredentials and naming the
// flag to fix when it is Redis refusing the configured user or password
// (WRONGPASS, NOAUTH, NOPERM, or a password given to a Redis that has
// none); otherwise nil. A client reports these on the first command of a
// connection, so callers that wait for Redis with retries (a single server
// is not contacted by NewClient) ask this of their errors and stop.
func (c *Config) CredentialsError(err error) error {
	if err == nil || errors.Is(err, ErrCredentials) || !refused(err) {
		return nil
	}
	who := "the default user"
	if c.Username != "" {
		who = fmt.Sprintf("user %q (-redis.username)", c.Username)
	}
	switch {
	case redis.IsPermissionError(err):
		return fmt.Errorf("-redis.username %q: the user may not run a command clickagg needs (give it ~* +@all): %w: %w", c.Username, ErrCredentials, err)
	case c.PasswordFile == "":
		return fmt.Errorf("-redis.password-file: empty, and Redis requires a password for %s: %w: %w", who, ErrCredentials, err)
	default:
		return fmt.Errorf("-redis.password-file %s: Redis refused this password for %s: %w: %w", c.PasswordFile, who, ErrCredentials, err)
	}
}

// refused reports whether err is a server refusing a client's
// credentials.
func refused(err error) bool {
	return redis.IsAuthError(err) || redis.IsPermissionError(err) ||
		// AUTH with a password to a server that has none.
		strings.Contains(err.Error(), "called without any password configured")
}

func (c *Config) tlsConfig() (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("-redis.tls-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-redis.tls-ca-file %s: no PEM certificate in it", c.TLSCAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// readPassword reads the password file. Only one trailing newline goes:
// a password may end in other white space.
func readPassword(path string) (string, error) {
	return ReadPasswordFile(path, "-redis.password-file")
}

// ReadPasswordFile reads a password file as -redis.password-file is read,
// for tools that reach a Redis of their own; flagName goes in errors.
func ReadPasswordFile(path, flagName string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pw == "" {
		return "", fmt.Errorf("%s %s: empty; leave the flag empty for no password", flagName, path)
	}
	return pw, nil
}

func addrList(flagName, s string) ([]string, error) {
	var addrs []string
	for a := range strings.SplitSeq(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("%s %q: an empty address", flagName, s)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}
