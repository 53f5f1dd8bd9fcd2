package grpcclient_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/clickagg/clickagg/grpcclient"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

// server is a health server on loopback that counts the calls it answers.
type server struct {
	addr  string
	calls atomic.Int64
}

func startServer(t *testing.T) *server {
	t.Helper()
	s := &server{}
	lis := testserver.Listen(t)
	s.addr = lis.Addr().String()
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		s.calls.Add(1)
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-served })
	return s
}

// caller returns a function that makes one health check, failing the
// test on an error, over a client with opts of a target that grpc's
// manual resolver, standing for the DNS of a headless Service, resolves to
// addrs.
func caller(t *testing.T, opts []grpc.DialOption, addrs ...string) func() {
	t.Helper()
	r := manual.NewBuilderWithScheme("clickaggtest")
	var st resolver.State
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(st)
	conn, err := grpc.NewClient("clickaggtest:///routers", append(slices.Clone(opts), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(r))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return func() {
		t.Helper()
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRoundRobinSpreads: a target that resolves to two servers gets its
// calls spread over both, one each in turn, with Options; without them
// (grpc's pick_first) every call goes to one server. The resolver is
// grpc's manual one, standing for the DNS of a headless Service.
func TestRoundRobinSpreads(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   []grpc.DialOption
		spread bool
	}{
		{"round_robin", grpcclient.Options(), true},
		{"pick_first", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startServer(t), startServer(t)
			check := caller(t, tc.opts, a.addr, b.addr)
			if !tc.spread {
				// pick_first: the first call connects to one address
				// and every call stays there.
				for range 100 {
					check()
				}
				if got := []int64{a.calls.Load(), b.calls.Load()}; got[0]+got[1] != 100 || (got[0] != 0 && got[1] != 0) {
					t.Fatalf("calls per server %v, want all 100 at one", got)
				}
				return
			}
			// round_robin picks among the ready subchannels: call until
			// both servers answered, then every call goes to the other
			// one in turn.
			testserver.Eventually(t, 20*time.Second, func() error {
				check()
				if a.calls.Load() == 0 || b.calls.Load() == 0 {
					return fmt.Errorf("calls per server %d, %d: not both yet", a.calls.Load(), b.calls.Load())
				}
				return nil
			})
			a0, b0 := a.calls.Load(), b.calls.Load()
			for range 100 {
				check()
			}
			if got := []int64{a.calls.Load() - a0, b.calls.Load() - b0}; got[0] != 50 || got[1] != 50 {
				t.Fatalf("100 calls went %v to the two servers, want 50 each", got)
			}
		})
	}
}

// TestWithKeepsCallersOptions: With appends to a copy, so two clients
// built from one slice of options do not share what is appended.
func TestWithKeepsCallersOptions(t *testing.T) {
	base := make([]grpc.DialOption, 1, 4)
	base[0] = grpc.WithTransportCredentials(insecure.NewCredentials())
	x := grpcclient.With(base...)
	if len(base) != 1 || len(x) != 1+len(grpcclient.Options()) {
		t.Fatalf("With(%d options) = %d options and the caller's slice has %d; want %d and 1", 1, len(x), len(base), 1+len(grpcclient.Options()))
	}
	if &x[0] == &base[:cap(base)][0] {
		t.Fatal("With returned the caller's array")
	}
}

// TestRoundRobinSkipsDeadAddress: an address that refuses connections (a
// pod gone, localhost's ::1 where the server listens on 127.0.0.1 only)
// costs the calls nothing: round_robin picks only the ready ones.
func TestRoundRobinSkipsDeadAddress(t *testing.T) {
	live := startServer(t)
	check := caller(t, grpcclient.Options(), testserver.DeadAddr(t), live.addr)
	for range 100 {
		check()
	}
	if n := live.calls.Load(); n != 100 {
		t.Fatalf("the live server answered %d calls, want 100", n)
	}
}
