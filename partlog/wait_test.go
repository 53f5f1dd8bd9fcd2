package partlog_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clickagg/clickagg/durable"
	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/testserver"
)

// TestAppendWaitsForReplica: with a Writer that waits for one replica,
// an append is acknowledged while the replica follows, and refused,
// naming the setting, while it does not.
func TestAppendWaitsForReplica(t *testing.T) {
	ctx := context.Background()
	rdb, r := testserver.RedisClientWithReplica(t)
	// A generous wait while the replica is up (the machine may be busy),
	// a short one while it is frozen and cannot answer anyway.
	l := partlog.New(rdb, prefix, partlog.WithWriter(durable.New(rdb, durable.Options{Replicas: 1, Timeout: 2 * time.Second})))
	items := []partlog.Append{{Partition: 0, Data: []byte("a")}, {Partition: 1, Data: []byte("b")}}
	if ids, err := l.Append(ctx, items); err != nil || len(ids) != 2 {
		t.Fatalf("Append with the replica up: %v, %v", ids, err)
	}
	l = partlog.New(rdb, prefix, partlog.WithWriter(durable.New(rdb, durable.Options{Replicas: 1, Timeout: 200 * time.Millisecond})))
	if err := r.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Signal(syscall.SIGCONT) }()
	ids, err := l.Append(ctx, items)
	if !errors.Is(err, durable.ErrNotReplicated) || !strings.Contains(err.Error(), "append 2 entries: write reached 0 of 1 replicas within 200ms (-redis.wait-replicas") {
		t.Fatalf("Append with the replica frozen: %v, %v; want ErrNotReplicated naming -redis.wait-replicas", ids, err)
	}
}
