package grpcserver

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

func testConfig() Config {
	return Config{
		MaxStreamsPerConn:    2,
		MaxStreams:           3,
		MaxConcurrentStreams: 100,
		KeepaliveMinTime:     DefaultKeepaliveMinTime,
		KeepaliveTime:        DefaultKeepaliveTime,
		KeepaliveTimeout:     DefaultKeepaliveTimeout,
		MaxConnectionIdle:    DefaultMaxConnectionIdle,
	}
}

// serve starts a gRPC server with the options of cfg, the health service
// and test.Stuck (stuckDesc) on 127.0.0.1 and returns its address and
// health server.
func serve(t *testing.T, cfg Config) (string, *health.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, cfg, lis)
}

// serveOn is serve on lis.
func serveOn(t *testing.T, cfg Config, lis net.Listener) (string, *health.Server) {
	t.Helper()
	gs := grpc.NewServer(Options(cfg)...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	gs.RegisterService(&stuckDesc, struct{}{})
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String(), hs
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
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

// TestMalformedRequestIsInvalidArgument: a request that does not decode is
// the client's fault, over unary and streaming RPCs alike, and the server
// goes on serving the connection.
func TestMalformedRequestIsInvalidArgument(t *testing.T) {
	ctx := testCtx(t)
	addr, _ := serve(t, testConfig())
	conn := dial(t, addr)

	for _, tc := range []struct {
		name, method string
		streaming    bool
		req          []byte
		msg          string
	}{
		{"unary_invalid_utf8", healthpb.Health_Check_FullMethodName, false,
			protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "svc-\xff"),
			"request is malformed: service is not valid UTF-8"},
		{"stream_invalid_utf8", healthpb.Health_Watch_FullMethodName, true,
			protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "\xc3"),
			"request is malformed: service is not valid UTF-8"},
		{"unary_truncated", healthpb.Health_Check_FullMethodName, false,
			protowire.AppendTag(nil, 1, protowire.BytesType),
			// The decoder's own text follows; protobuf varies its spacing
			// on purpose.
			"request is malformed: it does not decode as grpc.health.v1.HealthCheckRequest: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.streaming {
				var s grpc.ClientStream
				s, err = conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, tc.method, grpc.ForceCodec(rawCodec{}))
				if err != nil {
					t.Fatal(err)
				}
				if err = s.SendMsg(&tc.req); err != nil {
					t.Fatal(err)
				}
				if err = s.CloseSend(); err != nil {
					t.Fatal(err)
				}
				var out []byte
				err = s.RecvMsg(&out)
			} else {
				var out []byte
				err = conn.Invoke(ctx, tc.method, &tc.req, &out, grpc.ForceCodec(rawCodec{}))
			}
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tc.msg) ||
				!strings.HasSuffix(tc.msg, ": ") && st.Message() != tc.msg {
				t.Fatalf("got %v, want InvalidArgument %q", err, tc.msg)
			}
		})
	}
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check after malformed requests: %v", err)
	}
}

// TestInvalidUTF8Path names the field by its path through nested and
// repeated messages.
func TestInvalidUTF8Path(t *testing.T) {
	event := func(id, ad string) []byte {
		b, err := proto.Marshal(&clickaggv1.ClickEvent{EventId: id, AdId: "ad", UserId: "u", ClickTime: timestamppb.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if ad != "" {
			// ad_id (field 2) again, invalid: the last value wins.
			b = protowire.AppendString(protowire.AppendTag(b, 2, protowire.BytesType), ad)
		}
		return b
	}
	request := func(events ...[]byte) []byte {
		var b []byte
		for _, e := range events {
			b = protowire.AppendBytes(protowire.AppendTag(b, 1, protowire.BytesType), e)
		}
		return b
	}
	md := (&clickaggv1.IngestRequest{}).ProtoReflect().Descriptor()
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"first_event", request(event("e1", "\xff")), "events[0].ad_id"},
		{"third_event", request(event("e1", ""), event("e2", ""), event("e3", "a\xffb")), "events[2].ad_id"},
		{"valid", request(event("e1", ""), event("é", "✓")), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := invalidUTF8(md, tc.data, ""); got != tc.want {
				t.Errorf("invalidUTF8 = %q, want %q", got, tc.want)
			}
		})
	}
}

// watch opens a health Watch on conn and waits for its first answer, so
// that the stream is open on the server when it returns.
func watch(ctx context.Context, t *testing.T, conn *grpc.ClientConn) (healthpb.Health_WatchClient, error) {
	t.Helper()
	s, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		return nil, err
	}
	return s, nil
}

