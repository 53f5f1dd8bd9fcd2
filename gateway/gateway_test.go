package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/coordinator"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

const ttl = 10 * time.Second

// dialer dials insecure loopback connections, closed at the test's end.
func dialer(t *testing.T) Dial {
	return func(addr string) (grpc.ClientConnInterface, error) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc, nil
	}
}

func register(t *testing.T, cl *cluster.Client, id, role, addr string) {
	t.Helper()
	r, err := cl.Register(context.Background(), cluster.Member{ID: id, Role: role, Addr: addr}, ttl)
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
}

// startCoordinator serves a real coordinator's gRPC API on loopback and
// registers it as id.
func startCoordinator(t *testing.T, cl *cluster.Client, id string) clickaggv1.CoordinatorServiceServer {
	t.Helper()
	lis := testserver.Listen(t)
	addr := lis.Addr().String()
	srv := coordinator.NewServer(coordinator.New(coordinator.Config{}, cluster.Candidate{ID: id, Addr: addr}, cl, 4, dialer(t), nil))
	testserver.ServeGRPC(t, lis, func(s *grpc.Server) { clickaggv1.RegisterCoordinatorServiceServer(s, srv) })
	register(t, cl, id, cluster.RoleCoordinator, addr)
	return srv
}

// get returns the status and body of GET path on h.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// memberIDs decodes a ListMembers answer's member IDs, sorted.
func memberIDs(t *testing.T, body string) []string {
	t.Helper()
	var resp struct {
		Members []struct{ ID, Role string }
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	var ids []string
	for _, m := range resp.Members {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return ids
}

func TestForwarderReachesALiveCoordinator(t *testing.T) {
	e := testserver.Etcd(t)
	cl := cluster.NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/t")
	// coordinator-a sorts first and is not there: the forwarder moves on.
	register(t, cl, "coordinator-a", cluster.RoleCoordinator, testserver.DeadAddr(t))
	local := startCoordinator(t, cl, "coordinator-b")
	register(t, cl, "aggregator-1", cluster.RoleAggregator, "127.0.0.1:1")
	register(t, cl, "queryd-1", cluster.RoleQueryd, "127.0.0.1:2")

	ctx := t.Context()
	fwd := NewForwarder(cl, dialer(t))
	forwarded, err := New(ctx, fwd)
	if err != nil {
		t.Fatal(err)
	}
	inProcess, err := NewLocal(ctx, local)
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"aggregator-1", "coordinator-a", "coordinator-b", "queryd-1"}
	for _, tc := range []struct {
		name string
		h    http.Handler
		path string
		want []string
	}{
		{"forwarded", forwarded, "/v1/cluster/members", all},
		{"forwarded role filter", forwarded, "/v1/cluster/members?role=aggregator", []string{"aggregator-1"}},
		{"in process", inProcess, "/v1/cluster/members", all},
		{"in process role filter", inProcess, "/v1/cluster/members?role=queryd", []string{"queryd-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, tc.h, tc.path)
			if code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", tc.path, code, body)
			}
			if got := memberIDs(t, body); !slices.Equal(got, tc.want) {
				t.Fatalf("GET %s: members %v, want %v", tc.path, got, tc.want)
			}
		})
	}
	if fwd.last == "" {
		t.Fatal("the forwarder remembers no coordinator that answered")
	}

	// Every read route answers through the forwarder; a partition count
	// of 4 shows the status came from the coordinator.
	code, body := get(t, forwarded, "/v1/cluster/status")
	if code != http.StatusOK || !strings.Contains(body, `"partitionCount":4`) {
		t.Fatalf("GET /v1/cluster/status: %d %s", code, body)
	}
	for _, path := range []string{"/v1/cluster/assignment", "/v1/cluster/load", "/v1/cluster/handoffs"} {
		if code, body := get(t, forwarded, path); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	// A coordinator's refusal comes back as it is, not as UNAVAILABLE
	// (this one has no hot-key splitting).
	if code, body := get(t, forwarded, "/v1/cluster/hot_keys?count=5"); code != http.StatusBadRequest || !strings.Contains(body, "hot-key splitting is not configured") {
		t.Errorf("GET /v1/cluster/hot_keys: %d %s, want the coordinator's 400", code, body)
	}
	// Mutations have no HTTP binding.
	if code, body := get(t, forwarded, "/v1/cluster/rebalance"); code != http.StatusNotFound {
		t.Errorf("GET /v1/cluster/rebalance: %d %s, want 404", code, body)
	}
}

// TestForwarderSkipsAStoppedCoordinator: a coordinator that stops
// answering (its connection frozen as by SIGSTOP: open and silent, its
// registration kept) costs a read AttemptTimeout, after which the next
// coordinator answers it; without the bound the read would wait as long
// as its caller.
func TestForwarderSkipsAStoppedCoordinator(t *testing.T) {
	e := testserver.Etcd(t)
	cl := cluster.NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/t")
	lis := testserver.Listen(t)
	stopped := testserver.NewProxy(t, lis.Addr().String())
	srv := coordinator.NewServer(coordinator.New(coordinator.Config{}, cluster.Candidate{ID: "coordinator-a", Addr: stopped.Addr()}, cl, 4, dialer(t), nil))
	testserver.ServeGRPC(t, lis, func(s *grpc.Server) { clickaggv1.RegisterCoordinatorServiceServer(s, srv) })
	register(t, cl, "coordinator-a", cluster.RoleCoordinator, stopped.Addr())
	startCoordinator(t, cl, "coordinator-b")

	// One connection per address, kept, as the process's dialer does:
	// the connection to coordinator-a is up when it stops. A new one
	// would never finish its handshake and fail after grpc's 20s connect
	// timeout instead.
	var mu sync.Mutex
	conns := map[string]grpc.ClientConnInterface{}
	dial := func(addr string) (grpc.ClientConnInterface, error) {
		mu.Lock()
		defer mu.Unlock()
		if cc, ok := conns[addr]; ok {
			return cc, nil
		}
		cc, err := dialer(t)(addr)
		if err == nil {
			conns[addr] = cc
		}
		return cc, err
	}
	fwd := NewForwarder(cl, dial)
	h, err := New(t.Context(), fwd)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"coordinator-a", "coordinator-b"}
	// coordinator-a sorts first and answers: the forwarder keeps to it.
	if code, body := get(t, h, "/v1/cluster/members"); code != http.StatusOK || !slices.Equal(memberIDs(t, body), want) {
		t.Fatalf("GET /v1/cluster/members: %d %s", code, body)
	}
	if fwd.last != stopped.Addr() {
		t.Fatalf("the forwarder keeps to %q, want coordinator-a at %s", fwd.last, stopped.Addr())
	}

	stopped.Freeze()
	// Thawed before the cleanups: a gRPC server does not stop while a
	// connection of its holds unsent bytes.
	defer stopped.Thaw()
	began := time.Now()
	code, body := get(t, h, "/v1/cluster/members")
	took := time.Since(began)
	if code != http.StatusOK || !slices.Equal(memberIDs(t, body), want) {
		t.Fatalf("GET /v1/cluster/members with coordinator-a stopped: %d %s", code, body)
	}
	if fwd.last == stopped.Addr() {
		t.Fatal("coordinator-a answered while stopped")
	}
	// The request has no deadline of its own: it ended because the
	// attempt at coordinator-a did (a generous bound, not a timing).
	if took < AttemptTimeout || took > 2*AttemptTimeout {
		t.Fatalf("the read took %v with coordinator-a stopped, want about AttemptTimeout=%v", took, AttemptTimeout)
	}
	t.Logf("read answered by coordinator-b after %v", took)
}

