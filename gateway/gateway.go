package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// Prefix is the path under which the handlers answer.
const Prefix = "/v1/cluster/"

// newMux returns a gateway mux whose JSON spells out zero values, as
// queryd's does: "lag": "0" and "unavailable": [] are facts, not gaps.
func newMux(opts ...runtime.ServeMuxOption) *runtime.ServeMux {
	return runtime.NewServeMux(append([]runtime.ServeMuxOption{runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	})}, opts...)...)
}

// noHeaders passes no request header on as gRPC metadata: a forwarded
// call is made under the process's own identity (its certificate), and
// the browser's bearer token stays with the process it was sent to. The
// gateway passes Authorization on whatever the matcher says, so New also
// drops that header.
func noHeaders(string) (string, bool) { return "", false }

// NewLocal serves the routes by calling srv, the process's own
// coordinator, in process.
func NewLocal(ctx context.Context, srv clickaggv1.CoordinatorServiceServer) (http.Handler, error) {
	mux := newMux()
	if err := clickaggv1.RegisterCoordinatorServiceHandlerServer(ctx, mux, srv); err != nil {
		return nil, fmt.Errorf("register coordinator HTTP handlers: %w", err)
	}
	return mux, nil
}

// New serves the routes by calling the coordinators through cc, usually
// a Forwarder. The caller's headers are not passed on (noHeaders): check
// its permission before (cli wraps the handler in authz.HTTP); with
// authorization on, the coordinator checks the process's certificate,
// which needs the query permission too.
func New(ctx context.Context, cc grpc.ClientConnInterface) (http.Handler, error) {
	mux := newMux(runtime.WithIncomingHeaderMatcher(noHeaders))
	if err := clickaggv1.RegisterCoordinatorServiceHandlerClient(ctx, mux, clickaggv1.NewCoordinatorServiceClient(cc)); err != nil {
		return nil, fmt.Errorf("register coordinator HTTP handlers: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.Clone(r.Context())
		r.Header.Del("Authorization")
		mux.ServeHTTP(w, r)
	}), nil
}

// Members lists the live members of a role; *cluster.Client is one.
type Members interface {
	Members(ctx context.Context, role string) ([]cluster.Member, error)
}

// Dial returns the connection to the gRPC server at addr; the process's
// dialer keeps one per address, with its TLS credentials.
type Dial func(addr string) (grpc.ClientConnInterface, error)

// Forwarder is a grpc.ClientConnInterface that sends each unary call to
// a live coordinator: the one that answered last while it stays
// registered, else the registered ones in ID order, moving on when a
// coordinator cannot be reached (UNAVAILABLE) or does not answer within
// AttemptTimeout. Other errors are the coordinator's answer and are
// returned as they are.
type Forwarder struct {
	members Members
	dial    Dial

	mu   sync.Mutex
	last string // address of the coordinator that answered last
}

// NewForwarder returns a Forwarder finding coordinators in members and
// reaching them with dial.
func NewForwarder(members Members, dial Dial) *Forwarder {
	return &Forwarder{members: members, dial: dial}
}

// AttemptTimeout bounds each coordinator's answer to a forwarded call. A
// stopped coordinator (SIGSTOP, a frozen VM) keeps its TCP connection
// open and stays registered until its lease expires: without a bound
// every call would wait on it rather than move on to the next one. Ten
// seconds: a coordinator's slowest read, GetClusterStatus, waits
// -coordinator.status-timeout (2s) for the aggregators.
const AttemptTimeout = 10 * time.Second

// errNoCoordinator is answered when etcd lists no coordinator.
var errNoCoordinator = status.Error(codes.Unavailable, "no coordinator is registered in etcd: start a process with -target=coordinator (or all)")

// Invoke implements grpc.ClientConnInterface.
func (f *Forwarder) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	ms, err := f.members.Members(ctx, cluster.RoleCoordinator)
	if err != nil {
		return status.Errorf(codes.Unavailable, "list coordinators in etcd: %v", err)
	}
	if len(ms) == 0 {
		return errNoCoordinator
	}
	f.mu.Lock()
	last := f.last
	f.mu.Unlock()
	// The last one that answered first, then the others in ID order
	// (Members sorts them).
	addrs := make([]string, 0, len(ms))
	for _, m := range ms {
		if m.Addr == last {
			addrs = append([]string{m.Addr}, addrs...)
		} else if m.Addr != "" {
			addrs = append(addrs, m.Addr)
		}
	}
	var errs []error
	for _, addr := range addrs {
		cc, err := f.dial(addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		actx, cancel := context.WithTimeout(ctx, AttemptTimeout)
		err = cc.Invoke(actx, method, args, reply, opts...)
		cancel()
		if ctx.Err() == nil {
			// The calls are reads: asking the next coordinator again is
			// safe.
			switch status.Code(err) {
			case codes.Unavailable:
				errs = append(errs, fmt.Errorf("coordinator at %s: %w", addr, err))
				continue
			case codes.DeadlineExceeded:
				errs = append(errs, fmt.Errorf("coordinator at %s did not answer within %v", addr, AttemptTimeout))
				continue
			}
		}
		if err == nil {
			f.mu.Lock()
			f.last = addr
			f.mu.Unlock()
		}
		return err
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return status.Errorf(codes.Unavailable, "no coordinator answered: %s", strings.Join(msgs, "; "))
}

// NewStream implements grpc.ClientConnInterface; no read RPC streams.
func (f *Forwarder) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "the coordinator forwarder serves unary calls only")
}
