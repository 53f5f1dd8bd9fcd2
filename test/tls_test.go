package test

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/authz"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/tlsconf"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// TestPipelineExactWithAuthorization runs a cluster of separate
// processes with TLS and authorization on, members calling each other
// with client certificates, on Redis as an ACL user confined to the
// cluster's keys and on etcd over TLS with client certificates: counts and top-N are exact, over gRPC and over queryd's
// HTTPS API; callers without a valid identity or without the permission
// are refused with the right code and a reason, and nothing they sent is
// counted; a router's certificate is rotated while clients keep opening
// connections, none of whose calls fails; clickagg ship with a
// certificate reaches the routers.
func TestPipelineExactWithAuthorization(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of 100k events with TLS and authorization")
	}
	spec := clusterSpec{
		partitions: 16, coordinators: 1, routers: 2, aggregators: 2, tls: true, auth: true, redisACL: true, etcdTLS: true,
		aggregatorFlags: []string{"-aggregator.snapshot-interval=2s"},
		routerFlags:     []string{"-router.idle-watermark-lag=1h"},
	}
	c := newTestCluster(t, spec)
	coordClient := c.coordinatorClient()
	waitCaughtUp(t, coordClient, spec.partitions, 2*time.Minute)
	caFile := filepath.Join(c.tlsDir(""), "ca.pem")

	start := time.Now().Truncate(time.Minute).Add(-12 * time.Minute)
	const refusedAd = "ad-refused"
	refusedBatch := func(prefix string) *clickaggv1.IngestRequest {
		req := &clickaggv1.IngestRequest{}
		for i := range 50 {
			req.Events = append(req.Events, &clickaggv1.ClickEvent{
				EventId: prefix + "-" + strconv.Itoa(i), AdId: refusedAd,
				ClickTime: timestamppb.New(start.Add(time.Minute + time.Duration(i)*time.Second)),
				UserId:    "user-1", Ip: "10.0.0.1", Country: "US",
			})
		}
		return req
	}
	other := tlstest.NewCA(t, "not-the-cluster-ca")
	refusals := []struct {
		name string
		conn *grpc.ClientConn
		call func(context.Context, *grpc.ClientConn) error
		code codes.Code
		want string
	}{
		{"no certificate or token", c.clientConn(t, c.routers[0].addr, "anon", nil, ""), ingestCall(refusedBatch("anon")),
			codes.Unauthenticated, "no client certificate or bearer token"},
		{"expired certificate", c.clientConn(t, c.routers[0].addr, "expired", c.ca.Issue(t, tlstest.Options{CommonName: "e2e-harness",
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}), ""), ingestCall(refusedBatch("expired")),
			codes.Unauthenticated, "expired"},
		{"certificate of another CA", c.clientConn(t, c.routers[1].addr, "foreign", other.Issue(t, tlstest.Options{CommonName: "e2e-harness"}), ""),
			ingestCall(refusedBatch("foreign")), codes.Unauthenticated, "unknown authority"},
		{"token without ingest", c.clientConn(t, c.routers[1].addr, "billing", nil, authTokens["billing"]), ingestCall(refusedBatch("billing")),
			codes.PermissionDenied, `needs permission "ingest"; token:billing holds query`},
		{"token calling admin", c.clientConn(t, c.coordinators[0].addr, "billing", nil, authTokens["billing"]),
			func(ctx context.Context, conn *grpc.ClientConn) error {
				_, err := clickaggv1.NewCoordinatorServiceClient(conn).DrainMember(ctx, &clickaggv1.DrainMemberRequest{Member: "aggregator-1"})
				return err
			}, codes.PermissionDenied, `needs permission "admin"`},
		{"non-member calling internal", c.clientConn(t, c.aggregators[0].addr, "shipper-x", c.ca.Issue(t, tlstest.Options{CommonName: "shipper-x"}), ""),
			func(ctx context.Context, conn *grpc.ClientConn) error {
				_, err := clickaggv1.NewAggregatorServiceClient(conn).Release(ctx, &clickaggv1.ReleaseRequest{Partition: 0})
				return err
			}, codes.PermissionDenied, `needs permission "internal"; cert:shipper-x holds ingest`},
	}
	for _, r := range refusals {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := r.call(ctx, r.conn)
		cancel()
		if status.Code(err) != r.code || !strings.Contains(err.Error(), r.want) {
			t.Errorf("%s: %v, want %v containing %q", r.name, err, r.code, r.want)
		}
	}
	if _, err := coordClient.DrainMember(context.Background(), &clickaggv1.DrainMemberRequest{Member: "aggregator-1", DryRun: true}); err != nil {
		t.Fatalf("admin dry-run drain with the harness's certificate: %v", err)
	}

	w := newWorkload(20261207, 100_000, 10_000, 10, start, 0.05, 0.02, 0, 500)
	t.Logf("workload: %d unique clicks, %d duplicates, %d late, %d requests", len(w.unique), w.dups, w.late, len(w.batches))
	tr := &truth{clicks: append([]click(nil), w.unique...)}

	// While the workload goes in, a client with a token opens a new
	// connection for every request to router-1, whose certificate is
	// replaced a third of the way through: every handshake, before and
	// after, succeeds, and every click of it is counted once.
	rot := &rotationClient{c: c, addr: c.routers[0].addr, start: start}
	stopChurn := rot.run(t)
	oldSerial := c.routerCert(0).SerialNumber
	var newSerial atomic.Pointer[x509.Certificate]
	res := ingest(t, w, c.ingestClients(), func(i int, _ *ingestResult) {
		if i == len(w.batches)/3 {
			leaf := c.ca.Issue(t, tlstest.Options{CommonName: "router-1"})
			dir := c.tlsDir("router-1")
			// Not atomic as a pair: until the key follows, the files do
			// not match and handshakes keep the old certificate.
			tlstest.ReplaceFile(t, filepath.Join(dir, "cert.pem"), leaf.CertPEM)
			tlstest.ReplaceFile(t, filepath.Join(dir, "key.pem"), leaf.KeyPEM)
			newSerial.Store(leaf.Cert)
		}
	})
	if n := len(res.rejectedBy); n != 0 {
		t.Errorf("%d events rejected, want none", n)
	}
	testserver.Eventually(t, time.Minute, func() error {
		if got := rot.lastSerial(); got == nil || got.Cmp(newSerial.Load().SerialNumber) != 0 {
			return fmt.Errorf("router-1 still presents serial %v (old %v)", got, oldSerial)
		}
		return nil
	})
	tr.clicks = append(tr.clicks, stopChurn()...)
	t.Logf("rotation: %d requests on new connections, serials seen %v", rot.calls.Load(), rot.serials())

	waitCaughtUp(t, coordClient, spec.partitions, 2*time.Minute)
	qc := c.queryClient()
	checkEveryAdMinute(t, qc, tr)
	checkTopN(t, qc, tr, w)
	// queryd's HTTP API answers the same over HTTPS, to the harness's
	// certificate.
	checkHTTP(t, c, qc, tr, w)
	resp, err := qc.GetAggregatedCount(context.Background(), &clickaggv1.GetAggregatedCountRequest{
		AdId: refusedAd, From: minuteTS(start.Unix() / 60), To: minuteTS(start.Unix()/60 + 12),
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%s counted %d clicks of refused callers, want 0", refusedAd, resp.Count)
	}

	// The ACL user was enough for everything clickagg does.
	for _, p := range append(append(append([]*proc{c.queryd}, c.routers...), c.aggregators...), c.coordinators...) {
		if n := p.logCount("NOPERM"); n != 0 {
			t.Errorf("%s logged %d NOPERM refusals of the Redis ACL user", p.name, n)
		}
	}

	// The audit line of the harness's drain names its certificate.
	if c.coordinators[0].logCount("caller=cert:e2e-harness method=/clickagg.v1.CoordinatorService/DrainMember") != 1 ||
		c.coordinators[0].logCount("caller=token:billing method=/clickagg.v1.CoordinatorService/DrainMember") != 1 {
		t.Errorf("coordinator log lacks the audit lines of both DrainMember calls")
	}

	// clickagg ship with a certificate of its own reaches the routers.
	const shipped, shippedAd = 1000, "ad-shipped"
	var log strings.Builder
	for i := range shipped {
		ts := start.Add(2*time.Minute + time.Duration(i)*time.Millisecond)
		fmt.Fprintf(&log, "%s,%d,user-%d,10.0.0.2,US\n", shippedAd, ts.UnixMilli(), i)
	}
	path := filepath.Join(c.dir, "clicks.log")
	if err := os.WriteFile(path, []byte(log.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, c.dir, "shipper-1", append([]string{"ship", "-ship.files=" + path, "-ship.format=csv",
		"-ship.routers=" + c.routers[0].addr + "," + c.routers[1].addr,
		"-tls.ca-file=" + caFile}, c.tlsFlags("shipper-1")...)...)
	testserver.Eventually(t, time.Minute, func() error {
		resp, err := qc.GetAggregatedCount(context.Background(), &clickaggv1.GetAggregatedCountRequest{
			AdId: shippedAd, From: minuteTS(start.Unix() / 60), To: minuteTS(start.Unix()/60 + 12),
		})
		if err != nil {
			return err
		}
		if resp.Count != shipped {
			return fmt.Errorf("%s counted %d, want %d", shippedAd, resp.Count, shipped)
		}
		return nil
	})
}

func ingestCall(req *clickaggv1.IngestRequest) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := clickaggv1.NewIngestServiceClient(conn).Ingest(ctx, req)
		return err
	}
}

