package shipper

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/grpcclient"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/retry"
)

// Stats are the shipper's counters, safe to read while it runs.
type Stats struct {
	// Lines counts the lines consumed (acknowledged and checkpointed),
	// malformed ones and skipped ones included.
	Lines atomic.Int64
	// Accepted counts events the routers accepted.
	Accepted atomic.Int64
	// Malformed counts lines that could not be parsed.
	Malformed atomic.Int64
	// Rejected counts events the routers rejected as invalid.
	Rejected atomic.Int64
	// Retries counts failed requests that were retried.
	Retries atomic.Int64
	// Rotations counts moves to a new file and truncations followed.
	Rotations atomic.Int64
}

// Shipper tails log files and sends their clicks to routers.
type Shipper struct {
	cfg     Config
	lg      *slog.Logger
	stats   Stats
	ready   chan struct{}
	tailers []*tailer
}

// New returns a shipper; it does no I/O.
func New(cfg Config, lg *slog.Logger) (*Shipper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Shipper{cfg: cfg, lg: lg, ready: make(chan struct{})}
	for _, f := range cfg.Files {
		abs, _ := filepath.Abs(f)
		s.tailers = append(s.tailers, &tailer{s: s, path: abs})
	}
	return s, nil
}

// Stats returns the live counters.
func (s *Shipper) Stats() *Stats { return &s.stats }

// Ready is closed once the checkpoint is loaded and tailing has begun.
func (s *Shipper) Ready() <-chan struct{} { return s.ready }

// Lag is the number of bytes written to the log files and not yet
// acknowledged: the rest of each file being read, plus the file at the log
// path when the one being read was rotated away.
func (s *Shipper) Lag() int64 {
	var n int64
	for _, t := range s.tailers {
		n += t.lag.Load()
	}
	return n
}

// Run ships until ctx ends or a checkpoint cannot be written. Every
// goroutine it starts has ended when it returns.
func (s *Shipper) Run(ctx context.Context) error {
	ck, err := loadCheckpoints(s.cfg.checkpointPath())
	if err != nil {
		return err
	}
	opts := s.cfg.Dial
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	var clients []clickaggv1.IngestServiceClient
	for _, addr := range s.cfg.Routers {
		conn, err := grpc.NewClient(addr, grpcclient.With(opts...)...)
		if err != nil {
			return fmt.Errorf("router %s: %w", addr, err)
		}
		defer conn.Close()
		clients = append(clients, clickaggv1.NewIngestServiceClient(conn))
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, t := range s.tailers {
		t.ck = ck
		// Each tailer starts at another router, spreading the load.
		t.snd = &sender{cfg: &s.cfg, lg: s.lg, stats: &s.stats, clients: clients, next: i % len(clients)}
		g.Go(func() error { return t.run(gctx) })
	}
	close(s.ready)
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// sender sends batches to the routers, failing over and backing off until
// one accepts.
type sender struct {
	cfg     *Config
	lg      *slog.Logger
	stats   *Stats
	clients []clickaggv1.IngestServiceClient
	next    int
}

// send returns the routers' answer for events, or an error only when ctx
// ended. Rejection indexes are those of events. A request too large for
// the router (RESOURCE_EXHAUSTED) is split in halves.
func (s *sender) send(ctx context.Context, events []*clickaggv1.ClickEvent) (*clickaggv1.IngestResponse, error) {
	var (
		resp   *clickaggv1.IngestResponse
		failed int  // the router of the last failure
		split  bool // too large for the router: send it in halves
	)
	err := retry.Do(ctx, retry.Policy{Min: s.cfg.RetryMin, Max: s.cfg.RetryMax}, func(attempt int, err error, next time.Duration) {
		s.lg.Warn("ingest failed, retrying", "router", s.cfg.Routers[failed], "attempt", attempt, "events", len(events), "retry_in", next, "err", err)
	}, func() error {
		i := s.next
		cctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
		var err error
		resp, err = s.clients[i].Ingest(cctx, &clickaggv1.IngestRequest{Events: events})
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return retry.Permanent(ctx.Err())
		case status.Code(err) == codes.ResourceExhausted && len(events) > 1:
			split = true
			return retry.Permanent(err)
		}
		// Every other failure may be transient, and an event is never
		// dropped: try the next router after a capped, jittered backoff.
		// The router may have appended part of the batch; the retry
		// carries the same event_ids and the aggregators drop duplicates.
		s.stats.Retries.Add(1)
		failed, s.next = i, (i+1)%len(s.clients)
		return err
	})
	switch {
	case err == nil:
		return resp, nil
	case split:
		return s.sendHalves(ctx, events)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, err // not reached: only ctx ends Do otherwise
}

func (s *sender) sendHalves(ctx context.Context, events []*clickaggv1.ClickEvent) (*clickaggv1.IngestResponse, error) {
	h := len(events) / 2
	a, err := s.send(ctx, events[:h])
	if err != nil {
		return nil, err
	}
	b, err := s.send(ctx, events[h:])
	if err != nil {
		return nil, err
	}
	out := &clickaggv1.IngestResponse{Accepted: a.Accepted + b.Accepted, Rejected: a.Rejected}
	for _, r := range b.Rejected {
		r.Index += int32(h)
		out.Rejected = append(out.Rejected, r)
	}
	return out, nil
}
