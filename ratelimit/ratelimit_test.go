package ratelimit_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/ratelimit"
	"github.com/clickagg/clickagg/testsupport"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func from(ip string) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
}

// TestAllow: a caller spends its burst, is refused with the delay after
// which the request would pass, and passes after it; nothing refused is
// charged, and an empty or oversized request is left to the router.
func TestAllow(t *testing.T) {
	c := testsupport.NewClock(t0)
	reg := prometheus.NewRegistry()
	l := ratelimit.New(10, 10, ratelimit.PeerIP, c.Now, ratelimit.WithMetrics(reg))
	a := from("10.0.0.1")
	steps := []struct {
		advance time.Duration
		n       int
		retry   string // "" when allowed
	}{
		{0, 10, ""},
		{0, 1, "100ms"},
		{0, 5, "500ms"},                     // the refused click was not charged
		{50 * time.Millisecond, 3, "300ms"}, // half a click back: 2.5 more take 250ms
		{250 * time.Millisecond, 3, ""},
		{0, 0, ""},  // empty: the router's to refuse
		{0, 11, ""}, // larger than the burst: the router's to refuse
		{time.Hour, 10, ""},
	}
	for i, s := range steps {
		c.Advance(s.advance)
		err := l.Allow(a, s.n)
		if s.retry == "" {
			if err != nil {
				t.Fatalf("step %d (%d clicks): %v, want allowed", i, s.n, err)
			}
			continue
		}
		want := fmt.Sprintf("caller 10.0.0.1 sends more than -router.caller-rate=10 clicks/s (bursts of up to -router.caller-burst=10): this request of %s is refused, none of it counted; retry in %s",
			map[bool]string{true: "1 click", false: fmt.Sprint(s.n, " clicks")}[s.n == 1], s.retry)
		if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != want {
			t.Fatalf("step %d (%d clicks): %v, want ResourceExhausted %q", i, s.n, err, want)
		}
	}
	// Another caller has a bucket of its own.
	if err := l.Allow(from("10.0.0.2"), 10); err != nil {
		t.Fatalf("second caller: %v", err)
	}
	want := `
# HELP clickagg_router_caller_buckets Callers whose -router.caller-rate bucket is kept: those seen lately.
# TYPE clickagg_router_caller_buckets gauge
clickagg_router_caller_buckets 2
# HELP clickagg_router_caller_refused_clicks_total Clicks of the requests refused for their caller's -router.caller-rate.
# TYPE clickagg_router_caller_refused_clicks_total counter
clickagg_router_caller_refused_clicks_total 9
# HELP clickagg_router_caller_refused_requests_total Ingest requests (unary calls and stream messages) refused for their caller's -router.caller-rate.
# TYPE clickagg_router_caller_refused_requests_total counter
clickagg_router_caller_refused_requests_total 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// A large rate is written as the flag takes it, not as 1e+06.
	big := ratelimit.New(1e6, 1e6, ratelimit.PeerIP, c.Now)
	if err := big.Allow(a, 1e6); err != nil {
		t.Fatal(err)
	}
	const wantBig = "caller 10.0.0.1 sends more than -router.caller-rate=1000000 clicks/s (bursts of up to -router.caller-burst=1000000): this request of 2 clicks is refused, none of it counted; retry in 100ms"
	if err := big.Allow(a, 2); status.Convert(err).Message() != wantBig {
		t.Fatalf("over a rate of 1e6: %v, want %q", err, wantBig)
	}
	// A rate so small that its delays overflow a Duration: capped.
	tiny := ratelimit.New(1e-300, 1, ratelimit.PeerIP, c.Now)
	if err := tiny.Allow(a, 1); err != nil {
		t.Fatal(err)
	}
	if err := tiny.Allow(a, 1); status.Code(err) != codes.ResourceExhausted || !strings.HasSuffix(status.Convert(err).Message(), "retry in 876000h0m0s") {
		t.Fatalf("over a rate of 1e-300: %v, want ResourceExhausted, retry in 876000h0m0s", err)
	}
}

// TestSweep: buckets idle for their fill time (here 1 s) are dropped
// when the map is swept, by age (a minute after the last sweep) or by
// size (1024 callers), and a dropped caller is answered as before: its
// bucket would have been full.
func TestSweep(t *testing.T) {
	c := testsupport.NewClock(t0)
	l := ratelimit.New(10, 10, ratelimit.PeerIP, c.Now)
	for i := range 1023 {
		if err := l.Allow(from(fmt.Sprintf("10.0.%d.%d", i/256, i%256)), 10); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.Callers(); n != 1023 {
		t.Fatalf("%d callers, want 1023", n)
	}
	// Half a second on, the buckets are not full: the 1024th caller
	// sweeps for size and drops none of them.
	c.Advance(500 * time.Millisecond)
	if err := l.Allow(from("10.1.0.0"), 1); err != nil {
		t.Fatal(err)
	}
	if n := l.Callers(); n != 1024 {
		t.Fatalf("%d callers after a sweep of recent ones, want 1024", n)
	}
	if err := l.Allow(from("10.0.0.0"), 10); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("drained caller half a second on: %v, want ResourceExhausted", err)
	}
	// A minute on, a new caller sweeps for age: every idle bucket is full
	// and dropped.
	c.Advance(time.Minute)
	if err := l.Allow(from("10.2.0.0"), 1); err != nil {
		t.Fatal(err)
	}
	if n := l.Callers(); n != 1 {
		t.Fatalf("%d callers after a minute idle, want 1 (the new one)", n)
	}
	if err := l.Allow(from("10.0.0.0"), 10); err != nil {
		t.Fatalf("a dropped caller's full burst: %v", err)
	}
}

func TestPeerIP(t *testing.T) {
	for _, tc := range []struct {
		ctx  context.Context
		want string
	}{
		{context.Background(), "unknown"},
		{from("127.0.0.2"), "127.0.0.2"},
		{from("fd00::1"), "fd00::1"},
		{peer.NewContext(context.Background(), &peer.Peer{Addr: &net.UnixAddr{Name: "/run/clickagg.sock", Net: "unix"}}), "/run/clickagg.sock"},
	} {
		if got := ratelimit.PeerIP(tc.ctx); got != tc.want {
			t.Errorf("PeerIP = %q, want %q", got, tc.want)
		}
	}
}
