package coordinator

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// TestPausedAggregatorIsFenced: an aggregator whose connections to etcd and
// Redis freeze (what a SIGSTOPped process looks like from outside) loses its
// lease; its partitions move; it stops answering for them at once, though
// its gRPC server still runs; when its connections come back, every write it
// attempts is refused by the new owner's fence; it comes back as a new
// incarnation; and every count is exact.
func TestPausedAggregatorIsFenced(t *testing.T) {
	const parts = 8
	w := newWorld(t, parts)
	etcdProxy, etcdURL := w.etcdProxy()
	redisProxy := testserver.NewProxy(t, w.redis)
	a := w.startAggregator("a", aggOpts{etcd: etcdURL, redis: redisProxy.Addr()})
	w.startAggregator("b", aggOpts{})
	co := w.startCoordinator("coord-1", "", ttl)
	w.waitOwners(true, "a", "b")
	r := w.startRouter()
	v0 := w.waitSettled()
	r.waitSent(1000)
	var mine []int
	for p, o := range v0.Owners {
		if o.Member == "a" {
			mine = append(mine, p)
		}
	}

	etcdProxy.Freeze()
	redisProxy.Freeze()
	w.waitOwners(true, "b")
	w.waitSettled()
	// b serves a's partitions: a, still running, must not answer for them.
	for _, p := range mine {
		_, err := a.client.Count(ctxT(t), &clickaggv1.CountRequest{Partition: int32(p), AdId: "ad-0", FromMinute: r.base, ToMinute: r.base + 1})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("paused a answers for partition %d after b took it: %v", p, err)
		}
	}
	if st := a.a.Stats(); st.FencedWrites != 0 {
		t.Fatalf("a's writes were fenced before it could make any: %+v", st)
	}
	r.waitSent(1000)

	etcdProxy.Thaw()
	redisProxy.Thaw()
	testserver.Eventually(t, wait, func() error {
		if st := a.a.Stats(); st.FencedWrites == 0 || st.LeaseLosses != 1 {
			return fmt.Errorf("a's stats %+v: want fenced writes and one lease loss", st)
		}
		return nil
	})
	w.waitOwners(true, "a", "b")
	w.checkExact(r)
	if st := co.c.Stats(); st.UnplannedHandoffs < int64(len(mine)) {
		t.Errorf("coordinator stats %+v: a's %d partitions moved unplanned", st, len(mine))
	}
	t.Logf("a after waking: %+v", a.a.Stats())
}

// TestDeposedCoordinatorIsRefused: a leader cut off from etcd whose lease
// is gone still believes it leads, and a new leader is elected. Asked to
// move a partition, the old leader finds out before touching any
// aggregator: the change is refused, counted, and ends its term; no
// partition was released. The new leader takes requests (forwarded by the
// old one), and every count is exact.
func TestDeposedCoordinatorIsRefused(t *testing.T) {
	const parts = 8
	w := newWorld(t, parts)
	a := w.startAggregator("a", aggOpts{})
	w.startAggregator("b", aggOpts{})
	etcdProxy, etcdURL := w.etcdProxy()
	// A session long enough that, cut off, it notices its loss only well
	// after the test has sent it a request.
	c1 := w.startCoordinator("coord-1", etcdURL, 10*time.Second)
	w.waitLeader("coord-1")
	c2 := w.startCoordinator("coord-2", "", ttl)
	w.waitOwners(true, "a", "b")
	r := w.startRouter()
	v0 := w.waitSettled()
	r.waitSent(1000)
	p := -1
	for q, o := range v0.Owners {
		if o.Member == "a" {
			p = q
			break
		}
	}

	lease := w.leaderLease()
	etcdProxy.Freeze()
	if _, err := w.etcd().Revoke(ctxT(t), lease); err != nil {
		t.Fatal(err)
	}
	w.waitLeader("coord-2")
	moveErr := make(chan error, 1)
	go func() {
		_, err := c1.client.MovePartition(ctxT(t), &clickaggv1.MovePartitionRequest{Partition: int32(p), ToMember: "b"})
		moveErr <- err
	}()
	// c1 is carrying the move out: its leadership check waits for etcd.
	testserver.Eventually(t, wait, func() error {
		if st := c1.c.Stats(); st.Executing != 1 {
			return fmt.Errorf("coord-1 stats %+v: not executing the move yet", st)
		}
		return nil
	})
	etcdProxy.Thaw()
	if err := <-moveErr; status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "not the leader") {
		t.Fatalf("deposed leader's move = %v, want UNAVAILABLE: not the leader", err)
	}
	if st := c1.c.Stats(); st.RefusedWrites != 1 || st.PlannedHandoffs+st.UnplannedHandoffs+st.FailedReleases != 0 {
		t.Fatalf("deposed leader's stats %+v, want one refused change and nothing else", st)
	}
	if v := w.assignment(); v.Version != v0.Version {
		t.Fatalf("assignment version %d after the refused change, want %d", v.Version, v0.Version)
	}
	st, err := a.client.PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.GetPartitions() {
		if int(s.GetPartition()) == p && (s.GetState() != "serving" || s.GetEpoch() != v0.Owners[p].Epoch) {
			t.Fatalf("partition %d on a after the refused move: %v", p, s)
		}
	}
	r.waitSent(1000)

	// coord-2 leads: the same move through coord-1 (now a follower, which
	// forwards it) is carried out.
	testserver.Eventually(t, wait, func() error {
		if c1.c.term.Load() != nil {
			return errors.New("coord-1 still in its old term")
		}
		return nil
	})
	moved, err := c1.client.MovePartition(ctxT(t), &clickaggv1.MovePartitionRequest{Partition: int32(p), ToMember: "b"})
	if err != nil {
		t.Fatal(err)
	}
	wantMoves(t, "move through the new leader", moved.GetMoves(), moved.GetDryRun(), false, []Move{{p, "a", "b"}})
	if st := c2.c.Stats(); st.PlannedHandoffs != 1 || st.RefusedWrites != 0 {
		t.Errorf("new leader's stats %+v, want the one planned handoff", st)
	}
	r.waitSent(1000)
	w.checkExact(r)
}