// TestForwardedCallCarriesNoHeaders: the browser's Authorization header
// does not travel to the coordinator; the call is the process's own.
func TestForwardedCallCarriesNoHeaders(t *testing.T) {
	e := testserver.Etcd(t)
	cl := cluster.NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/t")
	lis := testserver.Listen(t)
	addr := lis.Addr().String()
	srv := coordinator.NewServer(coordinator.New(coordinator.Config{}, cluster.Candidate{ID: "coordinator-1", Addr: addr}, cl, 4, dialer(t), nil))
	seen := make(chan metadata.MD, 1)
	gs := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		seen <- md
		return h(ctx, req)
	}))
	clickaggv1.RegisterCoordinatorServiceServer(gs, srv)
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-served })
	register(t, cl, "coordinator-1", cluster.RoleCoordinator, addr)
	h, err := New(t.Context(), NewForwarder(cl, dialer(t)))
	if err != nil {
		t.Fatal(err)
	}
	rr := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/v1/cluster/members", nil)
	req.Header.Set("Authorization", "Bearer browser-token")
	req.Header.Set("Grpc-Metadata-Clickagg-Forwarded-By", "someone")
	h.ServeHTTP(rr, req)
	if rr.Code != http.StatusOK {
		t.Fatalf("GET /v1/cluster/members: %d %s", rr.Code, rr.Body)
	}
	md := <-seen
	for _, key := range []string{"authorization", "clickagg-forwarded-by"} {
		if v := md.Get(key); len(v) > 0 {
			t.Errorf("the coordinator got %s: %q from the browser's request", key, v)
		}
	}
}

func TestForwarderWithoutCoordinator(t *testing.T) {
	e := testserver.Etcd(t)
	cl := cluster.NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/t")
	h, err := New(t.Context(), NewForwarder(cl, dialer(t)))
	if err != nil {
		t.Fatal(err)
	}
	code, body := get(t, h, "/v1/cluster/members")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no coordinator is registered in etcd") {
		t.Fatalf("no coordinator: %d %s, want 503 naming the cause", code, body)
	}
	dead := testserver.DeadAddr(t)
	register(t, cl, "coordinator-a", cluster.RoleCoordinator, dead)
	code, body = get(t, h, "/v1/cluster/members")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no coordinator answered") || !strings.Contains(body, dead) {
		t.Fatalf("dead coordinator: %d %s, want 503 naming %s", code, body, dead)
	}
}
