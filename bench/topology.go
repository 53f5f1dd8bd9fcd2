package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/retry"
)

// TopologyResult is one cluster measured by RunTopology: the same load on
// whichever Redis the cluster runs on, so that runs on different Redis
// setups compare.
type TopologyResult struct {
	// Name says which Redis the cluster ran on.
	Name    string
	Machine Machine
	// Acked events were acknowledged in Window of load as fast as the
	// cluster acknowledged; Retries counts the streams that broke and were
	// sent again.
	Acked   int64
	Window  time.Duration
	Retries int64
	// ProcCPU is the cores this process (every clickagg role) used in
	// Window.
	ProcCPU float64
	// Nodes are the Redis servers, each with its CPU in Window and memory
	// at its end.
	Nodes []NodeUsage
	// FreshRate is the pace of the freshness window, the same for every
	// topology; Freshness is the probes' ack-to-visible time in it and Ack
	// their acknowledgement time (one click per request: the append, its
	// fsync and, with -redis.wait-replicas, the replicas' acknowledgement).
	FreshRate float64
	// Drain is how long the aggregators took, after the load as fast as
	// acknowledged, to apply what was acknowledged.
	Drain     time.Duration
	Freshness *Latencies
	Ack       *Latencies
	Timeouts  int64
	// Count and Top are the latencies of GetAggregatedCount and
	// GetPopularAds(100) after the load (RunTopologyQueries); nil when
	// not measured.
	Count, Top *Latencies
}

// Rate is the events acknowledged per second of Window.
func (t *TopologyResult) Rate() float64 { return float64(t.Acked) / t.Window.Seconds() }

// NodeUsage is one Redis server of a measured cluster.
type NodeUsage struct {
	Addr, Role string
	// CPU is the cores it used in the window; UsedMemory its used_memory
	// at the end of the window, in bytes.
	CPU, UsedMemory float64
}

// RunTopology measures the cluster at t, whose Redis servers are
// t.RedisNodes (each with the password t.ClusterRedisPassword): after
// cfg.Warmup, cfg.Duration of the workload as fast as the cluster
// acknowledges, with the CPU of every Redis server and of this process;
// then cfg.FreshnessDuration paced at freshRate events per second while
// probes measure ack-to-visible time. Click times are at the clock.
func RunTopology(ctx context.Context, cfg Config, t Targets, name string, freshRate int, out io.Writer) (*TopologyResult, error) {
	if len(t.RedisNodes) == 0 {
		return nil, errors.New("bench: the topology run needs the cluster's Redis servers")
	}
	tr := &topologyRun{cfg: cfg, t: t, out: out, res: &TopologyResult{Name: name, FreshRate: float64(freshRate)}}
	defer tr.close()
	if err := tr.connect(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "%s: waiting for every partition to be served\n", name)
	if _, err := tr.r.waitServing(ctx); err != nil {
		return nil, err
	}
	var err error
	if tr.conns, err = t.dialStreams(cfg.Streams); err != nil {
		return nil, err
	}
	tr.gen = clockGenerator(cfg.Workload, time.Now())
	defer func() { tr.res.Retries = tr.retries.Load() }()
	for _, phase := range []func(context.Context) error{tr.saturate, tr.drain, tr.paced} {
		if err := phase(ctx); err != nil {
			return nil, err
		}
	}
	return tr.res, nil
}

// topologyRun is one run of RunTopology.
type topologyRun struct {
	cfg     Config
	t       Targets
	out     io.Writer
	res     *TopologyResult
	nodes   []*redis.Client // t.RedisNodes'
	r       *run            // the probes' and status calls' clients
	closers []func() error
	conns   []*grpc.ClientConn // one per stream
	gen     *Generator

	acked, retries atomic.Int64
}

