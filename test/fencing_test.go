package test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// logCount counts the lines of the process's log that contain s.
func (p *proc) logCount(s string) int {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), s)
}

// TestPausedAggregatorIsFenced stops an aggregator with SIGSTOP until its
// lease has expired and its partitions have moved, lets traffic go on, then
// wakes it with SIGCONT: every write it attempts for its old partitions must
// be refused, it must stop serving them, and the counts must stay exact.
func TestPausedAggregatorIsFenced(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	const partitions = 32
	c := newTestCluster(t, clusterSpec{
		partitions: partitions, coordinators: 1, routers: 2, aggregators: 3,
		aggregatorFlags: []string{"-aggregator.snapshot-interval=1s"},
		routerFlags:     []string{"-router.idle-watermark-lag=1h"},
	})
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)
	start := time.Now().Truncate(time.Minute).Add(-15 * time.Minute)
	w := newWorkload(4, 200_000, 20_000, 12, start, 0.05, 0.01, 0, 500)
	paused := c.aggregators[1]
	n := len(w.batches)
	woke := make(chan struct{})
	ingest(t, w, c.ingestClients(), func(i int, res *ingestResult) {
		switch i {
		case n / 4:
			waitSent(&res.sent, int64(i-4))
			t.Logf("SIGSTOP %s at request %d", paused.name, i)
			paused.signal(syscall.SIGSTOP)
			// Its lease (5s) expires and its partitions move while traffic
			// goes on.
			waitNotOwner(t, cc, paused.name)
		case n / 2:
			t.Logf("SIGCONT %s at request %d", paused.name, i)
			paused.signal(syscall.SIGCONT)
			close(woke)
		}
	})
	<-woke
	waitCaughtUp(t, cc, partitions, 3*time.Minute)
	// The woken aggregator attempted writes for the partitions it had and was
	// refused.
	testserver.Eventually(t, time.Minute, func() error {
		if k := paused.logCount("fenced"); k == 0 {
			return fmt.Errorf("%s logged no fenced write", paused.name)
		}
		return nil
	})
	t.Logf("%s logged %d fenced writes", paused.name, paused.logCount("fenced"))
	tr := &truth{clicks: w.unique}
	qc := c.queryClient()
	checkEveryAdMinute(t, qc, tr)
	checkTopN(t, qc, tr, w)
}

// waitNotOwner waits until member owns no partition.
func waitNotOwner(t *testing.T, cc clickaggv1.CoordinatorServiceClient, member string) {
	t.Helper()
	testserver.Eventually(t, time.Minute, func() error {
		a, err := cc.GetAssignment(context.Background(), &clickaggv1.GetAssignmentRequest{})
		if err != nil {
			return err
		}
		for _, p := range a.Partitions {
			if p.Member == member {
				return fmt.Errorf("%s still owns partition %d", member, p.Partition)
			}
		}
		return nil
	})
}

// TestPausedLeaderIsDeposed pauses the leading coordinator past its session
// TTL: another coordinator must lead within TTL + 2s, assign partitions when
// membership changes, and the old leader, once woken, must have its
// assignment writes refused.
func TestPausedLeaderIsDeposed(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	const ttl = 3 * time.Second
	c := newTestCluster(t, clusterSpec{
		partitions: 16, coordinators: 2, routers: 1, aggregators: 2,
		coordinatorFlags: []string{fmt.Sprintf("-coordinator.session-ttl=%v", ttl)},
	})
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, 16, 2*time.Minute)
	st, err := cc.GetClusterStatus(context.Background(), &clickaggv1.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var leader, other *proc
	for _, p := range c.coordinators {
		if p.name == st.Leader {
			leader = p
		} else {
			other = p
		}
	}
	if leader == nil {
		t.Fatalf("leader %q is not one of the coordinators", st.Leader)
	}
	oc := clickaggv1.NewCoordinatorServiceClient(dial(t, other.addr))
	paused := time.Now()
	leader.signal(syscall.SIGSTOP)
	t.Logf("SIGSTOP leader %s", leader.name)
	var took time.Duration
	testserver.Eventually(t, time.Minute, func() error {
		st, err := oc.GetClusterStatus(context.Background(), &clickaggv1.GetClusterStatusRequest{})
		if err != nil {
			return err
		}
		if st.Leader != other.name {
			return fmt.Errorf("leader is %q", st.Leader)
		}
		took = time.Since(paused)
		return nil
	})
	t.Logf("%s leads %v after the pause (session TTL %v)", other.name, took.Round(10*time.Millisecond), ttl)
	if took > ttl+2*time.Second {
		t.Errorf("new leader after %v, want within TTL + 2s = %v", took, ttl+2*time.Second)
	}
	// A membership change the new leader must act on, and the old leader
	// will see when it wakes.
	c.startAggregator("aggregator-3")
	waitOwners(t, oc, 3)
	leader.signal(syscall.SIGCONT)
	testserver.Eventually(t, time.Minute, func() error {
		if leader.logCount("not the leader") == 0 && leader.logCount("deposed") == 0 {
			return fmt.Errorf("%s logged no refused write", leader.name)
		}
		return nil
	})
	waitCaughtUp(t, oc, 16, time.Minute)
}