// TestStreamCaps: a stream over the per-connection cap fails with
// RESOURCE_EXHAUSTED while the earlier ones go on, another connection may
// still open streams up to the server-wide cap, and an ended stream frees
// its place.
func TestStreamCaps(t *testing.T) {
	ctx := testCtx(t)
	addr, hs := serve(t, testConfig()) // 2 per connection, 3 in all
	conn1, conn2 := dial(t, addr), dial(t, addr)

	var open []healthpb.Health_WatchClient
	var cancels []context.CancelFunc
	for i := range 2 {
		sctx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		s, err := watch(sctx, t, conn1)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		open = append(open, s)
	}
	_, err := watch(ctx, t, conn1)
	const perConn = "too many streams open on this connection, at most 2 allowed (-grpc.max-streams-per-conn): end one, or open another connection"
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != perConn {
		t.Fatalf("third stream on one connection: %v, want ResourceExhausted %q", err, perConn)
	}

	// The open streams still work.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	for i, s := range open {
		if r, err := s.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("stream %d after the refusal: %v, %v; want NOT_SERVING", i, r, err)
		}
	}

	if _, err := watch(ctx, t, conn2); err != nil {
		t.Fatalf("first stream on a second connection: %v", err)
	}
	_, err = watch(ctx, t, conn2)
	const total = "too many streams open on this server, at most 3 allowed (-grpc.max-streams): retry later or at another server"
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != total {
		t.Fatalf("fourth stream on the server: %v, want ResourceExhausted %q", err, total)
	}

	// Ending a stream frees its place on its connection and the server;
	// the server learns of the cancellation asynchronously.
	cancels[0]()
	testserver.Eventually(t, 10*time.Second, func() error {
		_, err := watch(ctx, t, conn1)
		return err
	})
}

func TestConfigValidate(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no_streams", func(c *Config) { c.MaxStreamsPerConn = 0 }, "-grpc.max-streams-per-conn 0: must be at least 1"},
		{"total_below_per_conn", func(c *Config) { c.MaxStreams = 99 }, "-grpc.max-streams 99: must be at least -grpc.max-streams-per-conn=100"},
		{"http2_limit_not_above_cap", func(c *Config) { c.MaxConcurrentStreams = 100 }, "-grpc.max-concurrent-streams 100: must exceed -grpc.max-streams-per-conn=100 (and fit in 31 bits), or streams over that cap would wait instead of failing"},
		{"no_keepalive_min", func(c *Config) { c.KeepaliveMinTime = 0 }, "-grpc.keepalive-min-time 0s: must be positive"},
		{"negative_idle", func(c *Config) { c.MaxConnectionIdle = -time.Second }, "-grpc.max-connection-idle -1s: must not be negative"},
		{"negative_age", func(c *Config) { c.MaxConnectionAge = -time.Second }, "-grpc.max-connection-age -1s: must not be negative; 0 turns it off"},
		{"negative_grace", func(c *Config) { c.MaxConnectionAgeGrace = -time.Second }, "-grpc.max-connection-age-grace -1s: must not be negative; 0 waits for open RPCs however long"},
		{"negative_call_timeout", func(c *Config) { c.CallTimeout = -time.Second }, "-grpc.call-timeout -1s: must not be negative; 0 leaves calls unbounded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := c
			tc.edit(&bad)
			if err := bad.Validate(); err == nil || err.Error() != tc.want {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// TestMaxConnectionAge: past -grpc.max-connection-age the server has the
// client reconnect, and the client's calls go on across the new
// connections without an error; a stream still open after the grace ends
// with UNAVAILABLE, which clients retry, and the next stream on the same
// client works. The reconnects are what let a client resolve its target
// again and spread over servers added since.
func TestMaxConnectionAge(t *testing.T) {
	ctx := testCtx(t)
	cfg := testConfig()
	cfg.MaxConnectionAge, cfg.MaxConnectionAgeGrace = 200*time.Millisecond, 200*time.Millisecond
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: lis}
	addr, _ := serveOn(t, cfg, cl)
	conn := dial(t, addr)
	hc := healthpb.NewHealthClient(conn)

	// Unary calls until the server has accepted three connections: every
	// call answers.
	calls := 0
	testserver.Eventually(t, 30*time.Second, func() error {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call %d, connection %d: %v", calls, cl.accepted.Load(), err)
		}
		calls++
		if n := cl.accepted.Load(); n < 3 {
			return fmt.Errorf("%d connections accepted after %d calls", n, calls)
		}
		return nil
	})

	// A stream outlives its connection's age and grace: the connection is
	// closed under it.
	before := cl.accepted.Load()
	s, err := watch(ctx, t, conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream past the connection's age and grace: %v, want UNAVAILABLE", err)
	}
	if _, err := watch(ctx, t, conn); err != nil {
		t.Fatalf("stream after the reconnect: %v", err)
	}
	if n := cl.accepted.Load(); n <= before {
		t.Fatalf("connections accepted %d, before the stream %d: the client did not reconnect", n, before)
	}
}

// rawConn opens an HTTP/2 connection to addr and sends the client
// preface, for a client that breaks the rules grpc's own client keeps.
func rawConn(t *testing.T, addr string) (*http2.Framer, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	// Only keeps a broken server from hanging the test.
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return fr, conn
}

// TestKeepalivePingAbuse: a client that pings more often than
// -grpc.keepalive-min-time is sent GOAWAY ENHANCE_YOUR_CALM
// "too_many_pings" and disconnected (grpc allows two bad pings).
func TestKeepalivePingAbuse(t *testing.T) {
	addr, _ := serve(t, testConfig()) // pings at least 10s apart
	fr, _ := rawConn(t, addr)
	for i := range 5 {
		if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read: %v before a GOAWAY", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "too_many_pings" {
				t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", ga.ErrCode, ga.DebugData())
			}
			break
		}
	}
	// Then the server closes the connection.
	for {
		if _, err := fr.ReadFrame(); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				return
			}
			t.Fatalf("after GOAWAY: %v, want the connection closed", err)
		}
	}
}