// connect makes the clients of the Redis servers and of the cluster.
func (tr *topologyRun) connect(ctx context.Context) error {
	t := tr.t
	tr.nodes = make([]*redis.Client, len(t.RedisNodes))
	for i, addr := range t.RedisNodes {
		tr.nodes[i] = redis.NewClient(&redis.Options{Addr: addr, Password: t.ClusterRedisPassword})
		tr.closers = append(tr.closers, tr.nodes[i].Close)
	}
	tr.res.Machine = machine(ctx, tr.nodes[0], nil)
	var conns [3]*grpc.ClientConn
	for i, c := range []struct{ what, addr string }{{"coordinator", t.Coordinator}, {"queryd", t.Queryd}, {"router", t.Router}} {
		conn, err := t.dial(c.addr)
		if err != nil {
			return fmt.Errorf("dial %s: %w", c.what, err)
		}
		tr.closers = append(tr.closers, conn.Close)
		conns[i] = conn
	}
	tr.r = &run{cfg: tr.cfg, names: Names{Tag: "topo"}, coord: clickaggv1.NewCoordinatorServiceClient(conns[0]),
		query: clickaggv1.NewQueryServiceClient(conns[1]), ingest: clickaggv1.NewIngestServiceClient(conns[2])}
	return nil
}

// close closes every connection, the last made first.
func (tr *topologyRun) close() {
	for _, c := range tr.conns {
		c.Close()
	}
	for _, c := range slices.Backward(tr.closers) {
		c()
	}
}

// saturate is the load as fast as acknowledged: the generator fills the
// senders' queue; after cfg.Warmup, cfg.Duration is measured.
func (tr *topologyRun) saturate(ctx context.Context) error {
	err := load(ctx, tr.cfg, Names{Tag: "topo"}, tr.conns, &tr.acked, &tr.retries, func(_ context.Context, evs []Event) bool {
		fillAtClock(tr.gen, evs)
		return true
	}, tr.measure)
	if err != nil {
		return fmt.Errorf("bench: load: %w", err)
	}
	return nil
}

// measure measures the saturated window beside the load, and stops it.
func (tr *topologyRun) measure(ctx context.Context, stop func()) error {
	cfg, res := tr.cfg, tr.res
	if err := retry.Sleep(ctx, cfg.Warmup); err != nil {
		return err
	}
	a0, p0, t0 := tr.acked.Load(), processCPU(), time.Now()
	cpu0 := make([]float64, len(tr.nodes))
	for i, n := range tr.nodes {
		cpu0[i] = redisCPUOf(ctx, n)
	}
	for s := 1; s <= int(cfg.Duration/time.Second); s++ {
		if err := retry.Sleep(ctx, time.Second); err != nil {
			return err
		}
		fmt.Fprintf(tr.out, "[%3ds] %s: %s acknowledged/s\n", s, res.Name, si(float64(tr.acked.Load()-a0)/time.Since(t0).Seconds()))
	}
	res.Acked, res.Window = tr.acked.Load()-a0, time.Since(t0)
	res.ProcCPU = (processCPU() - p0) / res.Window.Seconds()
	for i, n := range tr.nodes {
		u := NodeUsage{Addr: tr.t.RedisNodes[i], CPU: (redisCPUOf(ctx, n) - cpu0[i]) / res.Window.Seconds()}
		u.Role, _ = infoField(ctx, n, "replication", "role")
		if v, err := infoField(ctx, n, "memory", "used_memory"); err == nil {
			_, _ = fmt.Sscan(v, &u.UsedMemory)
		}
		res.Nodes = append(res.Nodes, u)
	}
	stop()
	return nil
}

