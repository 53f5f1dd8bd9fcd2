package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/retry"
)

// Windows a probe's acknowledgement can fall in.
const (
	windowNone int32 = iota
	windowMeasured
	windowFreshness
)

// probeTimeout is how long a probe waits to be seen before it counts as a
// timeout (and is recorded with this latency).
const probeTimeout = 30 * time.Second

// probeRetry paces a probe's attempts while the cluster cannot take it
// (an owner moving, Redis failing over); after probeAttempts failures
// the run fails.
var probeRetry = retry.Policy{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond}

const probeAttempts = 50

// sendProbe ingests the probe click in req and returns when it was
// acknowledged. A refusal of the click itself is errRejected at once.
func (r *run) sendProbe(ctx context.Context, req *clickaggv1.IngestRequest) (time.Time, error) {
	var ackAt time.Time
	failures := 0
	err := retry.Do(ctx, probeRetry, nil, func() error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := r.ingest.Ingest(cctx, req)
		cancel()
		switch {
		case err == nil && resp.Accepted == 1:
			ackAt = time.Now()
			return nil
		case err == nil:
			return retry.Permanent(fmt.Errorf("%w: probe refused: %v", errRejected, resp.Rejected))
		}
		if failures++; failures > probeAttempts {
			return retry.Permanent(fmt.Errorf("probe ingest: %w", err))
		}
		return err
	})
	return ackAt, err
}

// probe measures freshness until stop is closed: one click at a time for a
// probe ad (outside the workload's ads), acknowledged by Ingest, then
// GetAggregatedCount polled every ProbePoll until the ad's count includes
// it. Freshness is the time from the acknowledgement to the first answer
// that includes the click, to within ProbePoll.
func (r *run) probe(ctx context.Context, stop <-chan struct{}, sweep func() int64, rel func(time.Time) float64, res *ingestResult, window *atomic.Int32) error {
	cfg := r.cfg
	expected := make([]int64, cfg.ProbeAds)
	from := timestamppb.New(time.UnixMilli(r.spanStart))
	to := timestamppb.New(time.UnixMilli(r.spanEnd))
	for k := uint64(1); ; k++ {
		start := time.Now()
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return nil
		default:
		}
		slot := int(k % uint64(cfg.ProbeAds))
		ev := Event{ID: k, TimeMs: sweep(), Ad: uint32(cfg.Workload.Ads + slot), User: uint32(k), IP: uint32(k), Kind: Probe}
		req := &clickaggv1.IngestRequest{Events: []*clickaggv1.ClickEvent{r.names.ClickEvent(ev)}}
		ackAt, err := r.sendProbe(ctx, req)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		res.probeAck.Add(ackAt.Sub(start))
		which := window.Load()
		r.mu.Lock()
		r.probes = append(r.probes, ev)
		r.mu.Unlock()
		expected[slot]++
		ad := r.names.AdID(ev.Ad)
		var lat time.Duration
		for {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := r.query.GetAggregatedCount(cctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, From: from, To: to})
			cancel()
			now := time.Now()
			if err == nil && c.Count >= expected[slot] {
				lat = now.Sub(ackAt)
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			if now.Sub(ackAt) > probeTimeout {
				lat = probeTimeout
				r.mu.Lock()
				res.timeouts++
				r.mu.Unlock()
				// The count may still arrive; a later probe of this ad
				// waits for it too.
				break
			}
			time.Sleep(cfg.ProbePoll)
		}
		switch which {
		case windowMeasured:
			res.saturated.Add(lat)
		case windowFreshness:
			res.freshness.Add(lat)
		}
		r.mu.Lock()
		r.timeline.Freshness = append(r.timeline.Freshness, Sample{T: rel(ackAt), Latency: lat})
		r.mu.Unlock()
		if !pause(ctx, stop, cfg.ProbeInterval-time.Since(start)) {
			return nil
		}
	}
}
