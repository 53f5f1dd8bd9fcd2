package router

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// TestNoAckWhileRedisStopped is the normal counterpart of the
// ack-before-redis negative control (ackdurable_break_test.go, -tags
// chaosbreak): while Redis is stopped a request is not acknowledged.
func TestNoAckWhileRedisStopped(t *testing.T) {
	checkAckWhileRedisStopped(t, false)
}

// checkAckWhileRedisStopped sends a click while Redis is SIGSTOP'd, then
// kills Redis and restarts it from its AOF, as a crash of its machine
// would. The click must be acknowledged when acked says so and refused
// otherwise; and then it is in the log exactly if acknowledged, unless
// the router acknowledges before Redis has it (acked): then it is lost.
func checkAckWhileRedisStopped(t *testing.T, acked bool) {
	srv := testserver.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: srv.Password})
	t.Cleanup(func() { _ = rdb.Close() })
	pid := redisPID(t, rdb)
	cfg := testConfig(t)
	cfg.AppendTimeout = 300 * time.Millisecond
	parts := partitioner(t, 4)
	r := New(cfg, testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	ctx := context.Background()
	ingest := func(id string) error {
		_, rej, err := r.Ingest(ctx, []*clickaggv1.ClickEvent{click(id, "ad-1", t0)})
		if err == nil && len(rej) > 0 {
			return fmt.Errorf("rejected: %v", rej)
		}
		return err
	}
	inLog := func() (map[string]bool, error) {
		entries, err := readStream(ctx, rdb, parts.Partition("ad-1"))
		if err != nil {
			return nil, err
		}
		ids := map[string]bool{}
		for _, e := range entries {
			for _, ev := range e.Events {
				ids[ev.EventId] = true
			}
		}
		return ids, nil
	}
	if err := ingest("before"); err != nil {
		t.Fatalf("ingest while Redis runs: %v", err)
	}
	// With the append in the background, the acknowledgement may come
	// first; the test needs the click in the log before Redis stops.
	testserver.Eventually(t, 20*time.Second, func() error {
		ids, err := inLog()
		if err == nil && !ids["before"] {
			err = fmt.Errorf("click %q not in the log yet", "before")
		}
		return err
	})

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	err := ingest("while-stopped")
	srv.Kill() // a stopped process dies of SIGKILL too
	if acked != (err == nil) {
		t.Fatalf("ingest while Redis is stopped: %v; want acknowledged %v", err, acked)
	}
	// The click's append has failed (the router's statistics say so)
	// before Redis is back: otherwise a background append could still
	// deliver it to the restarted server.
	testserver.Eventually(t, 20*time.Second, func() error {
		if n := r.c.appendFailures.Load(); n != 1 {
			return fmt.Errorf("%d failed appends, want 1", n)
		}
		return nil
	})
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	var ids map[string]bool
	testserver.Eventually(t, 20*time.Second, func() error {
		var err error
		ids, err = inLog()
		return err
	})
	if !ids["before"] {
		t.Errorf("acknowledged click %q is not in the log after the restart", "before")
	}
	if ids["while-stopped"] {
		t.Errorf("click %q sent while Redis was stopped is in the log; it cannot be", "while-stopped")
	}
}
