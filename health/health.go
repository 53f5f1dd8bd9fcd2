package health

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// LivenessService is the gRPC health service name of liveness.
const LivenessService = "liveness"

// Config configures the readiness checks.
type Config struct {
	Interval time.Duration
	Timeout  time.Duration
}

// RegisterFlags registers the flags of the checks.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.Interval, "health.check-interval", time.Second, "how often readiness (gRPC health and /readyz) is checked: etcd, Redis, and what each role needs")
	fs.DurationVar(&c.Timeout, "health.check-timeout", time.Second, "longest wait for one readiness check (one etcd or Redis round trip); a slower answer counts as a failure")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.Interval <= 0 {
		return fmt.Errorf("-health.check-interval %v: must be positive", c.Interval)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("-health.check-timeout %v: must be positive", c.Timeout)
	}
	return nil
}

// check is one named readiness condition.
type check struct {
	name string
	fn   func(ctx context.Context) error
}

// Checker runs readiness checks and publishes their outcome.
type Checker struct {
	cfg      Config
	hs       *grpchealth.Server
	services []string
	lg       *slog.Logger
	now      func() time.Time

	checks []check

	mu       sync.Mutex
	failing  []string // "name: error" of each failing check; nil when ready
	passed   []bool   // by check, in the order of checks; nil before a round
	checked  bool     // a round completed
	stopping bool     // shutting down: never ready again
	last     time.Time
}

// NewChecker returns a checker that sets hs's statuses of "" and services;
// it does no I/O. now is the clock of the liveness bound.
func NewChecker(cfg Config, hs *grpchealth.Server, services []string, lg *slog.Logger, now func() time.Time) *Checker {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Checker{cfg: cfg, hs: hs, services: services, lg: lg, now: now, last: now()}
}

// SetStopping makes Ready fail from now on: the process is shutting down.
// The gRPC health server is shut down by its owner.
func (c *Checker) SetStopping() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopping = true
}

// Add adds a check; every check must pass for the process to be ready.
// Add must be called before Run.
func (c *Checker) Add(name string, fn func(ctx context.Context) error) {
	c.checks = append(c.checks, check{name: name, fn: fn})
}

// StallTimeout is how long a round of checks may take before liveness
// fails: every check times out well before it.
func (c *Checker) StallTimeout() time.Duration {
	return 10*c.cfg.Interval + time.Duration(len(c.checks)+1)*c.cfg.Timeout + 10*time.Second
}

// Run checks readiness at once, then every Interval, until ctx ends; a
// second goroutine turns liveness NOT_SERVING when rounds stop completing.
// It returns nil when ctx ends.
func (c *Checker) Run(ctx context.Context) error {
	c.hs.SetServingStatus(LivenessService, healthpb.HealthCheckResponse_SERVING)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { c.watchdog(ctx) })
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		c.Round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// watchdog sets liveness from the time of the last completed round.
func (c *Checker) watchdog(ctx context.Context) {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	live := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := c.Live()
		if now == live {
			continue
		}
		live = now
		st := healthpb.HealthCheckResponse_SERVING
		if !live {
			st = healthpb.HealthCheckResponse_NOT_SERVING
			c.lg.Error("health checks stopped completing: reporting not live", "stall_timeout", c.StallTimeout())
		}
		c.hs.SetServingStatus(LivenessService, st)
	}
}

// Round runs every check once and publishes the outcome.
func (c *Checker) Round(ctx context.Context) {
	var failing []string
	passed := make([]bool, len(c.checks))
	for i, ch := range c.checks {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		err := ch.fn(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failing = append(failing, ch.name+": "+err.Error())
		}
		passed[i] = err == nil
	}
	c.mu.Lock()
	was, first := c.failing, !c.checked
	c.failing, c.passed, c.checked, c.last = failing, passed, true, c.now()
	c.mu.Unlock()
	st := healthpb.HealthCheckResponse_SERVING
	if len(failing) > 0 {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	// Setting a status the health server already has notifies nobody.
	c.hs.SetServingStatus("", st)
	for _, svc := range c.services {
		c.hs.SetServingStatus(svc, st)
	}
	switch {
	case len(failing) > 0 && !slices.Equal(names(failing), names(was)):
		c.lg.Warn("not ready", "failing", strings.Join(failing, "; "))
	case len(failing) == 0 && (len(was) > 0 || first):
		c.lg.Info("ready")
	}
}

// names returns the check names of failing, so that a change of error
// text alone is not logged as a change of state.
func names(failing []string) []string {
	out := make([]string, len(failing))
	for i, f := range failing {
		out[i], _, _ = strings.Cut(f, ":")
	}
	return out
}

// Ready returns nil when the last round passed, else an error naming each
// failing check.
func (c *Checker) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.stopping:
		return errors.New("shutting down")
	case !c.checked:
		return errors.New("not checked yet")
	case len(c.failing) > 0:
		return errors.New(strings.Join(c.failing, "; "))
	}
	return nil
}

// Live reports whether a round completed within StallTimeout.
func (c *Checker) Live() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now().Sub(c.last) <= c.StallTimeout()
}

// ReadyHandler answers 200 "ok" while ready, else 503 with the failing
// checks.
func (c *Checker) ReadyHandler() http.Handler {
	return getOnly(func(w http.ResponseWriter) {
		if err := c.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// LiveHandler answers 200 "ok" while live, else 503.
func (c *Checker) LiveHandler() http.Handler {
	return getOnly(func(w http.ResponseWriter) {
		if !c.Live() {
			http.Error(w, fmt.Sprintf("stuck: no health check completed within %v", c.StallTimeout()), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

func getOnly(fn func(http.ResponseWriter)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		fn(w)
	})
}
