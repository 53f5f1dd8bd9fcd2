package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// TestCallerRateWired: a router started with -router.caller-rate refuses
// a caller over it (router.TestGRPCCallerRate checks the limit itself).
// At 0.001 clicks/s a spent burst takes 1000 s to come back: the test
// cannot be timed out of its outcome.
func TestCallerRateWired(t *testing.T) {
	rs := testserver.Redis(t)
	etcd := testserver.Etcd(t)
	srv := startServer(t, "-target=router", "-http.addr=", "-id=rate-1", "-cluster.partitions=4",
		"-etcd.endpoints="+etcd.Endpoint, "-redis.addr="+rs.Addr, "-redis.password-file="+rs.PasswordFile,
		"-router.max-events-per-request=5", "-router.caller-rate=0.001")
	cc, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Ready first: a request refused by the readiness gate is not charged,
	// but one the router fails after the limiter would be.
	testserver.Eventually(t, time.Minute, func() error {
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.Status != healthpb.HealthCheckResponse_SERVING {
			err = fmt.Errorf("health %v", resp.Status)
		}
		return err
	})
	ingest := func(prefix string, n int) (*clickaggv1.IngestResponse, error) {
		var events []*clickaggv1.ClickEvent
		for i := range n {
			events = append(events, &clickaggv1.ClickEvent{EventId: fmt.Sprintf("%s-%d", prefix, i), AdId: "ad-1",
				ClickTime: timestamppb.Now(), UserId: "u", Ip: "10.0.0.1", Country: "US"})
		}
		return clickaggv1.NewIngestServiceClient(cc).Ingest(ctx, &clickaggv1.IngestRequest{Events: events})
	}
	if resp, err := ingest("first", 5); err != nil || resp.Accepted != 5 {
		t.Fatalf("the default burst (-router.max-events-per-request=5): %v, %v; want 5 accepted", resp, err)
	}
	_, err = ingest("over", 1)
	const want = "caller 127.0.0.1 sends more than -router.caller-rate=0.001 clicks/s (bursts of up to -router.caller-burst=5): this request of 1 click is refused, none of it counted; retry in "
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.HasPrefix(st.Message(), want) {
		t.Fatalf("over the rate: %v, want ResourceExhausted %q...", err, want)
	}
}
