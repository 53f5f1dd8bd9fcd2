package redisconf_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// TestTLS starts a redis-server with a TLS port whose certificate a CA of
// the test signed, for the name redis.test: a client with -redis.tls, the
// CA and that name connects; without the CA, or expecting another name,
// it is refused; plain text on the TLS port fails.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := serverCert(t, dir)
	otherCAFile := tlstest.NewCA(t, "other ca").WriteCA(t, t.TempDir())

	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// The plain port stays for StartRedis's readiness check; the clients
	// use the TLS one.
	srv, err := localserver.StartRedis(context.Background(), localserver.RedisConfig{Dir: filepath.Join(dir, "redis"), AppendFsync: "no",
		Args: []string{"--tls-port", fmt.Sprint(port), "--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	pw := "-redis.password-file=" + srv.PasswordFile

	ctx := context.Background()
	rdb := newClient(t, "-redis.addr="+addr, pw, "-redis.tls", "-redis.tls-ca-file="+caFile, "-redis.tls-server-name=redis.test")
	if err := rdb.Set(ctx, "over-tls", "1", 0).Err(); err != nil {
		t.Fatalf("SET over TLS: %v", err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"another CA", []string{"-redis.tls", "-redis.tls-ca-file=" + otherCAFile, "-redis.tls-server-name=redis.test"}, "certificate signed by unknown authority"},
		{"another name", []string{"-redis.tls", "-redis.tls-ca-file=" + caFile, "-redis.tls-server-name=other.test"}, "not other.test"},
		{"no TLS", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, append([]string{"-redis.addr=" + addr, pw}, tc.args...)...)
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			err := c.Ping(cctx).Err()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("PING: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestSentinelTLS: a primary and its sentinel both speak TLS only to
// clients (the sentinel reaches the primary over TLS too): a client with
// -redis.tls asks the sentinel over TLS and dials the primary it names
// over TLS (redisconf's own dialer, which replaces go-redis's).
func TestSentinelTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := serverCert(t, dir)
	tlsArgs := []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no"}

	ctx := context.Background()
	tlsAddr := testserver.DeadAddr(t)
	_, port, _ := net.SplitHostPort(tlsAddr)
	srv, err := localserver.StartRedis(ctx, localserver.RedisConfig{Dir: filepath.Join(dir, "redis"), AppendFsync: "no",
		Args: append([]string{"--tls-port", port}, tlsArgs...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	sentinelTLS := testserver.DeadAddr(t)
	_, sport, _ := net.SplitHostPort(sentinelTLS)
	s, err := localserver.StartSentinel(ctx, localserver.SentinelConfig{
		Dir: filepath.Join(dir, "sentinel"), MasterName: "m", MasterAddr: tlsAddr, MasterPassword: srv.Password,
		Args: append([]string{"--tls-port", sport, "--tls-replication", "yes"}, tlsArgs...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)

	args := []string{"-redis.sentinel-master=m", "-redis.sentinel-addrs=" + sentinelTLS, "-redis.password-file=" + srv.PasswordFile,
		"-redis.tls", "-redis.tls-ca-file=" + caFile, "-redis.tls-server-name=redis.test"}
	// The sentinel names the primary once it has reached it, over TLS.
	testserver.Eventually(t, 30*time.Second, func() error {
		c := parse(t, args...)
		c.CheckTimeout = 5 * time.Second
		client, err := c.NewClient(ctx, 0)
		if err != nil {
			return err
		}
		defer client.Close()
		return client.Set(ctx, "sentinel-over-tls", "1", 0).Err()
	})
}

// serverCert writes, under dir, a test CA and a certificate and key it
// signed for the name redis.test, and returns their files.
func serverCert(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	ca := tlstest.NewCA(t, "test ca")
	certFile, keyFile = ca.Issue(t, tlstest.Options{CommonName: "redis.test", DNSNames: []string{"redis.test"}}).WriteFiles(t, dir)
	return ca.WriteCA(t, dir), certFile, keyFile
}
