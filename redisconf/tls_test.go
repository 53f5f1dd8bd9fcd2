package redisconf_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/testserver"
)

// TestTLS starts a redis-server with a TLS port whose certificate a CA of
// the test signed, for the name redis.test: a client with -redis.tls, the
// CA and that name connects; without the CA, or expecting another name,
// it is refused; plain text on the TLS port fails.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := serverCert(t, dir)
	otherCA, _ := newCert(t, nil, nil, "other ca")
	otherCAFile := writePEM(t, dir, "other-ca.pem", "CERTIFICATE", otherCA.Raw)

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
		client, err := c.NewClient(ctx)
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
	ca, caKey := newCert(t, nil, nil, "test ca")
	cert, key := newCert(t, ca, caKey, "redis.test")
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw),
		writePEM(t, dir, "redis.pem", "CERTIFICATE", cert.Raw),
		writePEM(t, dir, "redis.key", "EC PRIVATE KEY", keyDER)
}

// newCert returns a certificate for name signed by parent (self-signed, a
// CA, when parent is nil).
func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		tmpl.DNSNames = []string{name}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