// clientConn dials addr trusting the cluster's CA, presenting leaf (if
// any) and sending token (if any).
func (c *testCluster) clientConn(t *testing.T, addr, name string, leaf *tlstest.Leaf, token string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, c.clientOptions(t, name, leaf, token)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (c *testCluster) clientOptions(t *testing.T, name string, leaf *tlstest.Leaf, token string) []grpc.DialOption {
	t.Helper()
	dir := c.tlsDir("client-" + name)
	cfg := tlsconf.Config{CAFile: filepath.Join(c.tlsDir(""), "ca.pem")}
	if leaf != nil {
		cfg.CertFile, cfg.KeyFile = leaf.WriteFiles(t, dir)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(tlsCreds(t, cfg))}
	if token != "" {
		f := filepath.Join(dir, "token")
		tlstest.WriteFile(t, f, []byte(token+"\n"))
		pc, err := authz.TokenCredentials(f)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(pc))
	}
	return opts
}

// routerCert is the certificate router i was started with.
func (c *testCluster) routerCert(i int) *x509.Certificate {
	c.t.Helper()
	cfg := tlsconf.Config{CertFile: filepath.Join(c.tlsDir(fmt.Sprintf("router-%d", i+1)), "cert.pem"),
		KeyFile: filepath.Join(c.tlsDir(fmt.Sprintf("router-%d", i+1)), "key.pem")}
	tc, err := tlsconf.Load(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		c.t.Fatal(err)
	}
	return tc.Certificate()
}

