package tlsconf_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
	"github.com/clickagg/clickagg/tlsconf"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

func logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// files writes a leaf (if any) and a CA into a new directory and returns
// the Config naming them.
func files(t *testing.T, leaf *tlstest.Leaf, ca *tlstest.CA, clientAuth string) tlsconf.Config {
	t.Helper()
	dir := t.TempDir()
	c := tlsconf.Config{ClientAuth: clientAuth}
	if leaf != nil {
		c.CertFile, c.KeyFile = leaf.WriteFiles(t, dir)
	}
	if ca != nil {
		c.CAFile = ca.WriteCA(t, dir)
	}
	return c
}

func load(t *testing.T, c tlsconf.Config) *tlsconf.TLS {
	t.Helper()
	tl, err := tlsconf.Load(c, logger(t))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return tl
}

// server is a gRPC server with the health service over TLS on loopback.
type server struct {
	addr string
	last atomic.Pointer[tlsconf.Identity] // the last caller's identity
}

func serve(t *testing.T, tl *tlsconf.TLS) *server {
	t.Helper()
	s := &server{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(tl.ServerCredentials()), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if id, ok := tlsconf.PeerIdentity(ctx); ok {
				s.last.Store(&id)
			} else {
				s.last.Store(nil)
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	s.addr = lis.Addr().String()
	return s
}

func dial(t *testing.T, addr string, tl *tlsconf.TLS) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(tl.ClientCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// check calls Health.Check and returns the serial of the certificate the
// server presented.
func check(ctx context.Context, cc *grpc.ClientConn) (string, error) {
	var p peer.Peer
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	if err != nil {
		return "", err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return "", fmt.Errorf("status %v", resp.GetStatus())
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", fmt.Errorf("auth info %T, want TLS", p.AuthInfo)
	}
	return info.State.PeerCertificates[0].SerialNumber.String(), nil
}

func TestMutualTLS(t *testing.T) {
	ca, other := tlstest.NewCA(t, "clickagg"), tlstest.NewCA(t, "other")
	srvLeaf := ca.Issue(t, tlstest.Options{CommonName: "aggregator-0"})
	srv := serve(t, load(t, files(t, srvLeaf, ca, tlsconf.ClientAuthRequire)))

	good := ca.Issue(t, tlstest.Options{CommonName: "router", URIs: []string{"spiffe://clickagg/router"}})
	expired := ca.Issue(t, tlstest.Options{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	foreign := other.Issue(t, tlstest.Options{CommonName: "router"})
	for _, tc := range []struct {
		name   string
		leaf   *tlstest.Leaf
		ca     *tlstest.CA
		wantOK bool
	}{
		{"member", good, ca, true},
		{"no client certificate", nil, ca, false},
		{"expired client certificate", expired, ca, false},
		{"client certificate of another CA", foreign, ca, false},
		{"server of another CA", good, other, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := dial(t, srv.addr, load(t, files(t, tc.leaf, tc.ca, "")))
			serial, err := check(t.Context(), cc)
			if !tc.wantOK {
				if status.Code(err) != codes.Unavailable {
					t.Fatalf("call: %v, want Unavailable", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if want := srvLeaf.Cert.SerialNumber.String(); serial != want {
				t.Errorf("server presented serial %s, want %s", serial, want)
			}
			id := srv.last.Load()
			if id == nil || id.CommonName != "router" || len(id.URIs) != 1 || id.URIs[0] != "spiffe://clickagg/router" ||
				len(id.DNSNames) != 1 || id.DNSNames[0] != "localhost" {
				t.Errorf("peer identity %+v, want CN router, URI spiffe://clickagg/router, DNS localhost", id)
			}
		})
	}
}

func TestVerifyIfGiven(t *testing.T) {
	ca := tlstest.NewCA(t, "clickagg")
	srv := serve(t, load(t, files(t, ca.Issue(t, tlstest.Options{}), ca, tlsconf.ClientAuthVerifyIfGiven)))

	// Without a certificate the call goes through, with no identity.
	if _, err := check(t.Context(), dial(t, srv.addr, load(t, files(t, nil, ca, "")))); err != nil {
		t.Fatalf("call without certificate: %v", err)
	}
	if id := srv.last.Load(); id != nil {
		t.Errorf("identity %+v for a client without certificate", id)
	}
	// A certificate given is verified.
	foreign := tlstest.NewCA(t, "other").Issue(t, tlstest.Options{CommonName: "x"})
	_, err := check(t.Context(), dial(t, srv.addr, load(t, files(t, foreign, ca, ""))))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call with another CA's certificate: %v, want Unavailable", err)
	}
}

func TestConfigErrors(t *testing.T) {
	ca := tlstest.NewCA(t, "clickagg")
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	certA, keyA := a.WriteFiles(t, dir)
	keyB := filepath.Join(dir, "key-b.pem")
	tlstest.WriteFile(t, keyB, b.KeyPEM)
	caFile := ca.WriteCA(t, dir)
	half := filepath.Join(dir, "half.pem")
	tlstest.WriteFile(t, half, a.CertPEM[:len(a.CertPEM)/2])
	for _, tc := range []struct {
		name string
		c    tlsconf.Config
		want string
	}{
		{"mismatched key", tlsconf.Config{CertFile: certA, KeyFile: keyB}, "-tls.cert-file " + certA + " with -tls.key-file " + keyB + ": tls: private key does not match public key"},
		{"half-written certificate", tlsconf.Config{CertFile: half, KeyFile: keyA}, "-tls.cert-file " + half + " with -tls.key-file " + keyA + ":"},
		{"missing certificate", tlsconf.Config{CertFile: filepath.Join(dir, "none.pem"), KeyFile: keyA}, "-tls.cert-file: stat " + filepath.Join(dir, "none.pem")},
		{"key without certificate", tlsconf.Config{KeyFile: keyA}, "-tls.key-file: set without -tls.cert-file"},
		{"certificate without key", tlsconf.Config{CertFile: certA}, "-tls.cert-file: set without -tls.key-file"},
		{"CA without certificates", tlsconf.Config{CAFile: keyA}, "-tls.ca-file " + keyA + ": no PEM certificate in it"},
		{"client auth without CA", tlsconf.Config{CertFile: certA, KeyFile: keyA, ClientAuth: "require"}, "-tls.client-auth require: needs -tls.ca-file"},
		{"client auth without certificate", tlsconf.Config{CAFile: caFile, ClientAuth: "verify-if-given"}, "-tls.client-auth verify-if-given: needs -tls.cert-file"},
		{"unknown client auth", tlsconf.Config{CAFile: caFile, ClientAuth: "yes"}, `-tls.client-auth "yes": want none, verify-if-given or require`},
		{"server name without TLS", tlsconf.Config{ServerName: "x"}, "-tls.server-name: set without"},
		// The etcd client's files are named by its own flags.
		{"etcd: mismatched key", tlsconf.Config{CertFile: certA, KeyFile: keyB, FlagPrefix: "etcd"}, "-etcd.cert-file " + certA + " with -etcd.key-file " + keyB + ": tls: private key does not match public key"},
		{"etcd: certificate without key", tlsconf.Config{CertFile: certA, FlagPrefix: "etcd"}, "-etcd.cert-file: set without -etcd.key-file"},
		{"etcd: missing CA", tlsconf.Config{CAFile: filepath.Join(dir, "none.pem"), FlagPrefix: "etcd"}, "-etcd.ca-file: stat " + filepath.Join(dir, "none.pem")},
		{"etcd: CA without certificates", tlsconf.Config{CAFile: keyA, FlagPrefix: "etcd"}, "-etcd.ca-file " + keyA + ": no PEM certificate in it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
			if tc.c.Enabled() {
				if _, err := tlsconf.Load(tc.c, logger(t)); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
					t.Fatalf("Load: %v, want %q", err, tc.want)
				}
			}
		})
	}
	if err := (&tlsconf.Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
}

// TestRotation replaces the server's certificate while calls run on an
// existing connection and on new ones: no call fails, new handshakes get
// the new certificate, the existing connection keeps the old one (it was
// never dropped), and a half-done rotation keeps the last good one.
func TestRotation(t *testing.T) {
	ca := tlstest.NewCA(t, "clickagg")
	leaf1 := ca.Issue(t, tlstest.Options{CommonName: "aggregator-0"})
	sc := files(t, leaf1, ca, tlsconf.ClientAuthRequire)
	srvTLS := load(t, sc)
	srv := serve(t, srvTLS)
	cli := load(t, files(t, ca.Issue(t, tlstest.Options{CommonName: "router"}), ca, ""))
	existing := dial(t, srv.addr, cli)
	if serial, err := check(t.Context(), existing); err != nil || serial != leaf1.Cert.SerialNumber.String() {
		t.Fatalf("first call: serial %s, %v; want %s", serial, err, leaf1.Cert.SerialNumber)
	}

	// Two loops of calls: one on the existing connection, one on a new
	// connection each time, which publishes the serial it saw.
	ctx, cancel := context.WithCancel(t.Context())
	var (
		wg       sync.WaitGroup
		calls    [2]atomic.Int64
		failures atomic.Int64
		firstErr atomic.Pointer[error]
		seen     atomic.Pointer[string]
		oldSeen  atomic.Pointer[string]
	)
	fail := func(err error) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, &err)
	}
	// loop calls call until ctx ends, counting successes in calls[i] and
	// publishing the serial each saw in last.
	loop := func(i int, what string, last *atomic.Pointer[string], call func() (string, error)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				serial, err := call()
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					fail(fmt.Errorf("%s: %w", what, err))
					continue
				}
				last.Store(&serial)
				calls[i].Add(1)
			}
		})
	}
	loop(0, "existing connection", &oldSeen, func() (string, error) { return check(ctx, existing) })
	loop(1, "new connection", &seen, func() (string, error) {
		cc, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(cli.ClientCredentials()))
		if err != nil {
			return "", err
		}
		defer cc.Close()
		return check(ctx, cc)
	})
	stop := func() {
		cancel()
		wg.Wait()
	}
	defer stop()
	waitSerial := func(want *tlstest.Leaf) {
		t.Helper()
		w := want.Cert.SerialNumber.String()
		testserver.Eventually(t, 30*time.Second, func() error {
			if s := seen.Load(); s == nil || *s != w {
				return fmt.Errorf("new connections see serial %v, want %s", s, w)
			}
			return nil
		})
		// Calls after the switch still see only w: the set does not flap.
		n := calls[1].Load()
		testserver.Eventually(t, 30*time.Second, func() error {
			if calls[1].Load() < n+3 {
				return errors.New("waiting for more calls on new connections")
			}
			return nil
		})
		if s := *seen.Load(); s != w {
			t.Fatalf("new connection saw serial %s after %s", s, w)
		}
	}

	// Atomic rotation: both files renamed into place.
	leaf2 := ca.Issue(t, tlstest.Options{CommonName: "aggregator-0"})
	tlstest.ReplaceFile(t, sc.CertFile, leaf2.CertPEM)
	tlstest.ReplaceFile(t, sc.KeyFile, leaf2.KeyPEM)
	waitSerial(leaf2)

	// Non-atomic rotation: the certificate rewritten in place, first
	// half-written, then whole but before its key: each intermediate
	// state is refused and leaf2 stays in use.
	leaf3 := ca.Issue(t, tlstest.Options{CommonName: "aggregator-0"})
	tlstest.WriteFile(t, sc.CertFile, leaf3.CertPEM[:len(leaf3.CertPEM)/2])
	if err := srvTLS.Reload(); err == nil || !strings.HasPrefix(err.Error(), "-tls.cert-file "+sc.CertFile+" with -tls.key-file") {
		t.Fatalf("reload of a half-written certificate: %v", err)
	}
	tlstest.WriteFile(t, sc.CertFile, leaf3.CertPEM)
	if err := srvTLS.Reload(); err == nil || !strings.Contains(err.Error(), "private key does not match public key") {
		t.Fatalf("reload of a certificate without its key: %v", err)
	}
	if got := srvTLS.Certificate().SerialNumber; got.Cmp(leaf2.Cert.SerialNumber) != 0 {
		t.Fatalf("certificate in use during the rotation: serial %s, want %s", got, leaf2.Cert.SerialNumber)
	}
	waitSerial(leaf2)
	tlstest.WriteFile(t, sc.KeyFile, leaf3.KeyPEM)
	waitSerial(leaf3)
	if err := srvTLS.Reload(); err != nil {
		t.Fatalf("reload after the rotation: %v", err)
	}

	stop()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d calls failed during rotation; first: %v", n, *firstErr.Load())
	}
	if calls[0].Load() == 0 {
		t.Fatal("no call on the existing connection")
	}
	if s := *oldSeen.Load(); s != leaf1.Cert.SerialNumber.String() {
		t.Errorf("existing connection saw serial %s, want %s: it was re-established", s, leaf1.Cert.SerialNumber)
	}
	t.Logf("calls: %d on the existing connection, %d on new connections", calls[0].Load(), calls[1].Load())
}

