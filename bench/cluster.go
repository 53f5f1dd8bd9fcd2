package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// clusterStatus is the sum of what the partitions report.
type clusterStatus struct {
	partitions  int
	serving     int
	unavailable int
	processed   int64 // events applied plus duplicates dropped
	applied     int64
	duplicates  int64
	late        int64
	maxLag      int64
	maxLagSec   float64
	at          time.Time // when the answer came
}

func (r *run) status(ctx context.Context) (clusterStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	st, err := r.coord.GetClusterStatus(ctx, &clickaggv1.GetClusterStatusRequest{})
	if err != nil {
		return clusterStatus{}, fmt.Errorf("GetClusterStatus: %w", err)
	}
	cs := clusterStatus{partitions: int(st.PartitionCount), unavailable: len(st.Unavailable)}
	if len(st.Unavailable) > 0 {
		// An owner that did not answer in time: its partitions' counters
		// are missing, so the sums would go backwards.
		return cs, fmt.Errorf("GetClusterStatus: partitions %v did not report", st.Unavailable)
	}
	for _, p := range st.Partitions {
		if p.State == "serving" {
			cs.serving++
		}
		cs.applied += p.EventsApplied
		cs.duplicates += p.DuplicatesDropped
		cs.late += p.LateEvents
		cs.maxLag = max(cs.maxLag, p.Lag)
		cs.maxLagSec = max(cs.maxLagSec, p.LagSeconds)
	}
	cs.processed = cs.applied + cs.duplicates
	cs.at = time.Now()
	return cs, nil
}