// rotationClient sends requests of 20 unique clicks of ad-rotation, each
// on a new connection, with the shipper token, and records the serial of
// the certificate each handshake saw.
type rotationClient struct {
	c     *testCluster
	addr  string
	start time.Time
	calls atomic.Int64

	mu   sync.Mutex
	seen []string
	last *x509.Certificate
}

// run starts sending; the function it returns stops, fails the test on
// any call that failed, and returns the clicks sent.
func (r *rotationClient) run(t *testing.T) func() []click {
	opts := r.c.clientOptions(t, "rotation", nil, authTokens["shipper"])
	// Stopped between requests, never in one: a request cut short might
	// have been counted without being in the truth.
	var stop atomic.Bool
	var sent []click
	var errs []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			req := &clickaggv1.IngestRequest{}
			at := r.start.Add(time.Duration(i%540) * time.Second)
			for j := range 20 {
				req.Events = append(req.Events, &clickaggv1.ClickEvent{
					EventId: fmt.Sprintf("rot-%d-%d", i, j), AdId: "ad-rotation", ClickTime: timestamppb.New(at),
					UserId: "user-rot", Ip: "10.0.0.3", Country: "DE",
				})
			}
			conn, err := grpc.NewClient(r.addr, opts...)
			if err != nil {
				errs = append(errs, err)
				return
			}
			var p peer.Peer
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := clickaggv1.NewIngestServiceClient(conn).Ingest(cctx, req, grpc.Peer(&p))
			ccancel()
			conn.Close()
			if err != nil {
				errs = append(errs, fmt.Errorf("request %d: %w", i, err))
				continue
			}
			if resp.Accepted != 20 {
				errs = append(errs, fmt.Errorf("request %d: accepted %d of 20", i, resp.Accepted))
			}
			r.calls.Add(1)
			for _, ev := range req.Events {
				sent = append(sent, click{ev: ev, minute: at.Unix() / 60})
			}
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
				r.record(info.State.PeerCertificates[0])
			}
		}
	}()
	return func() []click {
		stop.Store(true)
		<-done
		for _, err := range errs {
			t.Errorf("rotation client: %v", err)
		}
		return sent
	}
}

func (r *rotationClient) record(cert *x509.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil || r.last.SerialNumber.Cmp(cert.SerialNumber) != 0 {
		r.seen = append(r.seen, cert.SerialNumber.String())
	}
	r.last = cert
}

func (r *rotationClient) lastSerial() *big.Int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		return nil
	}
	return r.last.SerialNumber
}

func (r *rotationClient) serials() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}
