package cluster

import (
	"context"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// roundTrip stores a partition count through Dial's client and reads it
// back: a write and a read that etcd's TLS and auth let through.
func roundTrip(t *testing.T, cfg Config) {
	t.Helper()
	cli, err := Dial(ctxT(t), cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer cli.Close()
	c := NewClient(cli, cfg.Prefix)
	if n, err := c.EnsurePartitions(ctxT(t), 8); err != nil || n != 8 {
		t.Fatalf("store partitions = %d, %v", n, err)
	}
	if n, err := c.EnsurePartitions(ctxT(t), 0); err != nil || n != 8 {
		t.Fatalf("read partitions = %d, %v, want 8", n, err)
	}
}

// dialFails checks that Dial fails with an error that contains want, the
// flag to fix.
func dialFails(t *testing.T, cfg Config, want string) {
	t.Helper()
	cli, err := Dial(ctxT(t), cfg, testLogger(t))
	if err == nil {
		cli.Close()
		t.Fatalf("Dial succeeded, want an error naming %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("Dial: %v\nwant it to contain %q", err, want)
	}
}

func etcdConfig(endpoint string) Config {
	// The refusals only show once the probe's read times out: keep it short.
	return Config{Endpoints: []string{endpoint}, Prefix: "/t", DialTimeout: 2 * time.Second, LeaseTTL: ttl}
}

// TestDialTLS dials an etcd that serves TLS and requires client
// certificates (--client-cert-auth) with the right files, and with each
// mistake an operator makes, which must name the flag to fix.
func TestDialTLS(t *testing.T) {
	ca, other := tlstest.NewCA(t, "etcd-ca"), tlstest.NewCA(t, "other-ca")
	e, caFile := testserver.EtcdTLS(t, ca)
	cert, key := ca.Issue(t, tlstest.Options{CommonName: "clickagg"}).WriteFiles(t, t.TempDir())
	od := t.TempDir()
	otherCert, otherKey := other.Issue(t, tlstest.Options{CommonName: "clickagg"}).WriteFiles(t, od)
	otherCA := other.WriteCA(t, od)

	good := etcdConfig(e.Endpoint)
	good.CertFile, good.KeyFile, good.CAFile = cert, key, caFile
	roundTrip(t, good)

	plain := strings.Replace(e.Endpoint, "https://", "http://", 1)
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no client certificate", func(c *Config) { c.CertFile, c.KeyFile = "", "" }, "-etcd.cert-file: not set, and etcd requires a client certificate"},
		{"certificate of another CA", func(c *Config) { c.CertFile, c.KeyFile = otherCert, otherKey }, "-etcd.cert-file " + otherCert + ": etcd refused this client certificate"},
		{"CA file of another CA", func(c *Config) { c.CAFile = otherCA }, "-etcd.ca-file " + otherCA + ": etcd's certificate does not chain to it"},
		{"no CA file", func(c *Config) { c.CAFile = "" }, "-etcd.ca-file: not set, and etcd's certificate does not chain to the system's roots"},
		{"no TLS flags, http://", func(c *Config) { *c = etcdConfig(plain) }, "-etcd.endpoints " + plain + ": etcd serves TLS there; use https://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each refusal shows only once a dial times out: wait
			// for all of them at once.
			t.Parallel()
			c := good
			tc.change(&c)
			dialFails(t, c, tc.want)
		})
	}
}

// TestDialTLSToPlaintext names -etcd.endpoints when https:// points at an
// etcd that serves plaintext.
func TestDialTLSToPlaintext(t *testing.T) {
	e := testserver.Etcd(t)
	ca := tlstest.NewCA(t, "etcd-ca")
	c := etcdConfig(strings.Replace(e.Endpoint, "http://", "https://", 1))
	c.CAFile = ca.WriteCA(t, t.TempDir())
	dialFails(t, c, "-etcd.endpoints "+c.Endpoints[0]+": TLS handshake not answered")
}

// TestDialAuth dials an etcd with authentication enabled.
func TestDialAuth(t *testing.T) {
	e := testserver.EtcdWith(t, localserver.EtcdConfig{Username: "clickagg", Password: "s3cret"})
	dir := t.TempDir()
	right, wrong := filepath.Join(dir, "right"), filepath.Join(dir, "wrong")
	tlstest.WriteFile(t, right, []byte("s3cret\n"))
	tlstest.WriteFile(t, wrong, []byte("guess\n"))

	c := etcdConfig(e.Endpoint)
	c.Username, c.PasswordFile = "clickagg", right
	roundTrip(t, c)

	c.PasswordFile = wrong
	dialFails(t, c, "-etcd.password-file "+wrong+": etcd refused the password of -etcd.username clickagg")
	c.Username, c.PasswordFile = "", ""
	dialFails(t, c, "-etcd.username: etcd has authentication enabled")
}

// TestDialAuthByCertificate: with auth and --client-cert-auth on, etcd
// takes the user from the client certificate's common name when no
// -etcd.username is given; a name that is no user is denied, naming the
// flags to fix.
func TestDialAuthByCertificate(t *testing.T) {
	ca := tlstest.NewCA(t, "etcd-ca")
	dir := t.TempDir()
	caFile := ca.WriteCA(t, dir)
	srvCert, srvKey := ca.Issue(t, tlstest.Options{CommonName: "etcd"}).WriteFiles(t, dir)
	e := testserver.EtcdWith(t, localserver.EtcdConfig{CertFile: srvCert, KeyFile: srvKey, ClientCAFile: caFile, Username: "clickagg", Password: "s3cret"})

	c := etcdConfig(e.Endpoint)
	c.CAFile = caFile
	c.CertFile, c.KeyFile = ca.Issue(t, tlstest.Options{CommonName: "clickagg"}).WriteFiles(t, t.TempDir())
	roundTrip(t, c)
	c.CertFile, c.KeyFile = ca.Issue(t, tlstest.Options{CommonName: "nobody"}).WriteFiles(t, t.TempDir())
	dialFails(t, c, "-etcd.username: not set, and etcd denies reading /t to the user named by -etcd.cert-file's common name")
}

// TestDialReloadsTLSFiles rotates etcd's CA under a running client: etcd
// restarts with a certificate of a new CA that it also requires of
// clients, the client's files are replaced, and the same client reaches
// etcd again, which needs the new CA and the new certificate read from
// the files at the reconnect's handshake.
func TestDialReloadsTLSFiles(t *testing.T) {
	oldCA, newCA := tlstest.NewCA(t, "old-ca"), tlstest.NewCA(t, "new-ca")
	srv := func(ca *tlstest.CA, clientPort, peerPort int, dir string) *localserver.Etcd {
		d := t.TempDir()
		cert, key := ca.Issue(t, tlstest.Options{CommonName: "etcd"}).WriteFiles(t, d)
		e, err := localserver.StartEtcd(localserver.EtcdConfig{Dir: dir, ClientPort: clientPort, PeerPort: peerPort, CertFile: cert, KeyFile: key, ClientCAFile: ca.WriteCA(t, d)})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	dataDir := t.TempDir()
	e := srv(oldCA, 0, 0, dataDir)
	defer func() { e.Close() }()

	dir := t.TempDir()
	cfg := etcdConfig(e.Endpoint)
	cfg.CAFile = oldCA.WriteCA(t, dir)
	cfg.CertFile, cfg.KeyFile = oldCA.Issue(t, tlstest.Options{CommonName: "clickagg"}).WriteFiles(t, dir)
	cli, err := Dial(ctxT(t), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	c := NewClient(cli, cfg.Prefix)
	if _, err := c.EnsurePartitions(ctxT(t), 8); err != nil {
		t.Fatal(err)
	}

	leaf := newCA.Issue(t, tlstest.Options{CommonName: "clickagg"})
	tlstest.ReplaceFile(t, cfg.CAFile, newCA.CertPEM)
	tlstest.ReplaceFile(t, cfg.CertFile, leaf.CertPEM)
	tlstest.ReplaceFile(t, cfg.KeyFile, leaf.KeyPEM)
	e.Close()
	e = srv(newCA, port(t, e.Endpoint), port(t, e.PeerURL), dataDir)

	testserver.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(ctxT(t), 2*time.Second)
		defer cancel()
		n, err := c.EnsurePartitions(ctx, 0)
		if err == nil && n != 8 {
			t.Fatalf("partitions after the rotation = %d, want 8", n)
		}
		return err
	})
}

func port(t *testing.T, u string) int {
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p.Port())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestConfigValidateEtcdSecurity checks that each mistake in the TLS and
// auth flags names its flag.
func TestConfigValidateEtcdSecurity(t *testing.T) {
	ca := tlstest.NewCA(t, "etcd-ca")
	dir := t.TempDir()
	cert, key := ca.Issue(t, tlstest.Options{}).WriteFiles(t, dir)
	caFile := ca.WriteCA(t, dir)
	pw, empty, newline := filepath.Join(dir, "pw"), filepath.Join(dir, "empty"), filepath.Join(dir, "newline")
	tlstest.WriteFile(t, pw, []byte("pw\n"))
	tlstest.WriteFile(t, empty, nil)
	tlstest.WriteFile(t, newline, []byte("\n"))
	missing := filepath.Join(dir, "missing")
	base := Config{Endpoints: []string{"https://127.0.0.1:2379"}, Prefix: "/clickagg", DialTimeout: time.Second, LeaseTTL: 10 * time.Second}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // "" means valid
	}{
		{"https, system roots", func(c *Config) {}, ""},
		{"mutual TLS", func(c *Config) { c.CertFile, c.KeyFile, c.CAFile = cert, key, caFile }, ""},
		{"user and password", func(c *Config) { c.Username, c.PasswordFile = "u", pw }, ""},
		{"certificate without key", func(c *Config) { c.CertFile = cert }, "-etcd.cert-file: set without -etcd.key-file"},
		{"key without certificate", func(c *Config) { c.KeyFile = key }, "-etcd.key-file: set without -etcd.cert-file"},
		{"missing CA file", func(c *Config) { c.CAFile = missing }, "-etcd.ca-file: stat " + missing},
		{"CA file without certificates", func(c *Config) { c.CAFile = pw }, "-etcd.ca-file " + pw + ": no PEM certificate in it"},
		{"certificate with http://", func(c *Config) {
			c.Endpoints = []string{"http://127.0.0.1:2379"}
			c.CertFile, c.KeyFile = cert, key
		}, `-etcd.endpoints "http://127.0.0.1:2379": -etcd.cert-file is set, so every endpoint must be https://`},
		{"CA file with http://", func(c *Config) { c.Endpoints, c.CAFile = []string{"127.0.0.1:2379"}, caFile }, `-etcd.endpoints "127.0.0.1:2379": -etcd.ca-file is set, so every endpoint must be https://`},
		{"mixed schemes", func(c *Config) { c.Endpoints = append(c.Endpoints, "http://127.0.0.1:2380") }, "-etcd.endpoints \"https://127.0.0.1:2379,http://127.0.0.1:2380\": mixes https:// and other endpoints"},
		{"username without password file", func(c *Config) { c.Username = "u" }, "-etcd.username u: needs -etcd.password-file"},
		{"password file without username", func(c *Config) { c.PasswordFile = pw }, "-etcd.password-file: set without -etcd.username"},
		{"missing password file", func(c *Config) { c.Username, c.PasswordFile = "u", missing }, "-etcd.password-file: open " + missing},
		{"empty password file", func(c *Config) { c.Username, c.PasswordFile = "u", empty }, "-etcd.password-file " + empty + ": empty"},
		{"password file of a newline", func(c *Config) { c.Username, c.PasswordFile = "u", newline }, "-etcd.password-file " + newline + ": empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.change(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
	c := base
	c.Username, c.PasswordFile = "u", pw
	if p, err := c.password(); err != nil || p != "pw" {
		t.Fatalf("password = %q, %v; want the file without its newline", p, err)
	}
}
