package coordinator

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testserver"
)

// fakeAggregator is a real AggregatorService that reports whatever statuses
// the test sets; hang makes it answer only when the caller gives up.
type fakeAggregator struct {
	clickaggv1.UnimplementedAggregatorServiceServer
	id   string
	addr string

	mu      sync.Mutex
	reports []*clickaggv1.PartitionStatus
	hang    bool
}

func (f *fakeAggregator) PartitionStatus(ctx context.Context, _ *clickaggv1.PartitionStatusRequest) (*clickaggv1.PartitionStatusResponse, error) {
	f.mu.Lock()
	hang := f.hang
	reports := slices.Clone(f.reports)
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &clickaggv1.PartitionStatusResponse{Member: f.id, Partitions: reports}, nil
}

func (f *fakeAggregator) set(reports []*clickaggv1.PartitionStatus, hang bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports, f.hang = reports, hang
}

// serve starts a gRPC server on a loopback port, stopped at the test's end.
func serve(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	register(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String()
}

func startAggregator(t *testing.T, id string) *fakeAggregator {
	f := &fakeAggregator{id: id}
	f.addr = serve(t, func(s *grpc.Server) { clickaggv1.RegisterAggregatorServiceServer(s, f) })
	return f
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

func coordinatorClient(t *testing.T, c *Coordinator) clickaggv1.CoordinatorServiceClient {
	addr := serve(t, func(s *grpc.Server) { clickaggv1.RegisterCoordinatorServiceServer(s, NewServer(c)) })
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return clickaggv1.NewCoordinatorServiceClient(conn)
}

func memberProto(m cluster.Member) *clickaggv1.Member {
	return &clickaggv1.Member{Id: m.ID, Role: m.Role, Addr: m.Addr, RegisteredAt: timestamppb.New(m.RegisteredAt), Version: m.Version, HttpAddr: m.HTTPAddr}
}

func diff(want, got proto.Message) string {
	return cmp.Diff(want, got, protocmp.Transform())
}

func TestServerListMembersAndAssignment(t *testing.T) {
	const parts = 6
	e := newEnv(t)
	b, a := e.register("b", "127.0.0.1:2"), e.register("a", "127.0.0.1:1")
	// The router says its version and HTTP address, as every member of
	// this version does; a and b stand for members older than the fields.
	router, err := e.cl.Register(ctxT(t), cluster.Member{ID: "r", Role: cluster.RoleRouter, Addr: "127.0.0.1:3", Version: "v1.2.3", HTTPAddr: "127.0.0.1:8083"}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = router.Close(context.Background()) })
	c, _ := e.start("coord-1", parts)
	client := coordinatorClient(t, c)
	ctx := ctxT(t)

	tests := []struct {
		role string
		want []cluster.Member
	}{
		{"", []cluster.Member{a.Member(), b.Member(), router.Member()}},
		{cluster.RoleAggregator, []cluster.Member{a.Member(), b.Member()}},
		{cluster.RoleRouter, []cluster.Member{router.Member()}},
		{cluster.RoleQueryd, nil},
	}
	for _, tt := range tests {
		t.Run("ListMembers role="+tt.role, func(t *testing.T) {
			got, err := client.ListMembers(ctx, &clickaggv1.ListMembersRequest{Role: tt.role})
			if err != nil {
				t.Fatal(err)
			}
			want := &clickaggv1.ListMembersResponse{}
			for _, m := range tt.want {
				want.Members = append(want.Members, memberProto(m))
			}
			if d := diff(want, got); d != "" {
				t.Fatalf("ListMembers(%q) (-want +got):\n%s", tt.role, d)
			}
		})
	}
	t.Run("ListMembers version and http_addr", func(t *testing.T) {
		got, err := client.ListMembers(ctx, &clickaggv1.ListMembersRequest{Role: cluster.RoleRouter})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Members) != 1 || got.Members[0].Version != "v1.2.3" || got.Members[0].HttpAddr != "127.0.0.1:8083" {
			t.Fatalf("ListMembers(router) = %v, want version v1.2.3 and http_addr 127.0.0.1:8083 read back from etcd", got.Members)
		}
	})
	t.Run("ListMembers unknown role", func(t *testing.T) {
		_, err := client.ListMembers(ctx, &clickaggv1.ListMembersRequest{Role: "routers"})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("ListMembers(routers) = %v, want InvalidArgument", err)
		}
	})

	t.Run("GetAssignment", func(t *testing.T) {
		e.waitVersion(1)
		owners, err := ring.Assign([]string{"a", "b"}, parts, ring.DefaultLoad)
		if err != nil {
			t.Fatal(err)
		}
		want := &clickaggv1.GetAssignmentResponse{Version: 1}
		for p, o := range owners {
			want.Partitions = append(want.Partitions, &clickaggv1.PartitionAssignment{Partition: int32(p), Member: o, Epoch: 1})
		}
		got, err := client.GetAssignment(ctx, &clickaggv1.GetAssignmentRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(want, got); d != "" {
			t.Fatalf("GetAssignment (-want +got):\n%s", d)
		}
	})
}

