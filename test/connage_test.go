package test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/testserver"
)

// TestShipAcrossMaxConnectionAge runs a cluster whose every gRPC server
// has clients reconnect after a second (-grpc.max-connection-age=1s,
// grace 500ms), so that the shipper's, queryd's and the coordinator's
// connections turn over tens of times while clickagg ship sends 30,000
// lines to the two routers. A stream open on a router ends with
// UNAVAILABLE past the age and grace (the flags reach the server), and
// every (ad, minute) count still equals the valid lines written: the
// reconnects lose and double nothing.
func TestShipAcrossMaxConnectionAge(t *testing.T) {
	age := []string{"-grpc.max-connection-age=1s", "-grpc.max-connection-age-grace=500ms"}
	c := newTestCluster(t, clusterSpec{
		partitions: 8, coordinators: 1, routers: 2, aggregators: 1,
		commonFlags: age,
		// Click times run from 10 minutes ago to 1 minute ago.
		routerFlags: []string{"-router.idle-watermark-lag=1h"},
	})
	coordClient := c.coordinatorClient()
	waitCaughtUp(t, coordClient, 8, 2*time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	watch, err := healthpb.NewHealthClient(dial(t, c.routers[0].addr)).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err = watch.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("health Watch on a router with -grpc.max-connection-age=1s ended with %v, want UNAVAILABLE", err)
	}

	w, path, ckpt := newShipLog(t, c)
	ship := startShip(t, c, path, ckpt)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 17))
	const total, chunk = 30_000, 500
	for range total / chunk {
		w.writeLines(chunk, rng)
		time.Sleep(150 * time.Millisecond) // about 10s of writing
	}
	w.close()
	testserver.Eventually(t, 2*time.Minute, func() error { return shipCaughtUp(ckpt, path) })
	waitCaughtUp(t, coordClient, 8, 2*time.Minute)
	checkEveryAdMinute(t, c.queryClient(), &truth{clicks: w.clicks})
	resumed, retried := 0, 0
	shipperReports(t, ship.log, &resumed, &retried)
	t.Logf("%d valid clicks shipped; the shipper retried %d requests", len(w.clicks), retried)
}
