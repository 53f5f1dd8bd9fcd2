package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/tlsconf"
)

// TestPipelineExactOverMutualTLS runs a small cluster whose members and
// clients all talk over mutual TLS (-tls.client-auth=require): counts
// and top-N are exact, and a client that trusts the CA but has no
// certificate of its own is refused before anything it sends is counted;
// queryd's HTTP API answers the same over HTTPS to a client without a
// certificate; clickagg ship with a certificate reaches the routers.
func TestPipelineExactOverMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of 100k events over mutual TLS")
	}
	spec := clusterSpec{
		partitions: 16, coordinators: 1, routers: 2, aggregators: 2, tls: true,
		aggregatorFlags: []string{"-aggregator.snapshot-interval=2s"},
		routerFlags:     []string{"-router.idle-watermark-lag=1h"},
	}
	c := newTestCluster(t, spec)
	coordClient := c.coordinatorClient()
	waitCaughtUp(t, coordClient, spec.partitions, 2*time.Minute)

	start := time.Now().Truncate(time.Minute).Add(-12 * time.Minute)
	const refusedAd = "ad-refused"
	// A client without a certificate: the handshake fails (under TLS 1.3
	// the server's alert comes after the client's Finished, so gRPC
	// reports it on the call), and the call never reaches the router.
	anon := clickaggv1.NewIngestServiceClient(dialWith(t, c.routers[0].addr, tlsCreds(t, tlsconf.Config{CAFile: filepath.Join(c.tlsDir(""), "ca.pem")})))
	var events []*clickaggv1.ClickEvent
	for i := range 100 {
		events = append(events, &clickaggv1.ClickEvent{
			EventId: "refused-" + strconv.Itoa(i), AdId: refusedAd,
			ClickTime: timestamppb.New(start.Add(time.Minute + time.Duration(i)*time.Second)),
			UserId:    "user-1", Ip: "10.0.0.1", Country: "US",
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := anon.Ingest(ctx, &clickaggv1.IngestRequest{Events: events})
	cancel()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("ingest without a client certificate: %v, want Unavailable", err)
	}
	t.Logf("refused: %v", err)

	w := newWorkload(20261207, 100_000, 10_000, 10, start, 0.05, 0.02, 0, 500)
	t.Logf("workload: %d unique clicks, %d duplicates, %d late, %d requests", len(w.unique), w.dups, w.late, len(w.batches))
	res := ingest(t, w, c.ingestClients(), nil)
	if n := len(res.rejectedBy); n != 0 {
		t.Errorf("%d events rejected, want none", n)
	}

	waitCaughtUp(t, coordClient, spec.partitions, 2*time.Minute)
	qc := c.queryClient()
	tr := &truth{clicks: w.unique}
	checkEveryAdMinute(t, qc, tr)
	checkTopN(t, qc, tr, w)
	// queryd's HTTP API answers over HTTPS to a client without a
	// certificate, under -tls.client-auth=require.
	checkHTTP(t, c, qc, tr, w)
	resp, err := qc.GetAggregatedCount(context.Background(), &clickaggv1.GetAggregatedCountRequest{
		AdId: refusedAd, From: minuteTS(start.Unix() / 60), To: minuteTS(start.Unix()/60 + 12),
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%s counted %d clicks sent without a certificate, want 0", refusedAd, resp.Count)
	}

	// clickagg ship with a certificate of its own reaches the routers.
	const shipped, shippedAd = 1000, "ad-shipped"
	var log strings.Builder
	for i := range shipped {
		ts := start.Add(2*time.Minute + time.Duration(i)*time.Millisecond)
		fmt.Fprintf(&log, "%s,%d,user-%d,10.0.0.2,US\n", shippedAd, ts.UnixMilli(), i)
	}
	path := filepath.Join(c.dir, "clicks.log")
	if err := os.WriteFile(path, []byte(log.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, c.dir, "shipper-1", append([]string{"ship", "-ship.files=" + path, "-ship.format=csv",
		"-ship.routers=" + c.routers[0].addr + "," + c.routers[1].addr,
		"-tls.ca-file=" + filepath.Join(c.tlsDir(""), "ca.pem")}, c.tlsFlags("shipper-1")...)...)
	testserver.Eventually(t, time.Minute, func() error {
		resp, err := qc.GetAggregatedCount(context.Background(), &clickaggv1.GetAggregatedCountRequest{
			AdId: shippedAd, From: minuteTS(start.Unix() / 60), To: minuteTS(start.Unix()/60 + 12),
		})
		if err != nil {
			return err
		}
		if resp.Count != shipped {
			return fmt.Errorf("%s counted %d, want %d", shippedAd, resp.Count, shipped)
		}
		return nil
	})
}
