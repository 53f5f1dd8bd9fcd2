package router

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// TestIngestFailsWithinAppendTimeout takes Redis away under a router served
// over gRPC, killed (connections refused) and stopped (connections hang, as
// on a stalled disk), and sends concurrent requests through one append
// slot: each fails with UNAVAILABLE within -router.append-timeout. Before,
// a refused Redis failed them with DEADLINE_EXCEEDED and a stopped one held
// each for the client's own timeouts (5 s), the queued ones for longer.
// Once Redis is back every acknowledged event is in the log.
func TestIngestFailsWithinAppendTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	// The bound is the feature; the margin is for a busy machine. The old
	// code took 5 s and more when Redis was stopped.
	const bound = timeout + 1700*time.Millisecond
	for _, tc := range []string{"killed", "stopped"} {
		t.Run(tc, func(t *testing.T) {
			srv := testserver.Redis(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: srv.Password, PoolSize: 64})
			t.Cleanup(func() { _ = rdb.Close() })
			pid := redisPID(t, rdb)
			cfg := testConfig(t)
			cfg.AppendTimeout = timeout
			cfg.AppendConcurrency = 1
			parts := partitioner(t, 4)
			r := New(cfg, testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))
			c := startGRPC(t, r)
			ctx := grpcCtx(t)
			if _, err := c.Ingest(ctx, &clickaggv1.IngestRequest{Events: []*clickaggv1.ClickEvent{click("acked-0", "ad-0", t0)}}); err != nil {
				t.Fatalf("Ingest before Redis went away: %v", err)
			}

			switch tc {
			case "killed":
				srv.Kill()
			case "stopped":
				if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				resumed := false
				resume := func() {
					if !resumed {
						resumed = true
						_ = syscall.Kill(pid, syscall.SIGCONT)
					}
				}
				// Before testserver's Stop, which a stopped server ignores.
				t.Cleanup(resume)
				defer resume()
			}

			const clients, requests = 4, 3
			var wg sync.WaitGroup
			errs := make(chan error, clients*requests)
			for i := range clients {
				wg.Go(func() {
					for j := range requests {
						id := fmt.Sprintf("down-%d-%d", i, j)
						start := time.Now()
						_, err := c.Ingest(ctx, &clickaggv1.IngestRequest{Events: []*clickaggv1.ClickEvent{click(id, "ad-"+strconv.Itoa(i), t0)}})
						took := time.Since(start)
						st := status.Convert(err)
						switch {
						case st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "-router.append-timeout="+timeout.String()):
							errs <- fmt.Errorf("request %s: %v %q after %v, want UNAVAILABLE naming -router.append-timeout", id, st.Code(), st.Message(), took)
						case took > bound:
							errs <- fmt.Errorf("request %s failed after %v, want within %v (-router.append-timeout=%v)", id, took, bound, timeout)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if tc == "killed" {
				return
			}

			// Redis answers again: the router acknowledges again, and what it
			// acknowledged is in the log.
			_ = syscall.Kill(pid, syscall.SIGCONT)
			testserver.Eventually(t, 20*time.Second, func() error {
				_, err := c.Ingest(ctx, &clickaggv1.IngestRequest{Events: []*clickaggv1.ClickEvent{click("acked-1", "ad-1", t0)}})
				return err
			})
			for id, ad := range map[string]string{"acked-0": "ad-0", "acked-1": "ad-1"} {
				entries, err := readStream(ctx, rdb, parts.Partition(ad))
				if err != nil {
					t.Fatal(err)
				}
				found := false
				for _, e := range entries {
					for _, ev := range e.Events {
						found = found || ev.EventId == id
					}
				}
				if !found {
					t.Errorf("acknowledged event %s is not in the log", id)
				}
			}
		})
	}
}

// redisPID is the process id of the redis-server rdb talks to.
func redisPID(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
	}
	t.Fatal("INFO server has no process_id")
	return 0
}