// TestMaxConcurrentStreamsRefused: a client that opens more calls on one
// connection than -grpc.max-concurrent-streams (grpc's client would
// queue them) has the one over the limit reset with REFUSED_STREAM; the
// calls already open are left alone.
func TestMaxConcurrentStreamsRefused(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConcurrentStreams = 3
	addr, _ := serve(t, cfg)
	fr, _ := rawConn(t, addr)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: healthpb.Health_Check_FullMethodName}, {Name: ":authority", Value: addr},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"}} {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	// Four unary calls whose requests never come: each stays open.
	for id := uint32(1); id <= 7; id += 2 {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read: %v before the fourth call was refused", err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID != 7 || f.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("RST_STREAM %v on stream %d, want REFUSED_STREAM on the fourth call (stream 7)", f.ErrCode, f.StreamID)
			}
			return
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v %q: the connection was closed, not the one call over the limit", f.ErrCode, f.DebugData())
		}
	}
}

// stuckDesc is a service with one unary method that waits until its
// context ends, as a call waiting on a peer that never answers does.
var stuckDesc = grpc.ServiceDesc{
	ServiceName: "test.Stuck",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Wait",
		Handler: func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(healthpb.HealthCheckRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			wait := func(ctx context.Context, _ any) (any, error) {
				<-ctx.Done()
				return nil, status.FromContextError(ctx.Err()).Err()
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Stuck/Wait"}, wait)
		},
	}},
}

// TestCallTimeout: a unary call that its client gave no deadline, stuck
// on a peer that never answers, ends at -grpc.call-timeout with
// DEADLINE_EXCEEDED naming the flag; a client's earlier deadline is its
// own error.
func TestCallTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.CallTimeout = 300 * time.Millisecond
	addr, _ := serve(t, cfg)
	conn := dial(t, addr)
	call := func(ctx context.Context) error {
		return conn.Invoke(ctx, "/test.Stuck/Wait", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	}

	// No deadline at all: only the bound can end the call; a failure
	// would hang until the test's own timeout.
	err := call(context.Background())
	const want = "the server did not answer within -grpc.call-timeout=300ms: context deadline exceeded"
	if st := status.Convert(err); st.Code() != codes.DeadlineExceeded || st.Message() != want {
		t.Fatalf("stuck call without a deadline: %v, want DEADLINE_EXCEEDED %q", err, want)
	}

	// The client's own deadline, earlier than the bound, is the client's.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := call(ctx); status.Code(err) != codes.DeadlineExceeded || strings.Contains(status.Convert(err).Message(), "-grpc.call-timeout") {
		t.Fatalf("stuck call with a 50ms deadline: %v, want the client's own DEADLINE_EXCEEDED", err)
	}
}
