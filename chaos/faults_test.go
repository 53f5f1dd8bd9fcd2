package chaos

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestFaults starts one cluster and injects each kind of fault in turn,
// checks that it really happened, heals it and waits until the cluster
// is healthy again. One cluster for all: starting one takes the 2 cores
// for about 15 seconds.
func TestFaults(t *testing.T) {
	c := startCluster(t)
	for _, tc := range []struct {
		fault Fault
		// check runs after Inject and before heal: the fault is in force.
		check func(t *testing.T, c *Cluster, f Fault)
	}{
		{Fault{Kind: KillOne, Targets: []string{"aggregator-1"}}, checkGone},
		{Fault{Kind: KillSeveral, Targets: []string{"router-2", "coordinator-1", "queryd-2"}}, checkGone},
		{Fault{Kind: Pause, Targets: []string{"aggregator-2"}}, checkPaused},
	} {
		t.Run(string(tc.fault.Kind), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			pids := map[string]int{}
			for _, p := range c.Processes() {
				pids[p.Name] = p.Pid()
			}
			start := time.Now()
			heal, err := c.Inject(ctx, tc.fault)
			if err != nil {
				t.Fatal(err)
			}
			injected := time.Since(start)
			tc.check(t, c, tc.fault)
			start = time.Now()
			if err := heal(ctx); err != nil {
				t.Fatal(err)
			}
			healed := time.Since(start)
			start = time.Now()
			if err := c.WaitHealthy(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: injected in %v, healed in %v, healthy %v later", tc.fault, injected.Round(time.Millisecond), healed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			if tc.fault.Kind == KillOne || tc.fault.Kind == KillSeveral {
				for _, n := range tc.fault.Targets {
					p, _ := c.process(n)
					if p.Pid() == pids[n] || p.Pid() == 0 {
						t.Errorf("%s: pid %d after the restart, %d before", n, p.Pid(), pids[n])
					}
				}
			}
		})
	}
}

// checkGone checks that no process of f's targets exists any more: its
// pid is not signalable.
func checkGone(t *testing.T, c *Cluster, f Fault) {
	t.Helper()
	for _, n := range f.Targets {
		p, err := c.process(n)
		if err != nil {
			t.Fatal(err)
		}
		if p.Running() {
			t.Errorf("%s still runs", n)
		}
		if err := healthServing(context.Background(), p.Addr); err == nil {
			t.Errorf("%s answers its health check after SIGKILL", n)
		}
	}
}

// checkPaused checks that f's targets exist but do not answer: a health
// check runs into its deadline, and the process is stopped (state T).
func checkPaused(t *testing.T, c *Cluster, f Fault) {
	t.Helper()
	for _, n := range f.Targets {
		p, err := c.process(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(p.Pid(), 0); err != nil {
			t.Errorf("%s: %v, want a process that exists", n, err)
		}
		if st, err := procState(p.Pid()); st != "T" {
			t.Errorf("%s: state %q (%v), want T (stopped)", n, st, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = healthServing(ctx, p.Addr)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) && !isDeadline(err) {
			t.Errorf("%s: health check %v, want its deadline exceeded", n, err)
		}
	}
}

// isDeadline reports whether err is a gRPC DeadlineExceeded.
func isDeadline(err error) bool { return status.Code(err) == codes.DeadlineExceeded }
