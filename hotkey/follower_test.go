package hotkey_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/localserver"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/router"
	"github.com/clickagg/clickagg/testserver"
)

// TestFollowerFollowsAndAcks: a follower loads the table before it is
// ready, follows every write, and acknowledges each version on the
// router's lease.
func TestFollowerFollowsAndAcks(t *testing.T) {
	e := newEnv(t, 8, time.Now())
	ctx := ctxT(t)
	fence, _ := leader(t, e.etcd, "c")
	rev, err := e.store.Write(ctx, fence, 0, table(t, 1, hotkey.Interval{AdID: "a", Partitions: []int{1, 2}, FromMinute: 10}))
	if err != nil {
		t.Fatal(err)
	}

	unstarted := hotkey.NewFollower(e.cfg, e.store, nil, nil, e.clk.Now)
	if _, err := unstarted.Table(); !errors.Is(err, hotkey.ErrStale) {
		t.Fatalf("Table before Run: %v, want ErrStale", err)
	}

	reg, err := e.cl.Register(ctx, cluster.Member{ID: "r1", Role: cluster.RoleRouter}, leaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close(context.Background()) })
	lease := reg.Member().Incarnation
	f := e.follower(&hotkey.Acker{ID: "r1", Lease: clientv3.LeaseID(lease)}, "r1")
	select {
	case <-f.Ready():
	case <-time.After(wait):
		t.Fatal("follower not ready")
	}
	wantAck := func(version uint64) {
		t.Helper()
		testserver.Eventually(t, wait, func() error {
			acks, err := e.store.Acks(ctx)
			if err != nil {
				return err
			}
			if a := acks["r1"]; a != (hotkey.Ack{Version: version, Lease: lease}) {
				return fmt.Errorf("ack of r1 is %+v, want version %d on lease %x", a, version, lease)
			}
			return nil
		})
	}
	e.fresh(1, f)
	wantAck(1)

	for v := uint64(2); v <= 4; v++ {
		next := table(t, v, hotkey.Interval{AdID: "a", Partitions: []int{1, 2}, FromMinute: 10, ToMinute: 10 + int64(v)})
		if rev, err = e.store.Write(ctx, fence, rev, next); err != nil {
			t.Fatal(err)
		}
		e.fresh(v, f)
		tab, _ := f.Table()
		if !slices.EqualFunc(tab.Splits(), next.Splits(), func(a, b hotkey.Interval) bool { return a.ToMinute == b.ToMinute }) {
			t.Fatalf("follower holds %+v, want %+v", tab.Splits(), next.Splits())
		}
		wantAck(v)
	}

	// The router registered again, its lease lost: the version it holds is
	// acknowledged again on the new lease, with no new version to prompt it.
	again, err := e.cl.Register(ctx, cluster.Member{ID: "r1", Role: cluster.RoleRouter}, leaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Close(context.Background()) })
	lease = again.Member().Incarnation
	f.SetAckLease(clientv3.LeaseID(lease))
	wantAck(4)

	// A copy not confirmed for longer than MaxStaleness is refused: the
	// clock jumps past it, and the next confirmation makes it fresh again.
	e.clk.Advance(e.cfg.MaxStaleness + time.Hour)
	e.fresh(4, f)
}

// TestRouterRefusesWithStaleTable cuts a router off etcd: once its copy of
// the split table is older than MaxStaleness, Ingest fails with
// UNAVAILABLE and appends nothing; when etcd is back, it routes again, by
// the table.
func TestRouterRefusesWithStaleTable(t *testing.T) {
	dir := t.TempDir()
	cport, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pport, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	startEtcd := func() *localserver.Etcd {
		srv, err := localserver.StartEtcd(localserver.EtcdConfig{Dir: dir, ClientPort: cport, PeerPort: pport})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	srv := startEtcd()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.Close()
		}
	})
	cli := testserver.NewEtcdClient(t, srv.Endpoint)

	start := time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC)
	e := newEnvOn(t, cli, 8, start)
	ctx := ctxT(t)

	const ad = "ad-hot"
	split := []int{2, 5, 7}
	fence, _ := leader(t, cli, "c")
	if _, err := e.store.Write(ctx, fence, 0, table(t, 1, hotkey.Interval{AdID: ad, Partitions: split, FromMinute: start.Unix() / 60})); err != nil {
		t.Fatal(err)
	}
	rn := e.startRouter("r1")
	rn.stopTick()
	c := serveIngest(t, rn.r)
	e.fresh(1, rn.fol)

	n := 0
	send := func() (*clickaggv1.IngestResponse, error) {
		n++
		return c.Ingest(ctx, &clickaggv1.IngestRequest{Events: []*clickaggv1.ClickEvent{click(fmt.Sprintf("ev-%d", n), ad, e.clk.Now(), "US")}})
	}
	wantIn := func(id string) int { return split[xxhash.Sum64String(id)%uint64(len(split))] }
	checkLogs := func(want int) {
		t.Helper()
		logs := e.readLogs()
		if len(logs) != want {
			t.Fatalf("%d events in the logs, want %d", len(logs), want)
		}
		for _, l := range logs {
			if p := wantIn(l.ev.GetEventId()); l.partition != p {
				t.Fatalf("event %s in partition %d, want %d", l.ev.GetEventId(), l.partition, p)
			}
		}
	}
	if resp, err := send(); err != nil || resp.GetAccepted() != 1 {
		t.Fatalf("Ingest with a fresh table: %v, %v", resp, err)
	}
	checkLogs(1)

	srv.Close()
	stopped = true
	e.clk.Advance(e.cfg.MaxStaleness + time.Millisecond)
	_, err = send()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Ingest with a stale table: %v, want UNAVAILABLE", err)
	}
	_, _, err = rn.r.Ingest(ctx, []*clickaggv1.ClickEvent{click("ev-direct", ad, e.clk.Now(), "US")})
	if !errors.Is(err, router.ErrSplitsUnavailable) || !errors.Is(err, hotkey.ErrStale) {
		t.Fatalf("Ingest with a stale table: %v, want ErrSplitsUnavailable and ErrStale", err)
	}
	checkLogs(1)

	srv = startEtcd()
	stopped = false
	testserver.Eventually(t, wait, func() error {
		resp, err := send()
		if err != nil || resp.GetAccepted() != 1 {
			return fmt.Errorf("Ingest after etcd came back: %v, %v", resp, err)
		}
		return nil
	})
	checkLogs(1 + 1) // the refused attempts appended nothing
}

// serveIngest serves r's IngestService on a loopback port.
func serveIngest(t *testing.T, r *router.Router) clickaggv1.IngestServiceClient {
	t.Helper()
	conn := testserver.ServeGRPC(t, testserver.Listen(t), func(gs *grpc.Server) {
		clickaggv1.RegisterIngestServiceServer(gs, router.NewServer(r))
	})
	return clickaggv1.NewIngestServiceClient(conn)
}
