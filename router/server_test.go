package router

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/grpcserver"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testserver"
)

// startGRPC serves r on a real grpc.Server on 127.0.0.1 and returns a client.
func startGRPC(t *testing.T, r *Router, opts ...grpc.ServerOption) clickaggv1.IngestServiceClient {
	t.Helper()
	return clickaggv1.NewIngestServiceClient(dialGRPC(t, r, opts...))
}

func dialGRPC(t *testing.T, r *Router, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	return dialFrom(t, serveGRPC(t, r, opts...), nil)
}

// serveGRPC serves r on a real grpc.Server on 127.0.0.1, stopped by the
// test's cleanup, and returns its address.
func serveGRPC(t *testing.T, r *Router, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	clickaggv1.RegisterIngestServiceServer(srv, NewServer(r))
	clickaggv1.RegisterRouterServiceServer(srv, NewStatusServer(r))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// dialFrom dials addr from the local IP from (any loopback address on
// Linux), or from the system's choice when nil; the connection is closed
// by the test's cleanup, before the server stops.
func dialFrom(t *testing.T, addr string, from net.IP) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if from != nil {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: from}}
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", a)
		}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func grpcCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mixed returns a request of n events where every third one has a bad
// country, and the answer it must get.
func mixed(prefix string, n int) ([]*clickaggv1.ClickEvent, int64, []*clickaggv1.Rejection) {
	var events []*clickaggv1.ClickEvent
	var rejected []*clickaggv1.Rejection
	for i := range n {
		e := click(fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("ad-%d", i%5), t0.Add(-time.Duration(i)*time.Second))
		if i%3 == 1 {
			e.Country = "ZZ"
			rejected = append(rejected, &clickaggv1.Rejection{Index: int32(i), EventId: e.EventId,
				Reason: `country "ZZ" is not an assigned ISO 3166-1 alpha-2 code`})
		}
		events = append(events, e)
	}
	return events, int64(n - len(rejected)), rejected
}

// startCapped serves, on a real Redis and a real grpc.Server, a router of
// four partitions that takes at most 20 events a request, and returns its
// client, the Redis client and the partitioner.
func startCapped(t *testing.T) (clickaggv1.IngestServiceClient, *redis.Client, *ring.Partitioner) {
	t.Helper()
	rdb := testserver.RedisClient(t)
	cfg := testConfig(t)
	cfg.MaxEvents = 20
	parts := partitioner(t, 4)
	r := New(cfg, testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	return startGRPC(t, r), rdb, parts
}

func TestGRPCIngest(t *testing.T) {
	ctx := grpcCtx(t)
	c, rdb, parts := startCapped(t)

	events, wantAccepted, wantRejected := mixed("u", 20)
	resp, err := c.Ingest(ctx, &clickaggv1.IngestRequest{Events: events})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != wantAccepted || !equalRejections(resp.Rejected, wantRejected) {
		t.Fatalf("Ingest = %d, %v; want %d, %v", resp.Accepted, resp.Rejected, wantAccepted, wantRejected)
	}
	if n := countLogEvents(t, rdb, parts.Partitions()); n != wantAccepted {
		t.Fatalf("%d events in the log, want %d", n, wantAccepted)
	}

	for _, tc := range []struct {
		name   string
		events []*clickaggv1.ClickEvent
		code   codes.Code
		msg    string
	}{
		{"no_events", nil, codes.InvalidArgument, "router: request has no events"},
		{"too_many_events", append(events, click("u-x", "ad-1", t0)), codes.ResourceExhausted, "router: request has too many events: 21 events, at most 20 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Ingest(ctx, &clickaggv1.IngestRequest{Events: tc.events})
			if st := status.Convert(err); st.Code() != tc.code || st.Message() != tc.msg {
				t.Fatalf("Ingest: %v, want %v %q", err, tc.code, tc.msg)
			}
		})
	}
	if n := countLogEvents(t, rdb, parts.Partitions()); n != wantAccepted {
		t.Fatalf("%d events in the log after failed requests, want still %d", n, wantAccepted)
	}
}

// countLogEvents counts the events in every partition's log.
func countLogEvents(t *testing.T, rdb *redis.Client, partitions int) int64 {
	t.Helper()
	var n int64
	for p := range partitions {
		entries, err := readStream(context.Background(), rdb, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			n += int64(len(e.Events))
		}
	}
	return n
}