// redisForks returns how many times the cluster's Redis has forked (for
// AOF rewrites, since it saves no RDB), -1 when unknown.
func (r *run) redisForks(ctx context.Context) int64 {
	if r.clusterRdb == nil {
		return -1
	}
	v, err := infoField(ctx, r.clusterRdb, "stats", "total_forks")
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// statusRetry is status, tried up to three times.
func (r *run) statusRetry(ctx context.Context) (clusterStatus, error) {
	var err error
	for range 3 {
		var st clusterStatus
		if st, err = r.status(ctx); err == nil {
			return st, nil
		}
	}
	return clusterStatus{}, err
}

// waitServing waits until every partition is served.
func (r *run) waitServing(ctx context.Context) (clusterStatus, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := r.status(ctx)
		if err == nil && st.partitions > 0 && st.serving == st.partitions && st.unavailable == 0 {
			return st, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("%d of %d partitions serving", st.serving, st.partitions)
			}
			return st, fmt.Errorf("cluster not ready after 2 minutes: %w", err)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ingestResult is what the cluster run measured.
type ingestResult struct {
	events      int64 // workload events acknowledged
	rate        float64
	appliedRate float64
	window      time.Duration
	maxLag      int64
	maxLagSec   float64
	drain       time.Duration
	retries     int64
	freshRate   float64 // events/s achieved in the freshness window
	freshPaced  float64 // rate the freshness window was paced at
	freshness   Latencies
	saturated   Latencies // freshness probes during the measured window
	probeAck    Latencies // the probes' Ingest calls
	timeouts    int64
	late        int64 // late events the cluster counted
	duplicates  int64
	procCPU     float64 // cores used by this process in the measured window
	redisCPU    float64 // cores used by the cluster's Redis in the measured window
	machineCPU  float64 // cores used by every process in the measured window
	kernelCPU   float64 // cores used by kernel threads in the measured window
	stealCPU    float64 // cores the hypervisor took in the measured window
	othersCPU   float64 // cores used by other processes in the measured window
	cpuProfile  []byte
	ingestMid   int64         // a sweep minute inside the measured window
	sweepSpeed  float64       // event time per clock time in the measured window
	keys        int64         // distinct (ad, minute) keys of the workload's events
	fill        time.Duration // the load after the freshness window that added keys
	// forks is how many times the cluster's redis-server forked during the
	// run (AOF rewrites), -1 when unknown.
	forks int64
	// redisMem and logMem are how the cluster Redis's used_memory and the
	// memory of its partition logs moved from the measured window to the
	// end of the load.
	redisMem, logMem memTrend
	// statusFailures counts the once-a-second GetClusterStatus calls that
	// failed or left partitions out.
	statusFailures int
}

// runCluster drives the cluster through warmup, the measured window, the
// freshness window and the profiled load that adds keys up to cfg.Keys,
// then waits until the aggregators have applied everything.
func (r *run) runCluster(ctx context.Context) (*ingestResult, error) {
	cfg := r.cfg
	res := &ingestResult{}
	base, err := r.waitServing(ctx)
	if err != nil {
		return nil, err
	}
	forks0 := r.redisForks(ctx)

	conns := make([]*grpc.ClientConn, cfg.Streams)
	for i := range conns {
		c, err := r.targets.dial(r.targets.Router)
		if err != nil {
			return nil, fmt.Errorf("dial router: %w", err)
		}
		defer c.Close()
		conns[i] = c
	}

	var (
		acked, retries atomic.Int64
		paceRate       atomic.Int64 // events/s; 0 unpaced, < 0 paused
		produced       atomic.Int64 // events handed to the senders
		stop           = make(chan struct{})
		batches        = make(chan *batch, cfg.Streams)
		runStart       = time.Now()
	)
	r.runStart = runStart
	// Click times move through the span as the workload adds distinct
	// (ad, minute) keys, an equal share of cfg.Keys per minute: however
	// fast the cluster is, the queries then find every minute of the span
	// filled alike, and the sweep stands still while the load is paused.
	keys := newKeySet(cfg.Workload.Ads, r.spanStart, r.spanEnd)
	var keysAdded, sweepAt atomic.Int64
	sweepAt.Store(r.spanStart)
	sweepOf := func(k int64) int64 {
		f := float64(k) / float64(cfg.Keys)
		return min(r.spanStart+int64(f*float64(r.spanEnd-r.spanStart)), r.spanEnd-1)
	}
	sweep := func() int64 { return sweepAt.Load() }
	rel := func(t time.Time) float64 { return t.Sub(runStart).Seconds() }

	// Every goroutine of the load has ended when runCluster returns, on
	// every path.
	lctx, cancelLoad := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(lctx)
	defer func() {
		cancelLoad()
		_ = g.Wait()
	}()
	// The producer: one generator, so that the events are reproducible
	// from the sequence of sweep times it records.
	g.Go(func() error {
		defer close(batches)
		gen := NewGenerator(cfg.Workload, r.spanStart)
		enc := &Encoder{Names: r.names}
		evs := make([]Event, cfg.Batch)
		var paceStart time.Time
		var paced, sent int64
		for {
			if rate := paceRate.Load(); rate != paced {
				paced, paceStart, sent = rate, time.Now(), 0
			}
			if paced < 0 {
				select {
				case <-stop:
					return nil
				case <-gctx.Done():
					return nil
				case <-time.After(5 * time.Millisecond):
				}
				continue
			}
			if paced > 0 {
				due := paceStart.Add(time.Duration(float64(sent) * float64(time.Second) / float64(paced)))
				if d := time.Until(due); d > 0 {
					select {
					case <-stop:
						return nil
					case <-gctx.Done():
						return nil
					case <-time.After(d):
					}
				}
			}
			now := sweepOf(keys.len())
			for i := range evs {
				evs[i] = gen.Next(now)
				keys.add(evs[i])
			}
			b := &batch{data: enc.AppendRequest(make([]byte, 0, 96*len(evs)), evs), n: len(evs)}
			select {
			case batches <- b:
				r.batchTimes = append(r.batchTimes, now)
				keysAdded.Store(keys.len())
				sweepAt.Store(now)
				sent += int64(b.n)
				produced.Add(int64(b.n))
			case <-stop:
				return nil
			case <-gctx.Done():
				return nil
			}
		}
	})
	var senders sync.WaitGroup
	for _, c := range conns {
		s := &sender{conn: c, inflight: cfg.Inflight, acked: &acked, retries: &retries}
		senders.Add(1)
		g.Go(func() error {
			defer senders.Done()
			return s.run(gctx, batches)
		})
	}

	// Probes and the once-a-second sampler run until the load has stopped.
	probeStop := make(chan struct{})
	var phase atomic.Value
	phase.Store("warmup")
	var window atomic.Int32 // which window a probe's acknowledgement falls in
	g.Go(func() error {
		return r.probe(gctx, probeStop, sweep, rel, res, &window)
	})
	// Once a second: the acknowledged rate, and the applied rate and lag
	// from the last GetClusterStatus that answered since. The status calls
	// run on their own, since under load one can take seconds.
	samplerStop := make(chan struct{})
	samplerDone := make(chan struct{})
	var latest struct {
		sync.Mutex
		applied float64
		lag     int64
		failed  int
	}
	latest.applied = math.NaN()
	defer func() {
		close(samplerStop)
		<-samplerDone
		res.statusFailures = latest.failed
	}()
	go func() {
		defer close(samplerDone)
		statusDone := make(chan struct{})
		go func() {
			defer close(statusDone)
			last := base
			for {
				select {
				case <-samplerStop:
					return
				case <-gctx.Done():
					return
				case <-time.After(time.Second):
				}
				st, err := r.status(gctx)
				latest.Lock()
				if err != nil {
					latest.failed++
				} else {
					latest.applied = float64(st.processed-last.processed) / st.at.Sub(last.at).Seconds()
					latest.lag = st.maxLag
					res.maxLag = max(res.maxLag, st.maxLag)
					res.maxLagSec = max(res.maxLagSec, st.maxLagSec)
					last = st
				}
				latest.Unlock()
			}
		}()
		defer func() { <-statusDone }()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		lastT, lastAcked := time.Now(), int64(0)
		for {
			select {
			case <-samplerStop:
				return
			case <-gctx.Done():
				return
			case <-t.C:
			}
			now := time.Now()
			a := acked.Load()
			pt := Point{T: rel(now), Acked: float64(a-lastAcked) / now.Sub(lastT).Seconds()}
			lastT, lastAcked = now, a
			latest.Lock()
			pt.Applied, pt.Lag = latest.applied, latest.lag
			latest.applied = math.NaN()
			latest.Unlock()
			var fresh time.Duration
			r.mu.Lock()
			r.timeline.Points = append(r.timeline.Points, pt)
			if n := len(r.timeline.Freshness); n > 0 {
				fresh = r.timeline.Freshness[n-1].Latency
			}
			r.mu.Unlock()
			r.progress.set(fmt.Sprintf("cluster, %s", phase.Load()), fmt.Sprintf("%3.0fs  acked %s (%s/s)  applied %s  lag %d entries  last probe %s",
				pt.T, si(float64(a)), si(pt.Acked), siOrUnknown(pt.Applied), pt.Lag, formatSeconds(fresh.Seconds())))
		}
	}()

	// stopped is the error once the load's goroutines have ended early:
	// theirs, or the caller's cancellation.
	stopped := func() error {
		if err := g.Wait(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		return errors.New("bench: the load stopped early")
	}
	wait := func(d time.Duration) error {
		select {
		case <-gctx.Done():
			return stopped()
		case <-time.After(d):
			return nil
		}
	}
	// The timeline of phases. Each boundary reads the counters at once.
	span := func(name string, from time.Time) {
		r.mu.Lock()
		r.timeline.Spans = append(r.timeline.Spans, Span{Name: name, From: rel(from), To: rel(time.Now())})
		r.mu.Unlock()
	}
	if err := wait(cfg.Warmup); err != nil {
		return nil, err
	}
	t0, a0, s0 := time.Now(), acked.Load(), sweep()
	// Redis's memory from the measured window to the end of the load: with
	// the raw archive on, the logs are trimmed once archived and
	// snapshotted, so it must stay flat however long ingest runs.
	if r.clusterRdb != nil {
		memStop := make(chan struct{})
		memDone := make(chan [2][]memSample, 1)
		go func() {
			used, logs := sampleRedisMemory(ctx, r.clusterRdb, rel, time.Second, memStop)
			memDone <- [2][]memSample{used, logs}
		}()
		defer func() {
			close(memStop)
			got := <-memDone
			res.redisMem, res.logMem = trendOf(got[0]), trendOf(got[1])
		}()
	}
	st0, err0 := r.statusRetry(gctx)
	cpu0, redis0, shares0 := processCPU(), r.redisCPU(gctx), readCPUShares()
	phase.Store("measured window")
	window.Store(windowMeasured)
	if err := wait(cfg.Duration); err != nil {
		return nil, err
	}
	t1, a1, s1 := time.Now(), acked.Load(), sweep()
	window.Store(windowNone)
	st1, err1 := r.statusRetry(gctx)
	cpu1, redis1, shares1 := processCPU(), r.redisCPU(gctx), readCPUShares()
	span("measured", t0)
	res.window = t1.Sub(t0)
	res.rate = float64(a1-a0) / res.window.Seconds()
	res.appliedRate = math.NaN()
	if err0 == nil && err1 == nil {
		// The status calls take a moment each; their own times are what
		// the counts span.
		res.appliedRate = float64(st1.processed-st0.processed) / st1.at.Sub(st0.at).Seconds()
	}
	res.procCPU = (cpu1 - cpu0) / res.window.Seconds()
	secs := res.window.Seconds()
	res.machineCPU = (shares1.machine - shares0.machine) / secs
	res.kernelCPU = (shares1.kernel - shares0.kernel) / secs
	res.stealCPU = (shares1.steal - shares0.steal) / secs
	res.othersCPU = (shares1.machine - shares0.machine - (shares1.self - shares0.self) - (shares1.kernel - shares0.kernel)) / secs
	if redis0 >= 0 && redis1 >= 0 {
		res.redisCPU = (redis1 - redis0) / res.window.Seconds()
	} else {
		res.redisCPU = math.NaN()
	}
	res.ingestMid = floorDiv(s0+(s1-s0)/2, 60_000)
	res.sweepSpeed = float64(s1-s0) / float64(t1.Sub(t0).Milliseconds())

	// caughtUp waits until everything handed to the senders has been
	// acknowledged and the aggregators have applied all of it and every
	// probe, and returns how long that took.
	caughtUp := func(what string) (clusterStatus, time.Duration, error) {
		t := time.Now()
		for {
			a := acked.Load()
			r.mu.Lock()
			probes := int64(len(r.probes))
			r.mu.Unlock()
			if a == produced.Load() {
				st, err := r.status(gctx)
				if err == nil && st.processed-base.processed >= a+probes && st.maxLag == 0 {
					return st, time.Since(t), nil
				}
			}
			if time.Since(t) > 10*time.Minute {
				return clusterStatus{}, 0, fmt.Errorf("%s: the aggregators did not apply everything within 10 minutes", what)
			}
			select {
			case <-gctx.Done():
				return clusterStatus{}, 0, stopped()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}

	// Let the aggregators apply the backlog of the saturated windows, so
	// that freshness is measured from a steady state.
	paceRate.Store(-1)
	phase.Store("applying the backlog")
	ts := time.Now()
	if _, res.drain, err = caughtUp("after the measured window"); err != nil {
		return nil, err
	}
	span("backlog", ts)

	// The rate the pipeline sustains end to end is the smaller of what the
	// routers acknowledged and what the aggregators applied.
	sustained := res.rate
	if !math.IsNaN(res.appliedRate) {
		sustained = min(sustained, res.appliedRate)
	}
	res.freshPaced = float64(cfg.FreshnessRate)
	if sustained < float64(cfg.FreshnessRate) {
		res.freshPaced = cfg.FreshnessLoad * sustained
	}
	paceRate.Store(max(1, int64(res.freshPaced)))
	phase.Store("freshness window")
	tf, af := time.Now(), acked.Load()
	window.Store(windowFreshness)
	if err := wait(cfg.FreshnessDuration); err != nil {
		return nil, err
	}
	window.Store(windowNone)
	res.freshRate = float64(acked.Load()-af) / time.Since(tf).Seconds()
	span("freshness", tf)

	// The queries are measured on as many keys as the targets name: the
	// load goes on, as fast as acknowledged, until the workload has put
	// that many in. This is the pipeline at the scale of the targets, so
	// it is what the CPU profile records, for at least ProfileDuration.
	profile := cfg.ProfileDuration > 0 && r.targets.InProcess
	if (keysAdded.Load() < cfg.Keys && cfg.FillTimeout > 0) || profile {
		paceRate.Store(0)
		phase.Store(fmt.Sprintf("adding keys up to %s", si(float64(cfg.Keys))))
		tk := time.Now()
		var buf bytes.Buffer
		profiling := profile && pprof.StartCPUProfile(&buf) == nil
		minEnd, deadline := tk, tk.Add(cfg.FillTimeout)
		if profile {
			minEnd = tk.Add(cfg.ProfileDuration)
		}
		var err error
		for now := tk; err == nil && (now.Before(minEnd) || (keysAdded.Load() < cfg.Keys && now.Before(deadline))); now = time.Now() {
			err = wait(50 * time.Millisecond)
		}
		if profiling {
			pprof.StopCPUProfile()
			res.cpuProfile = buf.Bytes()
		}
		if err != nil {
			return nil, err
		}
		res.fill = time.Since(tk)
		span("keys", tk)
	}

	// Stop the load and wait until it has all been applied.
	close(stop)
	close(probeStop)
	phase.Store("applying the rest")
	senders.Wait()
	tStop := time.Now()
	st, _, err := caughtUp("at the end")
	if err != nil {
		return nil, err
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	res.events = acked.Load()
	res.retries = retries.Load()
	if want := int64(len(r.batchTimes) * cfg.Batch); res.events != want {
		return nil, fmt.Errorf("bench: %d events acknowledged, %d sent", res.events, want)
	}
	res.keys = keysAdded.Load()
	if forks1 := r.redisForks(ctx); forks0 >= 0 && forks1 >= 0 {
		res.forks = forks1 - forks0
	} else {
		res.forks = -1
	}
	res.late = st.late - base.late
	res.duplicates = st.duplicates - base.duplicates
	span("drain", tStop)
	return res, nil
}
