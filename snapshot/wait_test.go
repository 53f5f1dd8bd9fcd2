package snapshot_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/clickagg/clickagg/durable"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/testserver"
)

// TestWritesWaitForReplica: with a Writer that waits for one replica,
// every fenced write succeeds while the replica follows and fails with
// ErrNotReplicated while it does not, and a fence it failed to
// acknowledge is no ErrStaleEpoch (the caller retries).
func TestWritesWaitForReplica(t *testing.T) {
	ctx := context.Background()
	rdb, r := testserver.RedisClientWithReplica(t)
	// A generous wait while the replica is up (the machine may be busy),
	// a short one while it is frozen and cannot answer anyway.
	s := snapshot.New(rdb, prefix, snapshot.WithWriter(durable.New(rdb, durable.Options{Replicas: 1, Timeout: 2 * time.Second})))
	writes := map[string]func(epoch uint64) error{
		"claim":    func(e uint64) error { return s.Claim(ctx, 3, e) },
		"save":     func(e uint64) error { return s.Save(ctx, 3, snapshot.Write{Epoch: e, Meta: []byte("m")}) },
		"archived": func(e uint64) error { return s.SaveArchived(ctx, 3, e, "1-0") },
		"history":  func(e uint64) error { return s.SaveHistory(ctx, 3, e, 0, 10) },
	}
	for name, write := range writes {
		if err := write(1); err != nil {
			t.Fatalf("%s with the replica up: %v", name, err)
		}
	}
	if err := r.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Signal(syscall.SIGCONT) }()
	s = snapshot.New(rdb, prefix, snapshot.WithWriter(durable.New(rdb, durable.Options{Replicas: 1, Timeout: 200 * time.Millisecond})))
	for name, write := range writes {
		err := write(2)
		if !errors.Is(err, durable.ErrNotReplicated) || errors.Is(err, snapshot.ErrStaleEpoch) {
			t.Errorf("%s with the replica frozen: %v, want ErrNotReplicated", name, err)
		}
	}
}
