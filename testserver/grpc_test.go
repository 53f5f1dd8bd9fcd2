package testserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/clickagg/clickagg/testserver"
)

// TestServeGRPC: a service ServeGRPC registers answers through the
// connection it returns, on a loopback address.
func TestServeGRPC(t *testing.T) {
	lis := testserver.Listen(t)
	if addr := lis.Addr().String(); !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("Listen on %s, want 127.0.0.1", addr)
	}
	conn := testserver.ServeGRPC(t, lis, func(gs *grpc.Server) {
		healthpb.RegisterHealthServer(gs, health.NewServer())
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetStatus(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, want SERVING", got)
	}
}