// TestGRPCIngestStream answers each request in order, and ends the stream
// with the status of a request that fails as a whole.
func TestGRPCIngestStream(t *testing.T) {
	ctx := grpcCtx(t)
	c, rdb, parts := startCapped(t)

	t.Run("in_order", func(t *testing.T) {
		s, err := c.IngestStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		type answer struct {
			accepted int64
			rejected []*clickaggv1.Rejection
		}
		var want []answer
		var total int64
		// Different sizes, so that answers out of order would show.
		for i, size := range []int{1, 7, 20, 4} {
			events, accepted, rejected := mixed(fmt.Sprintf("s%d", i), size)
			want = append(want, answer{accepted, rejected})
			total += accepted
			if err := s.Send(&clickaggv1.IngestStreamRequest{Events: events}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		for i, w := range want {
			resp, err := s.Recv()
			if err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
			if resp.Accepted != w.accepted || !equalRejections(resp.Rejected, w.rejected) {
				t.Fatalf("response %d = %d, %v; want %d, %v", i, resp.Accepted, resp.Rejected, w.accepted, w.rejected)
			}
		}
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("Recv after the last answer: %v, want EOF", err)
		}
		if n := countLogEvents(t, rdb, parts.Partitions()); n != total {
			t.Fatalf("%d events in the log, want %d", n, total)
		}
	})

	for _, tc := range []struct {
		name   string
		events []*clickaggv1.ClickEvent
		code   codes.Code
		msg    string
	}{
		{"stream_no_events", nil, codes.InvalidArgument, "router: request has no events"},
		{"stream_too_many_events", func() []*clickaggv1.ClickEvent { e, _, _ := mixed("big", 21); return e }(),
			codes.ResourceExhausted, "router: request has too many events: 21 events, at most 20 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := c.IngestStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			good, accepted, _ := mixed(tc.name, 3)
			if err := s.Send(&clickaggv1.IngestStreamRequest{Events: good}); err != nil {
				t.Fatal(err)
			}
			if resp, err := s.Recv(); err != nil || resp.Accepted != accepted {
				t.Fatalf("first answer %v, %v; want %d accepted", resp, err, accepted)
			}
			if err := s.Send(&clickaggv1.IngestStreamRequest{Events: tc.events}); err != nil {
				t.Fatal(err)
			}
			_, err = s.Recv()
			if st := status.Convert(err); st.Code() != tc.code || st.Message() != tc.msg {
				t.Fatalf("Recv: %v, want %v %q", err, tc.code, tc.msg)
			}
		})
	}
}

