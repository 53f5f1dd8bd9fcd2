package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	clickhealth "github.com/clickagg/clickagg/health"
	"github.com/clickagg/clickagg/hotkey"
)

// errRoleStopped is Run's error when a role ended on its own.
var errRoleStopped = errors.New("a role stopped")

// waitForSplits waits for the split table: until then every ingest and
// query would be refused. Shutdown or a failed role ends the wait and goes
// on to the shutdown.
func (p *process) waitForSplits(ctx context.Context, follower *hotkey.Follower) {
	if follower == nil {
		return
	}
	p.lg.Info("waiting for the split table from etcd")
	select {
	case <-follower.Ready():
	case <-ctx.Done():
	case <-p.gctx.Done():
	}
}

// startChecker starts the liveness and readiness checks (gRPC health,
// /healthz, /readyz) once every role's service is registered.
func (s *Server) startChecker(p *process, follower *hotkey.Follower) {
	// Every method's series exist from the start, at zero.
	p.gm.InitializeMetrics(p.gs)
	p.checker = clickhealth.NewChecker(p.cfg.Health, p.hs, p.services, p.lg.With("component", "health"), time.Now)
	s.readiness(p.checker, p.gate, etcdCheck(p.cl), p.rdb, follower)
	// clickagg_health_check_passing: the outcome of each check, which the
	// etcd and Redis alerts read.
	p.reg.MustRegister(p.checker)
	p.mux.Handle("/healthz", allow(p.checker.LiveHandler(), http.MethodGet, http.MethodHead))
	p.mux.Handle("/readyz", allow(p.checker.ReadyHandler(), http.MethodGet, http.MethodHead))
	p.g.Go(func() error { return p.checker.Run(p.gctx) })
}

// serve starts the gRPC server and the HTTP server; the channel gets the
// error that stops either.
func (p *process) serve() <-chan error {
	serveErr := make(chan error, 2)
	go func() { serveErr <- p.gs.Serve(p.lis) }()
	if p.httpLis != nil {
		p.hsrv = p.cfg.HTTP.server(p.mux, p.httpTLS)
		go func() {
			if err := runHTTP(p.hsrv, p.httpLis); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}
	return serveErr
}

// wait returns when ctx ends (nil), a server fails, or a role ends on its
// own: that is an error, the process must exit.
func (p *process) wait(ctx context.Context, serveErr <-chan error) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-p.gctx.Done():
		return errRoleStopped
	}
}

// shutdown stops the process in the order Run's doc comment gives, up to
// the roles' end; Run's deferred close then revokes the memberships and
// closes the clients. runErr is why Run stops, nil when ctx ended: only
// then do the aggregator hand its partitions over live and the drain
// delay apply.
func (s *Server) shutdown(ctx context.Context, p *process, runErr error) error {
	cfg := s.cfg
	p.lg.Info("shutting down")
	p.checker.SetStopping()
	p.hs.Shutdown()
	if s.aggregator != nil && runErr == nil {
		// The Release calls of the handoffs come through gs, so this
		// precedes GracefulStop.
		if err := s.aggregator.Leave(context.WithoutCancel(ctx)); err != nil {
			p.lg.Warn("aggregator leave", "err", err)
		}
	}
	if cfg.DrainDelay > 0 && runErr == nil {
		time.Sleep(cfg.DrainDelay)
	}
	stopped := make(chan struct{})
	go func() { p.gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(cfg.ShutdownTimeout):
		p.gs.Stop()
	}
	if p.hsrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		_ = p.hsrv.Shutdown(sctx)
		cancel()
	}
	p.stopRoles()
	if err := p.g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		if runErr == errRoleStopped {
			// One line that says why, for the exit message.
			runErr = fmt.Errorf("%w: %w", errRoleStopped, err)
		} else {
			runErr = errors.Join(runErr, err)
		}
	}
	return runErr
}
