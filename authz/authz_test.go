package authz_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/authz"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
	"github.com/clickagg/clickagg/tlsconf"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// handlers count the calls that reached them: a refused call must not.
type handlers struct {
	clickaggv1.UnimplementedIngestServiceServer
	clickaggv1.UnimplementedCoordinatorServiceServer
	clickaggv1.UnimplementedAggregatorServiceServer
	reached atomic.Int64
	callers sync.Map // method -> caller name seen by the handler
}

func (h *handlers) Ingest(ctx context.Context, req *clickaggv1.IngestRequest) (*clickaggv1.IngestResponse, error) {
	h.seen(ctx, "Ingest")
	return &clickaggv1.IngestResponse{Accepted: int64(len(req.GetEvents()))}, nil
}

func (h *handlers) DrainMember(ctx context.Context, _ *clickaggv1.DrainMemberRequest) (*clickaggv1.DrainMemberResponse, error) {
	h.seen(ctx, "DrainMember")
	return &clickaggv1.DrainMemberResponse{}, nil
}

func (h *handlers) Count(ctx context.Context, _ *clickaggv1.CountRequest) (*clickaggv1.CountResponse, error) {
	h.seen(ctx, "Count")
	return &clickaggv1.CountResponse{}, nil
}

func (h *handlers) seen(ctx context.Context, method string) {
	h.reached.Add(1)
	if c, ok := authz.CallerFrom(ctx); ok {
		h.callers.Store(method, c.String())
	}
}

type env struct {
	dir        string
	ca         *tlstest.CA
	addr       string
	h          *handlers
	a          *authz.Authorizer
	reg        *prometheus.Registry
	log        *testsupport.SyncBuffer
	tokensFile string
	srvTLS     *tlsconf.TLS
}

func sha(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return "sha256:" + hex.EncodeToString(s[:])
}

const policy = `# members call each other
cert:clickagg-member   internal
cert:sre-*             admin,query
token:shipper          ingest
token:billing          query
`

// start runs a gRPC server with TLS that asks for client certificates
// and leaves them to the authorizer, as cli.Server does with
// -auth.policy-file.
func start(t testing.TB) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), ca: tlstest.NewCA(t, "clickagg-ca"), h: &handlers{}, reg: prometheus.NewRegistry(), log: &testsupport.SyncBuffer{}}
	srvDir := filepath.Join(e.dir, "server")
	mkdir(t, srvDir)
	cert, key := e.ca.Issue(t, tlstest.Options{CommonName: "server"}).WriteFiles(t, srvDir)
	caFile := e.ca.WriteCA(t, e.dir)
	var err error
	e.srvTLS, err = tlsconf.Load(tlsconf.Config{CertFile: cert, KeyFile: key, CAFile: caFile, ClientAuth: tlsconf.ClientAuthVerifyIfGiven}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.srvTLS.DeferClientVerification()
	policyFile := filepath.Join(e.dir, "policy")
	tlstest.WriteFile(t, policyFile, []byte(policy))
	e.tokensFile = filepath.Join(e.dir, "tokens")
	tlstest.WriteFile(t, e.tokensFile, []byte("shipper "+sha("shipper-secret")+"\nbilling "+sha("billing-secret")+"\n"))
	cfg := authz.Config{PolicyFile: policyFile, TokensFile: e.tokensFile}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e.a, err = authz.New(cfg, e.srvTLS, slog.New(slog.NewTextHandler(e.log, nil)), e.reg)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(e.srvTLS.ServerCredentials()),
		grpc.ChainUnaryInterceptor(e.a.UnaryInterceptor), grpc.ChainStreamInterceptor(e.a.StreamInterceptor))
	clickaggv1.RegisterIngestServiceServer(gs, e.h)
	clickaggv1.RegisterCoordinatorServiceServer(gs, e.h)
	clickaggv1.RegisterAggregatorServiceServer(gs, e.h)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	e.addr = lis.Addr().String()
	return e
}

func mkdir(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
}

