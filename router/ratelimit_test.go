package router

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/grpcserver"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ratelimit"
	"github.com/clickagg/clickagg/testserver"
)

// TestGRPCCallerRate: with -router.caller-rate, two callers (two loopback
// addresses) share a router on real Redis; the one over its rate gets
// RESOURCE_EXHAUSTED naming it, the rate and the flags, with a retry
// delay, for Ingest and for an IngestStream message, while the other
// goes on; the log holds exactly the clicks of the requests that passed.
// The limiter's clock stands still, so its buckets never refill: the
// outcome does not depend on timing.
func TestGRPCCallerRate(t *testing.T) {
	ctx := grpcCtx(t)
	rdb := testserver.RedisClient(t)
	parts := partitioner(t, 4)
	cfg := testConfig(t)
	cfg.MaxEvents = 5
	cfg.CallerRate = 0.001 // one click per 1000 s
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	burst := cfg.CallerBurstOrDefault()
	if burst != 5 {
		t.Fatalf("default burst %d, want -router.max-events-per-request=5", burst)
	}
	r := New(cfg, testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	lim := ratelimit.New(cfg.CallerRate, burst, ratelimit.PeerIP, func() time.Time { return t0 })
	var gc grpcserver.Config
	gc.RegisterFlags(flag.NewFlagSet("grpc", flag.ContinueOnError))
	addr := serveGRPC(t, r, append(grpcserver.Options(gc), lim.ServerOptions()...)...)
	a := clickaggv1.NewIngestServiceClient(dialFrom(t, addr, net.IPv4(127, 0, 0, 2)))
	b := clickaggv1.NewIngestServiceClient(dialFrom(t, addr, net.IPv4(127, 0, 0, 3)))

	sent := 0 // clicks the router accepted: the ground truth of the log
	batch := func(prefix string, n int) []*clickaggv1.ClickEvent {
		var out []*clickaggv1.ClickEvent
		for i := range n {
			out = append(out, click(fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("ad-%d", i), t0))
		}
		return out
	}
	ingest := func(c clickaggv1.IngestServiceClient, prefix string, n int) error {
		resp, err := c.Ingest(ctx, &clickaggv1.IngestRequest{Events: batch(prefix, n)})
		if err == nil {
			if resp.Accepted != int64(n) {
				t.Fatalf("%s: accepted %d of %d", prefix, resp.Accepted, n)
			}
			sent += n
		}
		return err
	}
	// An empty bucket: n clicks take n*1000 s to come back.
	delay := func(n int) time.Duration { return time.Duration(n) * 1000 * time.Second }
	refused := func(caller string, n int) string {
		return fmt.Sprintf("caller %s sends more than -router.caller-rate=0.001 clicks/s (bursts of up to -router.caller-burst=5): this request of %s is refused, none of it counted; retry in %v",
			caller, map[bool]string{true: "1 click", false: fmt.Sprint(n, " clicks")}[n == 1], delay(n))
	}
	wantRefused := func(what string, err error, caller string, n int) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted || st.Message() != refused(caller, n) {
			t.Fatalf("%s: %v, want ResourceExhausted %q", what, err, refused(caller, n))
		}
		var retry *errdetails.RetryInfo
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				retry = ri
			}
		}
		if retry == nil || retry.RetryDelay.AsDuration() != delay(n) {
			t.Fatalf("%s: details %v, want a RetryInfo of %v", what, st.Details(), delay(n))
		}
	}

	// A spends its whole burst, then is refused, a click at a time too.
	if err := ingest(a, "a1", 5); err != nil {
		t.Fatal(err)
	}
	wantRefused("caller A over its burst", ingest(a, "a2", 3), "127.0.0.2", 3)
	wantRefused("caller A, one more click", ingest(a, "a3", 1), "127.0.0.2", 1)
	// B is not affected by A.
	if err := ingest(b, "b1", 3); err != nil {
		t.Fatalf("caller B after A was refused: %v", err)
	}

	// Streams: B's two more clicks pass, its next message ends the
	// stream; A's first message is refused.
	stream := func(c clickaggv1.IngestServiceClient, prefix string, sizes ...int) error {
		s, err := c.IngestStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.CloseSend() }()
		for i, n := range sizes {
			if err := s.Send(&clickaggv1.IngestStreamRequest{Events: batch(fmt.Sprintf("%s-%d", prefix, i), n)}); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			resp, err := s.Recv()
			if err != nil {
				return err
			}
			if resp.Accepted != int64(n) {
				t.Fatalf("%s message %d: accepted %d of %d", prefix, i, resp.Accepted, n)
			}
			sent += n
		}
		return nil
	}
	wantRefused("caller B's stream over its burst", stream(b, "bs", 2, 1), "127.0.0.3", 1)
	wantRefused("caller A's stream", stream(a, "as", 1), "127.0.0.2", 1)

	if sent != 10 {
		t.Fatalf("%d clicks passed, want 5 of A and 5 of B", sent)
	}
	if n := countLogEvents(t, rdb, parts.Partitions()); n != int64(sent) {
		t.Fatalf("%d events in the log, want the %d of the requests that passed", n, sent)
	}
	if n := lim.Callers(); n != 2 {
		t.Fatalf("%d callers kept, want 2", n)
	}
}
