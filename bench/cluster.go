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
	c, err := r.newClusterRun(ctx)
	if err != nil {
		return nil, err
	}
	// Every goroutine of the load has ended when runCluster returns, on
	// every path.
	defer c.close()
	c.start()
	for _, phase := range []func() error{c.warm, c.measure, c.drainBacklog, c.freshness, c.fill} {
		if err := phase(); err != nil {
			return nil, err
		}
	}
	if err := c.collect(); err != nil {
		return nil, err
	}
	return c.res, nil
}

// clusterRun is one run of runCluster: the load (one producer, a sender
// per stream), the probes, the once-a-second sampler, and what they have
// measured. Its phases run one after another: warm, measure,
// drainBacklog, freshness, fill, collect.
type clusterRun struct {
	*run
	ctx    context.Context // the caller's
	res    *ingestResult
	base   clusterStatus // before the load
	forks0 int64
	conns  []*grpc.ClientConn

	acked, retries atomic.Int64
	paceRate       atomic.Int64 // events/s; 0 unpaced, < 0 paused
	produced       atomic.Int64 // events handed to the senders
	stop           chan struct{}
	batches        chan *batch
	senders        sync.WaitGroup

	// Click times move through the span as the workload adds distinct
	// (ad, minute) keys, an equal share of cfg.Keys per minute: however
	// fast the cluster is, the queries then find every minute of the span
	// filled alike, and the sweep stands still while the load is paused.
	keys               *keySet
	keysAdded, sweepAt atomic.Int64

	g          *errgroup.Group
	gctx       context.Context
	cancelLoad context.CancelFunc

	probeStop chan struct{}
	phase     atomic.Value
	window    atomic.Int32 // which window a probe's acknowledgement falls in

	samplerStop, samplerDone chan struct{}
	latest                   struct {
		sync.Mutex
		applied float64
		lag     int64
		failed  int
	}
	// memStop, when set, stops the sampling of Redis's memory, which
	// sends what it sampled to memDone.
	memStop chan struct{}
	memDone chan [2][]memSample
}

// newClusterRun waits until the cluster serves every partition and dials
// a connection per stream.
func (r *run) newClusterRun(ctx context.Context) (*clusterRun, error) {
	base, err := r.waitServing(ctx)
	if err != nil {
		return nil, err
	}
	c := &clusterRun{run: r, ctx: ctx, res: &ingestResult{}, base: base, forks0: r.redisForks(ctx),
		stop: make(chan struct{}), batches: make(chan *batch, r.cfg.Streams)}
	if c.conns, err = r.targets.dialStreams(r.cfg.Streams); err != nil {
		return nil, err
	}
	return c, nil
}

// start starts the load, the probes and the sampler.
func (c *clusterRun) start() {
	c.runStart = time.Now()
	c.keys = newKeySet(c.cfg.Workload.Ads, c.spanStart, c.spanEnd)
	c.sweepAt.Store(c.spanStart)
	lctx, cancel := context.WithCancel(c.ctx)
	c.g, c.gctx = errgroup.WithContext(lctx)
	c.cancelLoad = cancel
	c.g.Go(c.produce)
	for _, conn := range c.conns {
		s := &sender{conn: conn, inflight: c.cfg.Inflight, acked: &c.acked, retries: &c.retries}
		c.senders.Add(1)
		c.g.Go(func() error {
			defer c.senders.Done()
			return s.run(c.gctx, c.batches)
		})
	}
	// Probes and the once-a-second sampler run until the load has stopped.
	c.probeStop = make(chan struct{})
	c.phase.Store("warmup")
	c.g.Go(func() error {
		return c.probe(c.gctx, c.probeStop, c.sweep, c.rel, c.res, &c.window)
	})
	c.samplerStop, c.samplerDone = make(chan struct{}), make(chan struct{})
	c.latest.applied = math.NaN()
	go c.sample()
}