// client dials the server verifying it against the CA, presenting leaf
// (if any) and sending token (if any).
func (e *env) client(t testing.TB, name string, leaf *tlstest.Leaf, token string) *grpc.ClientConn {
	t.Helper()
	dir := filepath.Join(e.dir, "client-"+name)
	mkdir(t, dir)
	cfg := tlsconf.Config{CAFile: e.ca.WriteCA(t, dir)}
	if leaf != nil {
		cfg.CertFile, cfg.KeyFile = leaf.WriteFiles(t, dir)
	}
	ct, err := tlsconf.Load(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(ct.ClientCredentials())}
	if token != "" {
		tf := filepath.Join(dir, "token")
		tlstest.WriteFile(t, tf, []byte(token+"\n"))
		pc, err := authz.TokenCredentials(tf)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(pc))
	}
	conn, err := grpc.NewClient(e.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ingest(conn *grpc.ClientConn) error {
	_, err := clickaggv1.NewIngestServiceClient(conn).Ingest(context.Background(), &clickaggv1.IngestRequest{Events: []*clickaggv1.ClickEvent{{EventId: "e1", AdId: "ad-1"}}})
	return err
}

func drain(conn *grpc.ClientConn) error {
	_, err := clickaggv1.NewCoordinatorServiceClient(conn).DrainMember(context.Background(), &clickaggv1.DrainMemberRequest{Member: "agg-7"})
	return err
}

func count(conn *grpc.ClientConn) error {
	_, err := clickaggv1.NewAggregatorServiceClient(conn).Count(context.Background(), &clickaggv1.CountRequest{AdId: "ad-1"})
	return err
}

// TestRefusals: each caller that must not get in is refused with the
// right code and a reason, and its call never reaches the handler.
func TestRefusals(t *testing.T) {
	e := start(t)
	other := tlstest.NewCA(t, "someone-else")
	cases := []struct {
		name  string
		leaf  *tlstest.Leaf
		token string
		call  func(*grpc.ClientConn) error
		code  codes.Code
		want  string
	}{
		{"no certificate or token", nil, "", ingest, codes.Unauthenticated, "no client certificate or bearer token"},
		{"expired certificate", e.ca.Issue(t, tlstest.Options{CommonName: "sre-alice", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}), "", drain, codes.Unauthenticated, "expired"},
		{"certificate of another CA", other.Issue(t, tlstest.Options{CommonName: "sre-alice"}), "", drain, codes.Unauthenticated, "unknown authority"},
		{"unknown token", nil, "guessed", ingest, codes.Unauthenticated, "not in -auth.tokens-file"},
		{"token without the permission", nil, "billing-secret", ingest, codes.PermissionDenied, `needs permission "ingest"; token:billing holds query`},
		{"token calling admin", nil, "shipper-secret", drain, codes.PermissionDenied, `needs permission "admin"; token:shipper holds ingest`},
		{"non-member calling internal", e.ca.Issue(t, tlstest.Options{CommonName: "sre-bob"}), "", count, codes.PermissionDenied, `AggregatorService/Count needs permission "internal"; cert:sre-bob holds admin,query`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(e.client(t, strings.ReplaceAll(tc.name, " ", "-"), tc.leaf, tc.token))
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("refusal echoes the token: %v", err)
			}
		})
	}
	if n := e.h.reached.Load(); n != 0 {
		t.Fatalf("%d refused calls reached a handler", n)
	}
	if got := testutil.ToFloat64(e.refusedMetric(t, "Unauthenticated", "admin")); got != 2 {
		t.Fatalf("unauthenticated admin refusals = %v, want 2", got)
	}
	if strings.Contains(e.log.String(), "secret") {
		t.Fatal("a token reached the log")
	}
}

func (e *env) refusedMetric(t *testing.T, code, perm string) prometheus.Collector {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "clickagg_auth_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["code"] == code && labels["permission"] == perm {
				return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("no clickagg_auth_refused_total{code=%q,permission=%q}", code, perm)
	return nil
}

// TestAllowedAndAudited: callers with the permission get through, the
// handler sees who they are, and every admin call, allowed or refused,
// leaves one audit line with the caller and the request.
func TestAllowedAndAudited(t *testing.T) {
	e := start(t)
	member := e.client(t, "member", e.ca.Issue(t, tlstest.Options{CommonName: "clickagg-member"}), "")
	sre := e.client(t, "sre", e.ca.Issue(t, tlstest.Options{CommonName: "sre-alice"}), "")
	shipper := e.client(t, "shipper", nil, "shipper-secret")
	for _, c := range []struct {
		conn   *grpc.ClientConn
		call   func(*grpc.ClientConn) error
		method string
		caller string
	}{
		{member, count, "Count", "cert:clickagg-member"},
		{sre, drain, "DrainMember", "cert:sre-alice"},
		{shipper, ingest, "Ingest", "token:shipper"},
	} {
		if err := c.call(c.conn); err != nil {
			t.Fatalf("%s by %s: %v", c.method, c.caller, err)
		}
		if got, _ := e.h.callers.Load(c.method); got != c.caller {
			t.Fatalf("%s: handler saw caller %v, want %s", c.method, got, c.caller)
		}
	}
	if err := drain(shipper); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("shipper drain: %v", err)
	}
	// Health stays open to callers without credentials.
	anon := e.client(t, "anon", nil, "")
	if _, err := healthpb.NewHealthClient(anon).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health without credentials: %v", err)
	}
	var audit []string
	for _, l := range strings.Split(e.log.String(), "\n") {
		if strings.Contains(l, "log=audit") {
			audit = append(audit, l)
		}
	}
	if len(audit) != 2 {
		t.Fatalf("want 2 audit lines (one allowed, one refused drain), got %d:\n%s", len(audit), strings.Join(audit, "\n"))
	}
	for i, want := range []string{"caller=cert:sre-alice", "caller=token:shipper"} {
		l := audit[i]
		if !strings.Contains(l, want) || !strings.Contains(l, "method=/clickagg.v1.CoordinatorService/DrainMember") || !strings.Contains(l, `agg-7`) {
			t.Fatalf("audit line %d %q: want %s, the method and the request", i, l, want)
		}
	}
	if !strings.Contains(audit[0], "code=OK") || !strings.Contains(audit[1], "code=PermissionDenied") {
		t.Fatalf("audit codes: %q", audit)
	}
}

