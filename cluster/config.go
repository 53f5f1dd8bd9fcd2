package cluster

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPrefix is the etcd key prefix of a cluster when none is configured.
const DefaultPrefix = "/clickagg"

// MinLeaseTTL is the shortest lease etcd grants with its default timing: it
// raises shorter TTLs to about 1.5 election timeouts anyway.
const MinLeaseTTL = 2 * time.Second

// Config says how to reach etcd and how long a member's lease lives.
type Config struct {
	// Endpoints are etcd client URLs, e.g. http://127.0.0.1:2379.
	Endpoints []string
	// Prefix is the key prefix of this cluster's state.
	Prefix string
	// DialTimeout bounds the first connection to etcd.
	DialTimeout time.Duration
	// LeaseTTL is how long a member stays registered after its process
	// stops refreshing its lease; it is how fast a dead aggregator's
	// partitions move.
	LeaseTTL time.Duration
}

// RegisterFlags registers the etcd flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Endpoints = []string{"http://127.0.0.1:2379"}
	fs.Var((*listFlag)(&c.Endpoints), "etcd.endpoints", "comma-separated etcd client URLs that hold membership, partition assignment and the coordinator election")
	fs.StringVar(&c.Prefix, "etcd.prefix", DefaultPrefix, "etcd key prefix of this cluster; clusters sharing an etcd need different prefixes")
	fs.DurationVar(&c.DialTimeout, "etcd.dial-timeout", 5*time.Second, "how long to wait for the first connection to etcd before giving up")
	fs.DurationVar(&c.LeaseTTL, "etcd.lease-ttl", 10*time.Second, "whole seconds, at least 2s: how long a stopped process stays a member; a dead aggregator's partitions move after about this long, and shorter values risk moves on brief etcd hiccups")
}

// Validate checks c.
func (c *Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("-etcd.endpoints: must not be empty")
	}
	for _, e := range c.Endpoints {
		if strings.TrimSpace(e) == "" {
			return fmt.Errorf("-etcd.endpoints %q: contains an empty endpoint", strings.Join(c.Endpoints, ","))
		}
	}
	if err := validPrefix(c.Prefix); err != nil {
		return fmt.Errorf("-etcd.prefix: %w", err)
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("-etcd.dial-timeout %v: must be positive", c.DialTimeout)
	}
	if err := validTTL(c.LeaseTTL); err != nil {
		return fmt.Errorf("-etcd.lease-ttl: %w", err)
	}
	return nil
}

func validPrefix(p string) error {
	if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("prefix %q: must start with / and not end with /", p)
	}
	return nil
}

// validTTL refuses TTLs that etcd would silently change: leases are granted
// in whole seconds and never shorter than MinLeaseTTL.
func validTTL(ttl time.Duration) error {
	if ttl < MinLeaseTTL {
		return fmt.Errorf("ttl %v: must be at least %v", ttl, MinLeaseTTL)
	}
	if ttl%time.Second != 0 {
		return fmt.Errorf("ttl %v: must be a whole number of seconds", ttl)
	}
	return nil
}

// Dial connects to the etcd of cfg. The keepalive pings let the client notice
// a dead connection well within a lease TTL, so a healthy process does not
// lose its lease to a half-open TCP connection.
func Dial(cfg Config) (*clientv3.Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("dial etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return cli, nil
}

// listFlag is a comma-separated list flag.
type listFlag []string

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *listFlag) Set(s string) error {
	var out []string
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	*l = out
	return nil
}