// close stops whatever still runs, in the reverse order of starting, and
// closes the connections.
func (c *clusterRun) close() {
	if c.memStop != nil {
		close(c.memStop)
		got := <-c.memDone
		c.res.redisMem, c.res.logMem = trendOf(got[0]), trendOf(got[1])
	}
	if c.samplerStop != nil {
		close(c.samplerStop)
		<-c.samplerDone
		c.res.statusFailures = c.latest.failed
	}
	if c.cancelLoad != nil {
		c.cancelLoad()
		_ = c.g.Wait()
	}
	for _, conn := range c.conns {
		conn.Close()
	}
}

// sweepOf is the sweep time once the workload has added k keys.
func (c *clusterRun) sweepOf(k int64) int64 {
	f := float64(k) / float64(c.cfg.Keys)
	return min(c.spanStart+int64(f*float64(c.spanEnd-c.spanStart)), c.spanEnd-1)
}

// sweep is the sweep time of the last batch sent.
func (c *clusterRun) sweep() int64 { return c.sweepAt.Load() }

// rel is t in seconds since the run started, the timeline's time.
func (r *run) rel(t time.Time) float64 { return t.Sub(r.runStart).Seconds() }

// produce is the producer: one generator, so that the events are
// reproducible from the sequence of sweep times it records.
func (c *clusterRun) produce() error {
	defer close(c.batches)
	gen := NewGenerator(c.cfg.Workload, c.spanStart)
	enc := &Encoder{Names: c.names}
	evs := make([]Event, c.cfg.Batch)
	var paceStart time.Time
	var paced, sent int64
	for {
		if rate := c.paceRate.Load(); rate != paced {
			paced, paceStart, sent = rate, time.Now(), 0
		}
		if paced < 0 {
			if !pause(c.gctx, c.stop, 5*time.Millisecond) {
				return nil
			}
			continue
		}
		if paced > 0 {
			due := paceStart.Add(time.Duration(float64(sent) * float64(time.Second) / float64(paced)))
			if !pause(c.gctx, c.stop, time.Until(due)) {
				return nil
			}
		}
		now := c.sweepOf(c.keys.len())
		for i := range evs {
			evs[i] = gen.Next(now)
			c.keys.add(evs[i])
		}
		b := &batch{data: enc.AppendRequest(make([]byte, 0, 96*len(evs)), evs), n: len(evs)}
		select {
		case c.batches <- b:
			c.batchTimes = append(c.batchTimes, now)
			c.keysAdded.Store(c.keys.len())
			c.sweepAt.Store(now)
			sent += int64(b.n)
			c.produced.Add(int64(b.n))
		case <-c.stop:
			return nil
		case <-c.gctx.Done():
			return nil
		}
	}
}