func TestServerGetClusterStatus(t *testing.T) {
	const parts = 12
	e := newEnv(t)
	up1, up2, hung := startAggregator(t, "a"), startAggregator(t, "b"), startAggregator(t, "d")
	regs := map[string]*cluster.Registration{
		"a": e.register("a", up1.addr),
		"b": e.register("b", up2.addr),
		"c": e.register("c", deadAddr(t)),
		"d": e.register("d", hung.addr),
	}
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now := base.Add(time.Hour)
	c, _ := e.startOn(e.etcd(), "coord-1", parts, WithClock(func() time.Time { return now }))
	e.waitLeader("coord-1")
	client := coordinatorClient(t, c)
	asg := e.waitVersion(1)

	// report is what an owner says about partition p: numbers derived from
	// p, so that a report attributed to the wrong partition shows.
	report := func(p int, epoch uint64) *clickaggv1.PartitionStatus {
		return &clickaggv1.PartitionStatus{
			Partition:     int32(p),
			Member:        asg.Owners[p].Member,
			Epoch:         epoch,
			State:         "serving",
			Offset:        fmt.Sprintf("%d-0", 1000+p),
			Lag:           int64(p),
			Watermark:     timestamppb.New(base.Add(time.Duration(p) * time.Minute)),
			EventsApplied: int64(100 * p),
			Heavy:         []*clickaggv1.AdCount{{AdId: fmt.Sprintf("ad-%d", p), Count: int64(p + 1)}},
		}
	}
	// light is report without its heavy ads, as the call answers unless
	// include_heavy asks for them.
	light := func(p int, epoch uint64) *clickaggv1.PartitionStatus {
		r := report(p, epoch)
		r.Heavy = nil
		return r
	}
	owned := map[string][]int{}
	for p, o := range asg.Owners {
		owned[o.Member] = append(owned[o.Member], p)
	}
	for id, ps := range owned {
		if len(ps) == 0 {
			t.Fatalf("aggregator %s owns nothing; pick another layout", id)
		}
	}

	// a reports all its partitions. b reports one of its partitions at a
	// wrong epoch (as an owner that has not caught up would) and one
	// partition it does not own. c is down and d never answers.
	var aReports, bReports []*clickaggv1.PartitionStatus
	for _, p := range owned["a"] {
		aReports = append(aReports, report(p, asg.Owners[p].Epoch))
	}
	staleB := owned["b"][0]
	for _, p := range owned["b"] {
		epoch := asg.Owners[p].Epoch
		if p == staleB {
			epoch += 7
		}
		bReports = append(bReports, report(p, epoch))
	}
	bReports = append(bReports, report(owned["a"][0], asg.Owners[owned["a"][0]].Epoch+1))
	up1.set(aReports, false)
	up2.set(bReports, false)
	hung.set(nil, true)

	var members []*clickaggv1.Member
	for _, id := range []string{"a", "b", "c", "d"} {
		members = append(members, memberProto(regs[id].Member()))
	}

	t.Run("owners down, hung or stale", func(t *testing.T) {
		want := &clickaggv1.GetClusterStatusResponse{Leader: "coord-1", PartitionCount: parts, Members: members}
		for p, o := range asg.Owners {
			switch {
			case o.Member == "a" || (o.Member == "b" && p != staleB):
				want.Partitions = append(want.Partitions, light(p, o.Epoch))
			default:
				want.Unavailable = append(want.Unavailable, int32(p))
			}
		}
		got, err := client.GetClusterStatus(ctxT(t), &clickaggv1.GetClusterStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(want, got); d != "" {
			t.Fatalf("GetClusterStatus (-want +got):\n%s", d)
		}
	})

	t.Run("every owner answers", func(t *testing.T) {
		// c and d leave; their partitions move to a and b, which now report
		// everything they own at the assigned epochs.
		for _, id := range []string{"c", "d"} {
			if err := regs[id].Close(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		}
		// The version is 2 or 3, depending on whether the coordinator saw
		// the two leaves at once.
		var next cluster.Assignment
		testserver.Eventually(t, wait, func() error {
			var err error
			if next, err = e.cl.Assignment(ctxT(t)); err != nil {
				return err
			}
			for p, o := range next.Owners {
				if o.Member != "a" && o.Member != "b" {
					return fmt.Errorf("partition %d still on %q", p, o.Member)
				}
			}
			return nil
		})
		asg = next
		var ra, rb []*clickaggv1.PartitionStatus
		want := &clickaggv1.GetClusterStatusResponse{Leader: "coord-1", PartitionCount: parts, Members: members[:2]}
		minWM := time.Time{}
		for p, o := range next.Owners {
			r := report(p, o.Epoch)
			if o.Member == "a" {
				ra = append(ra, r)
			} else {
				rb = append(rb, r)
			}
			want.Partitions = append(want.Partitions, r)
			if w := r.Watermark.AsTime(); minWM.IsZero() || w.Before(minWM) {
				minWM = w
			}
		}
		want.MinWatermark = timestamppb.New(minWM)
		up1.set(ra, false)
		up2.set(rb, false)
		got, err := client.GetClusterStatus(ctxT(t), &clickaggv1.GetClusterStatusRequest{IncludeHeavy: true})
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(want, got); d != "" {
			t.Fatalf("GetClusterStatus (-want +got):\n%s", d)
		}
		if !got.GetMinWatermark().AsTime().Equal(base) {
			t.Fatalf("min watermark %v, want partition 0's %v", got.GetMinWatermark().AsTime(), base)
		}

		// The summary of the same reports: partition p reports lag p,
		// 100p events applied and a watermark p minutes after base.
		want.Partitions = nil
		wantOwner := map[string]*clickaggv1.OwnerStatus{"a": {Member: "a"}, "b": {Member: "b"}}
		var lag, applied int64
		for p, o := range next.Owners {
			w := wantOwner[o.Member]
			w.Partitions++
			w.Serving++
			w.Lag += int64(p)
			w.EventsApplied += int64(100 * p)
			lag += int64(p)
			applied += int64(100 * p)
			if wm := base.Add(time.Duration(p) * time.Minute); w.MinWatermark == nil || wm.Before(w.MinWatermark.AsTime()) {
				w.MinWatermark = timestamppb.New(wm)
				w.WatermarkDelay = durationpb.New(now.Sub(wm))
			}
		}
		// Every partition that moved off c or d (epoch above the first
		// assignment's) is a handoff in progress: the fakes never report
		// serving_since, so the tracker never sees the new owner serve.
		var moved int32
		for _, o := range next.Owners {
			if o.Epoch > 1 {
				moved++
			}
		}
		want.Owners = []*clickaggv1.OwnerStatus{wantOwner["a"], wantOwner["b"]}
		want.Totals = &clickaggv1.ClusterTotals{Serving: parts, Lag: lag, EventsApplied: applied, WatermarkDelay: durationpb.New(time.Hour), HandoffsInProgress: moved}
		got, err = client.GetClusterStatus(ctxT(t), &clickaggv1.GetClusterStatusRequest{Summary: true})
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(want, got); d != "" {
			t.Fatalf("GetClusterStatus summary (-want +got):\n%s", d)
		}
		if lag != parts*(parts-1)/2 || moved == 0 {
			t.Fatalf("total lag %d, want %d; %d partitions moved, want some", lag, parts*(parts-1)/2, moved)
		}
	})
}
