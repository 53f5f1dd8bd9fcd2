package cluster

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/clickagg/clickagg/tlsconf"
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

	// CertFile, KeyFile and CAFile are the client's TLS files, loaded and
	// reloaded by tlsconf; any of them means TLS to https:// endpoints.
	CertFile, KeyFile, CAFile string
	// Username and PasswordFile turn on etcd authentication; the password
	// is read once, by Dial.
	Username, PasswordFile string
}

// RegisterFlags registers the etcd flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Endpoints = []string{"http://127.0.0.1:2379"}
	fs.Var((*listFlag)(&c.Endpoints), "etcd.endpoints", "comma-separated etcd client URLs that hold membership, partition assignment and the coordinator election")
	fs.StringVar(&c.Prefix, "etcd.prefix", DefaultPrefix, "etcd key prefix of this cluster; clusters sharing an etcd need different prefixes")
	fs.DurationVar(&c.DialTimeout, "etcd.dial-timeout", 5*time.Second, "how long to wait for the first connection to etcd before giving up")
	fs.DurationVar(&c.LeaseTTL, "etcd.lease-ttl", 10*time.Second, "whole seconds, at least 2s: how long a stopped process stays a member; a dead aggregator's partitions move after about this long")
	fs.StringVar(&c.CertFile, "etcd.cert-file", "", "PEM file of the client certificate presented to etcd (for etcd's --client-cert-auth); needs https:// endpoints; reloaded when it changes")
	fs.StringVar(&c.KeyFile, "etcd.key-file", "", "PEM file of the private key of -etcd.cert-file; reloaded with it")
	fs.StringVar(&c.CAFile, "etcd.ca-file", "", "PEM file of the CA certificates etcd's server certificate must chain to; needs https:// endpoints; reloaded when it changes; empty: the system's roots")
	fs.StringVar(&c.Username, "etcd.username", "", "etcd user to authenticate as, when etcd has auth enabled; needs -etcd.password-file")
	fs.StringVar(&c.PasswordFile, "etcd.password-file", "", "file holding the password of -etcd.username, read at start; a trailing newline is ignored")
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
	if err := c.validateTLS(); err != nil {
		return err
	}
	if c.Username != "" || c.PasswordFile != "" {
		if _, err := c.password(); err != nil {
			return err
		}
	}
	return nil
}

// tls is the tlsconf view of the -etcd.* TLS flags.
func (c *Config) tls() tlsconf.Config {
	return tlsconf.Config{CertFile: c.CertFile, KeyFile: c.KeyFile, CAFile: c.CAFile, FlagPrefix: "etcd"}
}

// validateTLS checks the TLS files and that the endpoints' schemes agree
// with them: etcd's client speaks plaintext to an http:// endpoint even
// when given a certificate, so such a mix would silently leave etcd's
// traffic, and the password, unencrypted.
func (c *Config) validateTLS() error {
	tc := c.tls()
	if err := tc.Validate(); err != nil {
		return err
	}
	https := 0
	for _, e := range c.Endpoints {
		if strings.HasPrefix(e, "https://") {
			https++
		}
	}
	eps := strings.Join(c.Endpoints, ",")
	switch {
	case https > 0 && https < len(c.Endpoints):
		return fmt.Errorf("-etcd.endpoints %q: mixes https:// and other endpoints", eps)
	case tc.Enabled() && https == 0:
		flag := "-etcd.ca-file"
		if c.CertFile != "" {
			flag = "-etcd.cert-file"
		}
		return fmt.Errorf("-etcd.endpoints %q: %s is set, so every endpoint must be https://", eps, flag)
	}
	return nil
}

// password reads -etcd.password-file; an empty password is refused, as
// etcd's client would silently not authenticate with one.
func (c *Config) password() (string, error) {
	switch {
	case c.Username == "":
		return "", errors.New("-etcd.password-file: set without -etcd.username")
	case c.PasswordFile == "":
		return "", fmt.Errorf("-etcd.username %s: needs -etcd.password-file", c.Username)
	}
	b, err := os.ReadFile(c.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("-etcd.password-file: %w", err)
	}
	p := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if p == "" {
		return "", fmt.Errorf("-etcd.password-file %s: empty", c.PasswordFile)
	}
	return p, nil
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