// TestCARotation adds a new CA to the server's CA file: clients with
// certificates of the new CA get in on their next handshake.
func TestCARotation(t *testing.T) {
	ca1, ca2 := tlstest.NewCA(t, "clickagg-1"), tlstest.NewCA(t, "clickagg-2")
	sc := files(t, ca1.Issue(t, tlstest.Options{}), ca1, tlsconf.ClientAuthRequire)
	srv := serve(t, load(t, sc))
	cli := load(t, files(t, ca2.Issue(t, tlstest.Options{CommonName: "new"}), ca1, ""))
	if _, err := check(t.Context(), dial(t, srv.addr, cli)); status.Code(err) != codes.Unavailable {
		t.Fatalf("call with a certificate of a CA not yet trusted: %v, want Unavailable", err)
	}
	bundle := append(append([]byte{}, ca1.CertPEM...), ca2.CertPEM...)
	tlstest.ReplaceFile(t, sc.CAFile, bundle)
	testserver.Eventually(t, 30*time.Second, func() error {
		_, err := check(t.Context(), dial(t, srv.addr, cli))
		return err
	})
	if id := srv.last.Load(); id == nil || id.CommonName != "new" {
		t.Errorf("identity %+v, want CN new", id)
	}
}

// TestRacyRewrite rewrites a file with content of the same size within
// the file system's timestamp tick: the stat alone could not tell, the
// racy rule reads it again.
func TestRacyRewrite(t *testing.T) {
	ca := tlstest.NewCA(t, "clickagg")
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	// Pad both sets to the same sizes: trailing newlines, which PEM
	// parsing ignores.
	certN, keyN := max(len(a.CertPEM), len(b.CertPEM)), max(len(a.KeyPEM), len(b.KeyPEM))
	dir := t.TempDir()
	c := tlsconf.Config{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	tlstest.WriteFile(t, c.CertFile, pad(a.CertPEM, certN))
	tlstest.WriteFile(t, c.KeyFile, pad(a.KeyPEM, keyN))
	tl := load(t, c)
	fi, err := os.Stat(c.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	// b's files carry a's stat: same inode, size and mtime.
	tlstest.WriteFile(t, c.CertFile, pad(b.CertPEM, certN))
	tlstest.WriteFile(t, c.KeyFile, pad(b.KeyPEM, keyN))
	for _, f := range []string{c.CertFile, c.KeyFile} {
		if err := os.Chtimes(f, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	if err := tl.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got := tl.Certificate().SerialNumber; got.Cmp(b.Cert.SerialNumber) != 0 {
		t.Fatalf("serial %s after a same-size same-time rewrite, want %s", got, b.Cert.SerialNumber)
	}
}

// pad pads pem with trailing newlines to n bytes.
func pad(pem []byte, n int) []byte {
	return append(append([]byte{}, pem...), []byte(strings.Repeat("\n", n-len(pem)))...)
}

func TestRegisterFlags(t *testing.T) {
	var c tlsconf.Config
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if c.ClientAuth != tlsconf.ClientAuthNone || c.Enabled() {
		t.Fatalf("defaults %+v: want client auth none, TLS off", c)
	}
	err := fs.Parse([]string{"-tls.cert-file=c", "-tls.key-file=k", "-tls.ca-file=ca", "-tls.client-auth=require", "-tls.server-name=agg"})
	if err != nil {
		t.Fatal(err)
	}
	want := tlsconf.Config{CertFile: "c", KeyFile: "k", CAFile: "ca", ClientAuth: "require", ServerName: "agg"}
	if c != want {
		t.Fatalf("parsed %+v, want %+v", c, want)
	}
}

// TestClientRotation replaces a client's own certificate: its next
// handshake presents the new one.
func TestClientRotation(t *testing.T) {
	ca := tlstest.NewCA(t, "clickagg")
	srv := serve(t, load(t, files(t, ca.Issue(t, tlstest.Options{}), ca, tlsconf.ClientAuthRequire)))
	cc := files(t, ca.Issue(t, tlstest.Options{CommonName: "router-1"}), ca, "")
	cli := load(t, cc)
	if _, err := check(t.Context(), dial(t, srv.addr, cli)); err != nil {
		t.Fatal(err)
	}
	if id := srv.last.Load(); id == nil || id.CommonName != "router-1" {
		t.Fatalf("identity %+v, want CN router-1", id)
	}
	next := ca.Issue(t, tlstest.Options{CommonName: "router-2"})
	tlstest.ReplaceFile(t, cc.CertFile, next.CertPEM)
	tlstest.ReplaceFile(t, cc.KeyFile, next.KeyPEM)
	if _, err := check(t.Context(), dial(t, srv.addr, cli)); err != nil {
		t.Fatal(err)
	}
	if id := srv.last.Load(); id == nil || id.CommonName != "router-2" {
		t.Fatalf("identity %+v after rotation, want CN router-2", id)
	}
}

// TestHTTPS serves HTTP/2 over ServerConfig, as the HTTP API will: the
// per-handshake config must keep ALPN.
func TestHTTPS(t *testing.T) {
	ca := tlstest.NewCA(t, "clickagg")
	srvTLS := load(t, files(t, ca.Issue(t, tlstest.Options{}), ca, tlsconf.ClientAuthRequire))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		TLSConfig: srvTLS.ServerConfig(),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", r.Proto, r.TLS.VerifiedChains[0][0].Subject.CommonName)
		}),
	}
	go func() { _ = hs.ServeTLS(lis, "", "") }()
	t.Cleanup(func() { _ = hs.Close() })

	cli := load(t, files(t, ca.Issue(t, tlstest.Options{CommonName: "ship"}), ca, ""))
	tr := &http.Transport{TLSClientConfig: cli.ClientConfig(), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Get("https://" + lis.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != "HTTP/2.0 ship" {
		t.Fatalf("body %q, want %q", body, "HTTP/2.0 ship")
	}
}

// TestHTTPServerConfig: the HTTP listener's config never requires a
// client certificate, even under -tls.client-auth=require, verifies one
// that is given against -tls.ca-file, and refuses one of another CA at
// the handshake; without -tls.ca-file it asks for none.
func TestHTTPServerConfig(t *testing.T) {
	ca, other := tlstest.NewCA(t, "clickagg"), tlstest.NewCA(t, "other")
	srvLeaf := ca.Issue(t, tlstest.Options{})
	// get serves HTTPS with srv's HTTPServerConfig and returns the
	// verified client name the handler saw ("-" for none), or the error.
	get := func(t *testing.T, srv *tlsconf.TLS, client tlsconf.Config) (string, error) {
		t.Helper()
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{
			TLSConfig: srv.HTTPServerConfig(),
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				name := "-"
				if len(r.TLS.VerifiedChains) > 0 {
					name = r.TLS.VerifiedChains[0][0].Subject.CommonName
				} else if len(r.TLS.PeerCertificates) > 0 {
					name = "unverified"
				}
				fmt.Fprint(w, name)
			}),
			ErrorLog: log.New(t.Output(), "", 0),
		}
		go func() { _ = hs.ServeTLS(lis, "", "") }()
		defer hs.Close()
		tr := &http.Transport{TLSClientConfig: load(t, client).ClientConfig()}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get("https://" + lis.Addr().String() + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return string(body), err
	}
	withCA := load(t, files(t, srvLeaf, ca, tlsconf.ClientAuthRequire))
	for _, tc := range []struct {
		name   string
		client tlsconf.Config
		want   string // "" for a refused handshake
	}{
		{"no_certificate", files(t, nil, ca, ""), "-"},
		{"certificate_of_the_ca", files(t, ca.Issue(t, tlstest.Options{CommonName: "prometheus"}), ca, ""), "prometheus"},
		{"certificate_of_another_ca", files(t, other.Issue(t, tlstest.Options{CommonName: "stranger"}), ca, ""), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := get(t, withCA, tc.client)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("request with a certificate of another CA: answered %q, want a refused handshake", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("request: %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	// Without -tls.ca-file the server asks for no certificate: a client
	// that has one does not send it.
	noCA := load(t, files(t, srvLeaf, nil, ""))
	if got, err := get(t, noCA, files(t, ca.Issue(t, tlstest.Options{CommonName: "x"}), ca, "")); err != nil || got != "-" {
		t.Fatalf("without -tls.ca-file: %q, %v; want %q", got, err, "-")
	}
}