// TestGRPCMessageTooLarge: a request larger than the server's
// MaxRecvMsgSize is refused by grpc itself before the router sees it.
func TestGRPCMessageTooLarge(t *testing.T) {
	ctx := grpcCtx(t)
	rdb := testserver.RedisClient(t)
	parts := partitioner(t, 4)
	r := New(testConfig(t), testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	const limit = 16 << 10
	c := startGRPC(t, r, grpc.MaxRecvMsgSize(limit))

	var events []*clickaggv1.ClickEvent
	for i := range 200 {
		events = append(events, click(fmt.Sprintf("e-%d-%s", i, strings.Repeat("x", 60)), "ad-1", t0))
	}
	req := &clickaggv1.IngestRequest{Events: events}
	size := proto.Size(req)
	if size <= limit {
		t.Fatalf("request is %d bytes, must exceed %d", size, limit)
	}
	_, err := c.Ingest(ctx, req)
	want := fmt.Sprintf("grpc: received message larger than max (%d vs. %d)", size, limit)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != want {
		t.Fatalf("Ingest: %v, want ResourceExhausted %q", err, want)
	}
	if n := countLogEvents(t, rdb, parts.Partitions()); n != 0 {
		t.Fatalf("%d events in the log, want 0", n)
	}
}

// rawCodec sends bytes as they are, to put on the wire what the protobuf
// library refuses to encode.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// TestGRPCInvalidUTF8: proto3 strings must be UTF-8; the codec of the
// process's gRPC server (package grpcserver) refuses the whole request with
// INVALID_ARGUMENT naming the field, before the router sees it, on Ingest
// and IngestStream alike.
func TestGRPCInvalidUTF8(t *testing.T) {
	ctx := grpcCtx(t)
	rdb := testserver.RedisClient(t)
	parts := partitioner(t, 4)
	r := New(testConfig(t), testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	var gc grpcserver.Config
	gc.RegisterFlags(flag.NewFlagSet("grpc", flag.ContinueOnError))
	conn := dialGRPC(t, r, grpcserver.Options(gc)...)

	good, err := proto.Marshal(click("e-1", "ad-1", t0))
	if err != nil {
		t.Fatal(err)
	}
	// Two valid events, then one whose event_id (field 1) is set again to
	// invalid UTF-8: the last value of a field wins when decoding.
	ev := protowire.AppendTag(good, 1, protowire.BytesType)
	ev = protowire.AppendString(ev, "e-\xff")
	var req []byte
	for _, e := range [][]byte{good, good, ev} {
		req = protowire.AppendTag(req, 1, protowire.BytesType)
		req = protowire.AppendBytes(req, e)
	}
	const want = "request is malformed: events[2].event_id is not valid UTF-8"

	var out []byte
	err = conn.Invoke(ctx, clickaggv1.IngestService_Ingest_FullMethodName, &req, &out, grpc.ForceCodec(rawCodec{}))
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != want {
		t.Fatalf("Ingest: %v, want InvalidArgument %q", err, want)
	}

	s, err := conn.NewStream(ctx, &clickaggv1.IngestService_ServiceDesc.Streams[0], clickaggv1.IngestService_IngestStream_FullMethodName, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendMsg(&req); err != nil {
		t.Fatal(err)
	}
	if err := s.RecvMsg(&out); status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != want {
		t.Fatalf("IngestStream: %v, want InvalidArgument %q", err, want)
	}
	if n := countLogEvents(t, rdb, parts.Partitions()); n != 0 {
		t.Fatalf("%d events in the log, want 0", n)
	}
}

// TestGRPCMalformedRequest: bytes that are not an IngestRequest at all are
// the client's fault too.
func TestGRPCMalformedRequest(t *testing.T) {
	ctx := grpcCtx(t)
	rdb := testserver.RedisClient(t)
	r := New(testConfig(t), testID, partitioner(t, 4), partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	var gc grpcserver.Config
	gc.RegisterFlags(flag.NewFlagSet("grpc", flag.ContinueOnError))
	conn := dialGRPC(t, r, grpcserver.Options(gc)...)

	req := protowire.AppendTag(nil, 1, protowire.BytesType) // a length that never comes
	var out []byte
	err := conn.Invoke(ctx, clickaggv1.IngestService_Ingest_FullMethodName, &req, &out, grpc.ForceCodec(rawCodec{}))
	// The decoder's own text follows; protobuf varies its spacing on
	// purpose.
	const want = "request is malformed: it does not decode as clickagg.v1.IngestRequest: "
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), want) {
		t.Fatalf("Ingest: %v, want InvalidArgument %q...", err, want)
	}
}

// TestGRPCStreamCap: with the process's stream caps (package grpcserver),
// an IngestStream over the per-connection cap fails with
// RESOURCE_EXHAUSTED and the streams already open go on ingesting.
func TestGRPCStreamCap(t *testing.T) {
	ctx := grpcCtx(t)
	rdb := testserver.RedisClient(t)
	parts := partitioner(t, 4)
	r := New(testConfig(t), testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	var gc grpcserver.Config
	gc.RegisterFlags(flag.NewFlagSet("grpc", flag.ContinueOnError))
	gc.MaxStreamsPerConn = 3
	c := startGRPC(t, r, grpcserver.Options(gc)...)

	send := func(s clickaggv1.IngestService_IngestStreamClient, id string) error {
		if err := s.Send(&clickaggv1.IngestStreamRequest{Events: []*clickaggv1.ClickEvent{click(id, "ad-1", t0)}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		// A Send on a stream the server has already ended returns io.EOF;
		// the status comes with Recv.
		resp, err := s.Recv()
		if err == nil && resp.Accepted != 1 {
			err = fmt.Errorf("accepted %d, want 1", resp.Accepted)
		}
		return err
	}
	var open []clickaggv1.IngestService_IngestStreamClient
	for i := range 3 {
		s, err := c.IngestStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := send(s, fmt.Sprintf("open-%d", i)); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		open = append(open, s)
	}
	s, err := c.IngestStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = send(s, "over")
	const want = "too many streams open on this connection, at most 3 allowed (-grpc.max-streams-per-conn): end one, or open another connection"
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != want {
		t.Fatalf("fourth stream: %v, want ResourceExhausted %q", err, want)
	}
	for i, s := range open {
		if err := send(s, fmt.Sprintf("again-%d", i)); err != nil {
			t.Fatalf("stream %d after the refusal: %v", i, err)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("stream %d end: %v, want EOF", i, err)
		}
	}
	if n := countLogEvents(t, rdb, parts.Partitions()); n != 6 {
		t.Fatalf("%d events in the log, want 6", n)
	}
}
