package coordinator

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// fakeRouter is a real RouterService that answers what the test gives it;
// a nil answer makes it answer only when the caller gives up.
type fakeRouter struct {
	clickaggv1.UnimplementedRouterServiceServer
	answer *clickaggv1.RouterStatus
}

func (f *fakeRouter) RouterStatus(ctx context.Context, _ *clickaggv1.RouterStatusRequest) (*clickaggv1.RouterStatusResponse, error) {
	if f.answer == nil {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &clickaggv1.RouterStatusResponse{Status: f.answer}, nil
}

func startRouter(t *testing.T, answer *clickaggv1.RouterStatus) string {
	f := &fakeRouter{answer: answer}
	return serve(t, func(s *grpc.Server) { clickaggv1.RegisterRouterServiceServer(s, f) })
}

// TestServerGetClusterStatusRouters: GetClusterStatus asks every live
// router, in both forms; the routers that are down, hang or answer under
// another name are listed, and the ingest totals sum the others exactly.
func TestServerGetClusterStatusRouters(t *testing.T) {
	const parts = 4
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := newEnv(t)
	started := timestamppb.New(t0)
	r1 := &clickaggv1.RouterStatus{Member: "r1", Started: started, Requests: 40, Accepted: 1000, Rejected: 7, AppendFailures: 2, AcceptedPerSecond: 12.5}
	r2 := &clickaggv1.RouterStatus{Member: "r2", Started: started, Requests: 3, Accepted: 234, AcceptedPerSecond: 3.25}
	addrs := map[string]string{
		"r1": startRouter(t, r1),
		"r2": startRouter(t, r2),
		"r3": startRouter(t, nil), // hangs past -coordinator.status-timeout
		"r4": deadAddr(t),
		"r5": startRouter(t, &clickaggv1.RouterStatus{Member: "someone-else", Accepted: 99}),
	}
	var members []*clickaggv1.Member
	for _, id := range []string{"r1", "r2", "r3", "r4", "r5"} {
		reg, err := e.cl.Register(ctxT(t), cluster.Member{ID: id, Role: cluster.RoleRouter, Addr: addrs[id]}, ttl)
		if err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
		t.Cleanup(func() { _ = reg.Close(context.Background()) })
		members = append(members, memberProto(reg.Member()))
	}
	c, _ := e.startOn(e.etcd(), "coord-1", parts, WithClock(func() time.Time { return t0 }))
	e.waitLeader("coord-1")
	client := coordinatorClient(t, c)
	unavailable := []string{"r3", "r4", "r5"}

	t.Run("full", func(t *testing.T) {
		want := &clickaggv1.GetClusterStatusResponse{Leader: "coord-1", PartitionCount: parts, Members: members,
			Unavailable: []int32{0, 1, 2, 3}, Routers: []*clickaggv1.RouterStatus{r1, r2}, UnavailableRouters: unavailable}
		got, err := client.GetClusterStatus(ctxT(t), &clickaggv1.GetClusterStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(want, got); d != "" {
			t.Fatalf("GetClusterStatus (-want +got):\n%s", d)
		}
	})
	t.Run("summary", func(t *testing.T) {
		want := &clickaggv1.GetClusterStatusResponse{Leader: "coord-1", PartitionCount: parts, Members: members,
			Unavailable: []int32{0, 1, 2, 3}, Routers: []*clickaggv1.RouterStatus{r1, r2}, UnavailableRouters: unavailable,
			Totals: &clickaggv1.ClusterTotals{Unavailable: parts, IngestAccepted: 1234, IngestRejected: 7,
				IngestAcceptedPerSecond: 15.75, RoutersUnavailable: 3}}
		got, err := client.GetClusterStatus(ctxT(t), &clickaggv1.GetClusterStatusRequest{Summary: true})
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(want, got); d != "" {
			t.Fatalf("GetClusterStatus summary (-want +got):\n%s", d)
		}
	})
}