// TestTokenRotation: a token added to the file is accepted and a removed
// one refused, without a restart.
func TestTokenRotation(t *testing.T) {
	e := start(t)
	next := e.client(t, "next", nil, "shipper-secret-2")
	if err := ingest(next); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("token not yet issued: %v", err)
	}
	tlstest.ReplaceFile(t, e.tokensFile, []byte("shipper "+sha("shipper-secret-2")+"\nbilling "+sha("billing-secret")+"\n"))
	testserver.Eventually(t, 30*time.Second, func() error { return ingest(next) })
	old := e.client(t, "old", nil, "shipper-secret")
	if err := ingest(old); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked token: %v", err)
	}
	// A file that no longer parses keeps the last good one.
	tlstest.ReplaceFile(t, e.tokensFile, []byte("shipper shipper-secret-3\n"))
	testserver.Eventually(t, 30*time.Second, func() error {
		// Files are checked when calls come.
		if err := ingest(next); err != nil {
			return err
		}
		if !strings.Contains(e.log.String(), "authorization file not reloaded") {
			return io.EOF
		}
		return nil
	})
	if err := ingest(next); err != nil {
		t.Fatalf("after a bad tokens file, the last good one: %v", err)
	}
	if strings.Contains(e.log.String(), "shipper-secret") {
		t.Fatal("the bad tokens file's content reached the log")
	}
}

// TestHTTP: the HTTP API follows the same rules, over the same TLS.
func TestHTTP(t *testing.T) {
	e := start(t)
	h := e.a.HTTP(authz.Query, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := authz.CallerFrom(r.Context())
		_, _ = io.WriteString(w, "hello "+c.String())
	}))
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = e.srvTLS.ServerConfig()
	srv.StartTLS()
	defer srv.Close()
	dir := filepath.Join(e.dir, "http")
	mkdir(t, dir)
	ct, err := tlsconf.Load(tlsconf.Config{CAFile: e.ca.WriteCA(t, dir)}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: ct.ClientConfig()}}
	for _, c := range []struct {
		token string
		code  int
		body  string
	}{
		{"", http.StatusUnauthorized, "no client certificate or bearer token"},
		{"shipper-secret", http.StatusForbidden, `needs permission \"query\"`},
		{"billing-secret", http.StatusOK, "hello token:billing"},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/ads/popular", nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(string(body), c.body) {
			t.Fatalf("token %q: %d %s, want %d containing %s", c.token, resp.StatusCode, body, c.code, c.body)
		}
		if c.code == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatal("401 without WWW-Authenticate")
		}
	}
}

// TestAuditWithoutAuthorization: with authorization off, admin calls are
// still written to the audit log, with the caller's address.
func TestAuditWithoutAuthorization(t *testing.T) {
	buf := &testsupport.SyncBuffer{}
	h := &handlers{}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(authz.AuditInterceptor(slog.New(slog.NewTextHandler(buf, nil)))))
	clickaggv1.RegisterIngestServiceServer(gs, h)
	clickaggv1.RegisterCoordinatorServiceServer(gs, h)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := drain(conn); err != nil {
		t.Fatal(err)
	}
	if err := ingest(conn); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Count(out, "log=audit") != 1 || !strings.Contains(out, `caller="unauthenticated (authorization off)"`) ||
		!strings.Contains(out, "agg-7") || !strings.Contains(out, "peer=127.0.0.1:") {
		t.Fatalf("want one audit line for the drain, with the request and the peer:\n%s", out)
	}
}
