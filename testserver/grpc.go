package testserver

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Listen returns a TCP listener on a random loopback port. Callers that
// need the address before building the service (a role that advertises
// it) listen first and serve with ServeGRPC.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// ServeGRPC serves the services register adds on lis and returns an
// insecure client connection to it. Both end in t.Cleanup; the server is
// stopped and its Serve returned before the next cleanup (registered
// earlier) runs, so a test's cleanups never race a live handler.
func ServeGRPC(t testing.TB, lis net.Listener, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	gs := grpc.NewServer()
	register(gs)
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		gs.Stop()
		<-served
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		gs.Stop()
		<-served
	})
	return conn
}
