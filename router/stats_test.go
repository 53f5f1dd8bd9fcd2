package router

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/google/go-cmp/cmp"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

// TestStats: the counters RouterStatus reports are exact, and the rate
// follows the router's clock.
func TestStats(t *testing.T) {
	ctx := context.Background()
	srv := testserver.Redis(t)
	rdb := newClient(t, srv)
	clk := testsupport.NewClock(t0)
	r := New(testConfig(t), testID, partitioner(t, 4), partlog.New(rdb, testPrefix), nil, clk.Now)
	c := clickaggv1.NewRouterServiceClient(dialGRPC(t, r))

	status := func() *clickaggv1.RouterStatus {
		t.Helper()
		resp, err := c.RouterStatus(ctx, &clickaggv1.RouterStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	want := &clickaggv1.RouterStatus{Member: testID, Started: timestamppb.New(t0)}
	check := func(step string) {
		t.Helper()
		if diff := cmp.Diff(want, status(), protocmp.Transform()); diff != "" {
			t.Fatalf("%s: RouterStatus (-want +got):\n%s", step, diff)
		}
	}
	check("at start")

	send := func(n, bad int) {
		t.Helper()
		now := clk.Now()
		var events []*clickaggv1.ClickEvent
		for i := range n + bad {
			e := click(fmt.Sprintf("e-%d-%d", now.Unix(), i), fmt.Sprintf("ad-%d", i%5), now)
			if i >= n {
				e.Country = "XX"
			}
			events = append(events, e)
		}
		accepted, rejected, err := r.Ingest(ctx, events)
		if err != nil || accepted != int64(n) || len(rejected) != bad {
			t.Fatalf("Ingest = %d, %d rejected, %v; want %d, %d", accepted, len(rejected), err, n, bad)
		}
	}
	send(30, 3)
	want.Requests, want.Accepted, want.Rejected, want.AcceptedPerSecond = 1, 30, 3, 30
	check("30 accepted in the first second")

	clk.Set(t0.Add(9 * time.Second))
	send(20, 0)
	want.Requests, want.Accepted, want.AcceptedPerSecond = 2, 50, 5 // 50 over 10 s
	check("50 accepted over 10 s")

	clk.Set(t0.Add(59 * time.Second))
	want.AcceptedPerSecond = 50.0 / 60
	check("the full minute")

	clk.Set(t0.Add(60 * time.Second))
	want.AcceptedPerSecond = 20.0 / 60
	check("the first second left the window")

	clk.Set(t0.Add(69 * time.Second))
	want.AcceptedPerSecond = 0
	check("a minute idle")

	// A failed append counts the request and the failure, nothing accepted.
	srv.Kill()
	if _, _, err := r.Ingest(ctx, []*clickaggv1.ClickEvent{click("e-late", "ad-1", clk.Now())}); !errors.Is(err, ErrLogUnavailable) {
		t.Fatalf("Ingest with Redis down: %v, want %v", err, ErrLogUnavailable)
	}
	want.Requests, want.AppendFailures = 3, 1
	check("after a failed append")
}