// pause waits d, and reports false when stop is closed or ctx done first.
func pause(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// sample records, once a second, the acknowledged rate, and the applied
// rate and lag from the last GetClusterStatus that answered since. The
// status calls run on their own, since under load one can take seconds.
func (c *clusterRun) sample() {
	defer close(c.samplerDone)
	statusDone := make(chan struct{})
	go func() {
		defer close(statusDone)
		c.pollStatus()
	}()
	defer func() { <-statusDone }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastT, lastAcked := time.Now(), int64(0)
	for {
		select {
		case <-c.samplerStop:
			return
		case <-c.gctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		a := c.acked.Load()
		pt := Point{T: c.rel(now), Acked: float64(a-lastAcked) / now.Sub(lastT).Seconds()}
		lastT, lastAcked = now, a
		c.latest.Lock()
		pt.Applied, pt.Lag = c.latest.applied, c.latest.lag
		c.latest.applied = math.NaN()
		c.latest.Unlock()
		var fresh time.Duration
		c.mu.Lock()
		c.timeline.Points = append(c.timeline.Points, pt)
		if n := len(c.timeline.Freshness); n > 0 {
			fresh = c.timeline.Freshness[n-1].Latency
		}
		c.mu.Unlock()
		c.progress.set(fmt.Sprintf("cluster, %s", c.phase.Load()), fmt.Sprintf("%3.0fs  acked %s (%s/s)  applied %s  lag %d entries  last probe %s",
			pt.T, si(float64(a)), si(pt.Acked), siOrUnknown(pt.Applied), pt.Lag, formatSeconds(fresh.Seconds())))
	}
}

// pollStatus asks GetClusterStatus once a second for the applied rate and
// the lag, until the sampler stops.
func (c *clusterRun) pollStatus() {
	last := c.base
	for pause(c.gctx, c.samplerStop, time.Second) {
		st, err := c.status(c.gctx)
		c.latest.Lock()
		if err != nil {
			c.latest.failed++
		} else {
			c.latest.applied = float64(st.processed-last.processed) / st.at.Sub(last.at).Seconds()
			c.latest.lag = st.maxLag
			c.res.maxLag = max(c.res.maxLag, st.maxLag)
			c.res.maxLagSec = max(c.res.maxLagSec, st.maxLagSec)
			last = st
		}
		c.latest.Unlock()
	}
}

// stopped is the error once the load's goroutines have ended early:
// theirs, or the caller's cancellation.
func (c *clusterRun) stopped() error {
	if err := c.g.Wait(); err != nil {
		return err
	}
	if err := c.ctx.Err(); err != nil {
		return err
	}
	return errors.New("bench: the load stopped early")
}

// wait lets the load run for d.
func (c *clusterRun) wait(d time.Duration) error {
	select {
	case <-c.gctx.Done():
		return c.stopped()
	case <-time.After(d):
		return nil
	}
}

// span adds a phase that began at from and ends now to the timeline.
func (r *run) span(name string, from time.Time) {
	r.mu.Lock()
	r.timeline.Spans = append(r.timeline.Spans, Span{Name: name, From: r.rel(from), To: r.rel(time.Now())})
	r.mu.Unlock()
}

// warm is the warmup, not measured.
func (c *clusterRun) warm() error { return c.wait(c.cfg.Warmup) }

// measure is the measured window: as fast as acknowledged, with the CPU
// of every process and the applied rate read at both ends. Each boundary
// reads the counters at once.
func (c *clusterRun) measure() error {
	res := c.res
	t0, a0, s0 := time.Now(), c.acked.Load(), c.sweep()
	c.sampleMemory()
	st0, err0 := c.statusRetry(c.gctx)
	cpu0, redis0, shares0 := processCPU(), c.redisCPU(c.gctx), readCPUShares()
	c.phase.Store("measured window")
	c.window.Store(windowMeasured)
	if err := c.wait(c.cfg.Duration); err != nil {
		return err
	}
	t1, a1, s1 := time.Now(), c.acked.Load(), c.sweep()
	c.window.Store(windowNone)
	st1, err1 := c.statusRetry(c.gctx)
	cpu1, redis1, shares1 := processCPU(), c.redisCPU(c.gctx), readCPUShares()
	c.span("measured", t0)
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
	return nil
}

// sampleMemory samples Redis's memory from the measured window to the end
// of the load: with the raw archive on, the logs are trimmed once archived
// and snapshotted, so it must stay flat however long ingest runs.
func (c *clusterRun) sampleMemory() {
	if c.clusterRdb == nil {
		return
	}
	c.memStop, c.memDone = make(chan struct{}), make(chan [2][]memSample, 1)
	go func() {
		used, logs := sampleRedisMemory(c.ctx, c.clusterRdb, c.rel, time.Second, c.memStop)
		c.memDone <- [2][]memSample{used, logs}
	}()
}

// caughtUp waits until everything handed to the senders has been
// acknowledged and the aggregators have applied all of it and every
// probe, and returns how long that took.
func (c *clusterRun) caughtUp(what string) (clusterStatus, time.Duration, error) {
	t := time.Now()
	for {
		a := c.acked.Load()
		c.mu.Lock()
		probes := int64(len(c.probes))
		c.mu.Unlock()
		if a == c.produced.Load() {
			st, err := c.status(c.gctx)
			if err == nil && st.processed-c.base.processed >= a+probes && st.maxLag == 0 {
				return st, time.Since(t), nil
			}
		}
		if time.Since(t) > 10*time.Minute {
			return clusterStatus{}, 0, fmt.Errorf("%s: the aggregators did not apply everything within 10 minutes", what)
		}
		select {
		case <-c.gctx.Done():
			return clusterStatus{}, 0, c.stopped()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// drainBacklog lets the aggregators apply the backlog of the saturated
// windows, so that freshness is measured from a steady state.
func (c *clusterRun) drainBacklog() error {
	c.paceRate.Store(-1)
	c.phase.Store("applying the backlog")
	ts := time.Now()
	var err error
	if _, c.res.drain, err = c.caughtUp("after the measured window"); err != nil {
		return err
	}
	c.span("backlog", ts)
	return nil
}

// freshness is the freshness window, paced at cfg.FreshnessRate or, when
// the pipeline does not sustain that, cfg.FreshnessLoad of what it does.
func (c *clusterRun) freshness() error {
	res, cfg := c.res, c.cfg
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
	c.paceRate.Store(max(1, int64(res.freshPaced)))
	c.phase.Store("freshness window")
	tf, af := time.Now(), c.acked.Load()
	c.window.Store(windowFreshness)
	if err := c.wait(cfg.FreshnessDuration); err != nil {
		return err
	}
	c.window.Store(windowNone)
	res.freshRate = float64(c.acked.Load()-af) / time.Since(tf).Seconds()
	c.span("freshness", tf)
	return nil
}

// fill measures the queries on as many keys as the targets name: the load
// goes on, as fast as acknowledged, until the workload has put that many
// in. This is the pipeline at the scale of the targets, so it is what the
// CPU profile records, for at least ProfileDuration.
func (c *clusterRun) fill() error {
	cfg := c.cfg
	profile := cfg.ProfileDuration > 0 && c.targets.InProcess
	if (c.keysAdded.Load() >= cfg.Keys || cfg.FillTimeout <= 0) && !profile {
		return nil
	}
	c.paceRate.Store(0)
	c.phase.Store(fmt.Sprintf("adding keys up to %s", si(float64(cfg.Keys))))
	tk := time.Now()
	var buf bytes.Buffer
	profiling := profile && pprof.StartCPUProfile(&buf) == nil
	minEnd, deadline := tk, tk.Add(cfg.FillTimeout)
	if profile {
		minEnd = tk.Add(cfg.ProfileDuration)
	}
	var err error
	for now := tk; err == nil && (now.Before(minEnd) || (c.keysAdded.Load() < cfg.Keys && now.Before(deadline))); now = time.Now() {
		err = c.wait(50 * time.Millisecond)
	}
	if profiling {
		pprof.StopCPUProfile()
		c.res.cpuProfile = buf.Bytes()
	}
	if err != nil {
		return err
	}
	c.res.fill = time.Since(tk)
	c.span("keys", tk)
	return nil
}

// collect stops the load, waits until it has all been applied, and
// completes the result.
func (c *clusterRun) collect() error {
	res := c.res
	close(c.stop)
	close(c.probeStop)
	c.phase.Store("applying the rest")
	c.senders.Wait()
	tStop := time.Now()
	st, _, err := c.caughtUp("at the end")
	if err != nil {
		return err
	}
	if err := c.g.Wait(); err != nil {
		return err
	}
	res.events = c.acked.Load()
	res.retries = c.retries.Load()
	if want := int64(len(c.batchTimes) * c.cfg.Batch); res.events != want {
		return fmt.Errorf("bench: %d events acknowledged, %d sent", res.events, want)
	}
	res.keys = c.keysAdded.Load()
	if forks1 := c.redisForks(c.ctx); c.forks0 >= 0 && forks1 >= 0 {
		res.forks = forks1 - c.forks0
	} else {
		res.forks = -1
	}
	res.late = st.late - c.base.late
	res.duplicates = st.duplicates - c.base.duplicates
	c.span("drain", tStop)
	return nil
}
