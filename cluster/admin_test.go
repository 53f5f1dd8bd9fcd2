package cluster

import (
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/testserver"
)

// TestHandoffPause: a pause is never negative. (What Leadership records
// and Handoffs reads is in the contract suite, package clustertest.)
func TestHandoffPause(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if p := (Handoff{Stopped: t0, Serving: t0.Add(-time.Second)}).Pause(); p != 0 {
		t.Fatalf("pause with serving before stopped = %v, want 0", p)
	}
}

// TestDecodeCandidateBareID: election keys of earlier versions hold the
// bare ID. (LeaderCandidate is in the contract suite.)
func TestDecodeCandidateBareID(t *testing.T) {
	if got := decodeCandidate([]byte("old-style")); got != (Candidate{ID: "old-style"}) {
		t.Fatalf("bare id decodes as %+v", got)
	}
}

func TestRegistrationValidUntilAndLeaving(t *testing.T) {
	c := NewClient(testserver.EtcdClient(t), "/t")
	ctx := ctxT(t)
	before := time.Now()
	r := register(t, c, "a", RoleAggregator, "127.0.0.1:1")
	if v := r.ValidUntil(); v.Before(before.Add(ttl)) || v.After(time.Now().Add(ttl)) {
		t.Fatalf("ValidUntil right after Register = %v, want about now+%v", v, ttl)
	}
	// Refreshes move it forward.
	first := r.ValidUntil()
	testserver.Eventually(t, 10*time.Second, func() error {
		if !r.ValidUntil().After(first) {
			return errors.New("not refreshed yet")
		}
		return nil
	})

	if err := r.SetLeaving(ctx); err != nil {
		t.Fatal(err)
	}
	ms, err := c.Members(ctx, RoleAggregator)
	if err != nil || len(ms) != 1 || !ms[0].Leaving || ms[0].Incarnation != r.Member().Incarnation || !r.Member().Leaving {
		t.Fatalf("members after SetLeaving = %+v, %v", ms, err)
	}
	// The key keeps its lease: revoking it removes the member.
	if _, err := c.cli.Revoke(ctx, clientv3.LeaseID(r.Member().Incarnation)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after revoke")
	}
	if !r.ValidUntil().IsZero() {
		t.Fatalf("ValidUntil after the lease was lost = %v, want zero", r.ValidUntil())
	}
	if err := r.SetLeaving(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("SetLeaving after the lease was lost = %v, want ErrLeaseLost", err)
	}
	ms, err = c.Members(ctx, RoleAggregator)
	if err != nil || len(ms) != 0 {
		t.Fatalf("members = %v, %v; want none", ms, err)
	}
}