// drain waits until the aggregators have caught up, before freshness is
// measured: the backlog of the load as fast as acknowledged would
// otherwise be measured.
func (tr *topologyRun) drain(ctx context.Context) error {
	drainStart := time.Now()
	for {
		st, err := tr.r.statusRetry(ctx)
		if err != nil {
			return err
		}
		if st.maxLag == 0 {
			break
		}
		if err := retry.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	tr.res.Drain = time.Since(drainStart)
	return nil
}

// paced is the freshness window: the load paced at res.FreshRate, with
// probes.
func (tr *topologyRun) paced(ctx context.Context) error {
	cfg, res, r := tr.cfg, tr.res, tr.r
	fmt.Fprintf(tr.out, "%s: %s of load paced at %s/s, with freshness probes\n", res.Name, cfg.FreshnessDuration, si(res.FreshRate))
	pacedStart := time.Now()
	r.spanStart = pacedStart.Truncate(time.Minute).Add(-time.Minute).UnixMilli()
	r.spanEnd = pacedStart.Add(cfg.FreshnessDuration + 10*time.Minute).Truncate(time.Minute).UnixMilli()
	ir := &ingestResult{}
	var window atomic.Int32
	window.Store(windowFreshness)
	probeStop := make(chan struct{})
	probeDone := make(chan error, 1)
	go func() {
		probeDone <- r.probe(ctx, probeStop, func() int64 { return time.Now().UnixMilli() },
			func(at time.Time) float64 { return at.Sub(pacedStart).Seconds() }, ir, &window)
	}()
	err := load(ctx, cfg, Names{Tag: "topo"}, tr.conns, &tr.acked, &tr.retries, pacedAtClock(tr.gen, pacedStart, int(res.FreshRate), cfg.FreshnessDuration), nil)
	if err != nil {
		err = fmt.Errorf("bench: load: %w", err)
	}
	close(probeStop)
	if perr := <-probeDone; err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	res.Freshness, res.Ack = &ir.freshness, &ir.probeAck
	res.Timeouts = ir.timeouts
	return nil
}

// clockGenerator is a generator of clicks at the clock from start on:
// late clicks go back at most LateMax, and the generator clamps to the
// start of that span.
func clockGenerator(w Workload, start time.Time) *Generator {
	return NewGenerator(w, start.Add(-LateMax*time.Millisecond-time.Minute).UnixMilli())
}

// fillAtClock fills evs with gen's next events, clicked now.
func fillAtClock(gen *Generator, evs []Event) {
	now := time.Now().UnixMilli()
	for i := range evs {
		evs[i] = gen.Next(now)
	}
}

// pacedAtClock is a load's next that fills batches of gen's events at the
// clock, paced at rate events per second from start until start+d.
func pacedAtClock(gen *Generator, start time.Time, rate int, d time.Duration) func(context.Context, []Event) bool {
	end := start.Add(d)
	var sent int64
	return func(ctx context.Context, evs []Event) bool {
		due := start.Add(time.Duration(float64(sent) * float64(time.Second) / float64(rate)))
		if !due.Before(end) || retry.Sleep(ctx, time.Until(due)) != nil {
			return false
		}
		fillAtClock(gen, evs)
		sent += int64(len(evs))
		return true
	}
}

// RunTopologyQueries measures, on the cluster RunTopology measured into
// res, the latency of GetAggregatedCount of one ad and of
// GetPopularAds(100), both over the cfg.Span that ends at the next whole
// minute (so that it holds every click of the run, whatever the
// durations), one query at a time as Run measures them.
func RunTopologyQueries(ctx context.Context, cfg Config, t Targets, res *TopologyResult, out io.Writer) error {
	conn, err := t.dial(t.Queryd)
	if err != nil {
		return fmt.Errorf("dial queryd: %w", err)
	}
	defer conn.Close()
	r := &run{cfg: cfg, targets: t, names: Names{Tag: "topo"}, query: clickaggv1.NewQueryServiceClient(conn)}
	r.spanEnd = time.Now().Truncate(time.Minute).Add(time.Minute).UnixMilli()
	r.spanStart = r.spanEnd - cfg.Span.Milliseconds()
	for _, k := range queryKinds(int64(cfg.Span / time.Minute)) {
		if k.id == "count" || k.id == "top" {
			r.kinds = append(r.kinds, k)
		}
	}
	r.progress = newProgress(out, false, cfg.View != "off")
	defer r.progress.stop()
	got, err := r.runClusterQueries(ctx)
	if err != nil {
		return err
	}
	res.Count, res.Top = got["count"].lat, got["top"].lat
	return nil
}

// load sends batches of names' events that next fills (until it returns
// false, or until measure calls stop) over conns, cfg.Inflight ahead on
// each, and waits until all are acknowledged. measure, when set, runs
// beside the load. next and measure get the load's context, which ends
// when any of its goroutines fails.
func load(ctx context.Context, cfg Config, names Names, conns []*grpc.ClientConn, acked, retries *atomic.Int64, next func(context.Context, []Event) bool, measure func(ctx context.Context, stop func()) error) error {
	g, gctx := errgroup.WithContext(ctx)
	batches := make(chan *batch, len(conns))
	var stopped atomic.Bool
	g.Go(func() error {
		defer close(batches)
		enc := &Encoder{Names: names}
		evs := make([]Event, cfg.Batch)
		for !stopped.Load() && next(gctx, evs) {
			select {
			case batches <- &batch{data: enc.AppendRequest(make([]byte, 0, 96*len(evs)), evs), n: len(evs)}:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for _, c := range conns {
		s := &sender{conn: c, inflight: cfg.Inflight, acked: acked, retries: retries}
		g.Go(func() error { return s.run(gctx, batches) })
	}
	if measure != nil {
		g.Go(func() error { return measure(gctx, func() { stopped.Store(true) }) })
	}
	return g.Wait()
}

// TopologyReport is the runs of one comparison, in the order they ran.
type TopologyReport struct {
	Comparison Comparison
	Started    time.Time
	Command    string
	Settings   []Setting
	Machine    Machine
	Config     Config
	Runs       []*TopologyResult
}

// A Comparison is what a TopologyReport compares, and so its section of
// the report: the markers around it, its heading and its columns.
type Comparison struct {
	begin, end, heading string
	// setup heads the column that names each run.
	setup   string
	columns []column
}

// column is one figure of each run, and the sentence under the table
// that explains it ("" when another column's covers it).
type column struct {
	head string
	cell func(r, first *TopologyResult) string
	note func(c Config, rep *TopologyReport) string
}

var (
	// RedisTopologies compares Redis setups (-bench.redis-topologies).
	RedisTopologies = Comparison{
		begin:   "<!-- topology: written by `clickagg bench -bench.redis-topologies` -->",
		end:     "<!-- end of topology -->",
		heading: "Ingest by Redis topology",
		setup:   "Redis",
		columns: []column{colAcked, colVsFirst("vs the first", ""), colProcCPU, colRedisCPU, colRedisMemory, colDrain, colProbeAck, colFreshness},
	}
	// Security compares plaintext, TLS and TLS with authorization
	// (-bench.security): the runs must have measured queries
	// (RunTopologyQueries).
	Security = Comparison{
		begin:   "<!-- security: written by `clickagg bench -bench.security` -->",
		end:     "<!-- end of security -->",
		heading: "Cost of TLS and authorization",
		setup:   "setup",
		columns: []column{colAcked, colVsFirst("vs plaintext", securityNote), colProcCPU, colProbeAck, colCountQuery, colTopQuery},
	}
)

var (
	colAcked = column{head: "acknowledged/s",
		cell: func(r, _ *TopologyResult) string { return si(r.Rate()) },
		note: func(c Config, _ *TopologyReport) string {
			return fmt.Sprintf("acknowledged/s: the workload (-bench.* workload flags, click times at the clock) in %d-event requests on %d streams, %d in flight each, as fast as the cluster acknowledged, for %s after %s of warm-up. CPU is over the same window: clickagg's is this process's.",
				c.Batch, c.Streams, c.Inflight, c.Duration, c.Warmup)
		}}
	colProcCPU = column{head: "clickagg CPU, cores",
		cell: func(r, _ *TopologyResult) string { return fmt.Sprintf("%.2f", r.ProcCPU) }}
	colRedisCPU = column{head: "Redis CPU, cores: primaries; replicas",
		cell: func(r, _ *TopologyResult) string {
			var pcpu, rcpu []string
			for _, n := range r.Nodes {
				if n.Role == "slave" {
					rcpu = append(rcpu, fmt.Sprintf("%.2f", n.CPU))
				} else {
					pcpu = append(pcpu, fmt.Sprintf("%.2f", n.CPU))
				}
			}
			cpu := strings.Join(pcpu, " + ")
			if len(rcpu) > 0 {
				cpu += "; " + strings.Join(rcpu, " + ")
			}
			return cpu
		},
		note: func(Config, *TopologyReport) string {
			return "Redis CPU: each server's used_cpu_user + used_cpu_sys over the same window."
		}}
	colRedisMemory = column{head: "used_memory of each primary",
		cell: func(r, _ *TopologyResult) string {
			var pmem []string
			for _, n := range r.Nodes {
				if n.Role != "slave" {
					pmem = append(pmem, formatBytes(n.UsedMemory))
				}
			}
			return strings.Join(pmem, ", ")
		}}
	colDrain = column{head: "caught up after",
		cell: func(r, _ *TopologyResult) string { return r.Drain.Round(100 * time.Millisecond).String() },
		note: func(Config, *TopologyReport) string {
			return "Caught up after: from the end of that load until no partition has entries left to apply."
		}}
	colProbeAck = column{head: "probe ack p50 / p99",
		cell: func(r, _ *TopologyResult) string { return percentiles(r.Ack) },
		note: func(c Config, rep *TopologyReport) string {
			return fmt.Sprintf("Probes: one click per request every %s, while the workload is paced at %s/s for %s; probe ack is the Ingest call (the append, its fsync and any replica acknowledgement).",
				c.ProbeInterval, si(rep.Runs[0].FreshRate), c.FreshnessDuration)
		}}
	colFreshness = column{head: "ack-to-visible p50 / p99",
		cell: func(r, _ *TopologyResult) string { return percentiles(r.Freshness) },
		note: func(c Config, _ *TopologyReport) string {
			return fmt.Sprintf("Ack-to-visible: from a probe's acknowledgement until GetAggregatedCount counts it (polled every %s).", c.ProbePoll)
		}}
	colCountQuery = column{head: "count query p50 / p99",
		cell: func(r, _ *TopologyResult) string { return percentiles(r.Count) },
		note: func(c Config, _ *TopologyReport) string {
			return fmt.Sprintf("Queries: after the paced load, one client, one at a time, each kind for %s (at least %d and at most %d times): count is GetAggregatedCount of one ad (drawn with the workload's popularity) over the %d minutes that end at the next whole minute, top-100 is GetPopularAds(100) over the same minutes.",
				c.QueryTime, c.QueryMinSamples, c.QueryMaxSamples, int64(c.Span/time.Minute))
		}}
	colTopQuery = column{head: "top-100 query p50 / p99",
		cell: func(r, _ *TopologyResult) string { return percentiles(r.Top) }}
)

// colVsFirst is each run's acknowledged/s over the first run's, with
// note (if any) under the table.
func colVsFirst(head, note string) column {
	c := column{head: head, cell: func(r, first *TopologyResult) string { return fmt.Sprintf("%.2f×", r.Rate()/first.Rate()) }}
	if note != "" {
		c.note = func(Config, *TopologyReport) string { return note }
	}
	return c
}

// securityNote says what the Security comparison's ratios hold.
const securityNote = "What the rows differ by: gRPC connections are long-lived, so a connection's handshake happens once, at its first call, in the warm-up; what the windows measure is the encryption of every message and, with authorization, the check of every call (the SHA-256 of its token, looked up in -auth.tokens-file's, and the policy). The bench's clients run in the same process, so clickagg's CPU includes their side of TLS."

// percentiles formats the p50 and p99 of l, "–" when it was not measured.
func percentiles(l *Latencies) string {
	if l == nil || l.N() == 0 {
		return "–"
	}
	return ms(l.Seconds(50)) + " / " + ms(l.Seconds(99))
}

// Markdown is the report's section.
func (rep *TopologyReport) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	cmp := rep.Comparison
	p("%s\n## %s\n\n", cmp.begin, cmp.heading)
	p("Measured %s on the machine above (%s, %d cores): each setup is a new cluster in the bench's process under the same load, one after the other.\n\n",
		rep.Started.UTC().Format("2006-01-02 15:04 MST"), mdEscape(rep.Machine.CPU), rep.Machine.Cores)
	p("```sh\n%s\n```\n\n", rep.Command)
	for _, s := range rep.Settings {
		p("- %s: %s\n", s.Name, mdEscape(s.Value))
	}
	p("\n| %s |", cmp.setup)
	for _, c := range cmp.columns {
		p(" %s |", c.head)
	}
	p("\n|---|%s\n", strings.Repeat("---|", len(cmp.columns)))
	for _, r := range rep.Runs {
		p("| %s |", mdEscape(r.Name))
		for _, c := range cmp.columns {
			p(" %s |", c.cell(r, rep.Runs[0]))
		}
		p("\n")
	}
	if len(rep.Runs) > 0 {
		p("\n")
		for _, c := range cmp.columns {
			if c.note != nil {
				p("- %s\n", c.note(rep.Config, rep))
			}
		}
	}
	p("%s\n", cmp.end)
	return b.String()
}

// WriteSection writes the report's section into the Markdown report at
// mdPath, keeping the rest of it.
func (rep *TopologyReport) WriteSection(mdPath string) error {
	return writeSection(mdPath, rep.Comparison.begin, rep.Comparison.end, rep.Markdown())
}

// ms formats seconds as milliseconds.
func ms(s float64) string { return fmt.Sprintf("%.1f ms", s*1000) }
