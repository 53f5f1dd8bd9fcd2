package bench

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config is a benchmark run. RegisterFlags gives the defaults, which finish
// in under ten minutes on two cores with the 10M (ad, minute) keys the
// query targets name.
type Config struct {
	Workload Workload

	// Router, Queryd and Coordinator are the gRPC addresses of a running
	// cluster to measure; with Router empty, clickagg bench starts a
	// cluster in its own process. ClusterRedis is that running cluster's
	// Redis, read only for its CPU time and memory.
	Router, Queryd, Coordinator            string
	ClusterRedis, ClusterRedisPasswordFile string
	// Redis serves the baselines; empty starts a redis-server child.
	Redis, RedisPasswordFile string
	// DataDir holds the local cluster's and the baseline's data, kept
	// afterwards; empty is a temporary directory, removed afterwards.
	DataDir string
	// AppendFsync is the AOF fsync policy of the redis-server children.
	AppendFsync string

	// History, when set, runs only the history measurement (RunHistory),
	// HistoryRuns times.
	History     bool
	HistoryRuns int

	// Span is how much event time the run's clicks cover: the sweep moves
	// through it over the whole cluster run, so that queries over Span
	// minutes find every minute filled.
	Span time.Duration

	// Keys is how many distinct (ad, minute) keys the workload puts in the
	// cluster before the queries are measured: the sweep moves through the
	// span as keys are added, and after the freshness window the load goes
	// on until there are this many, for at most FillTimeout.
	Keys        int64
	FillTimeout time.Duration

	Warmup            time.Duration
	Duration          time.Duration
	ProfileDuration   time.Duration
	FreshnessDuration time.Duration
	// FreshnessRate is the ingest rate freshness is measured at; when the
	// cluster sustains less, FreshnessLoad of what it sustained is used.
	FreshnessRate int
	FreshnessLoad float64
	ProbeInterval time.Duration
	ProbePoll     time.Duration
	ProbeAds      int

	Streams  int
	Inflight int
	Batch    int

	QueryTime       time.Duration
	QueryMinSamples int
	QueryMaxSamples int

	Naive        bool
	NaiveTimeout time.Duration
	NaiveTopRuns int
	Inproc       bool
	SnapshotKeys int64

	// Steady, when set, runs only the steady measurement (RunSteady):
	// SteadyRate events per second for this long, the first SteadyWarmup
	// of it left out of the verdict.
	Steady       time.Duration
	SteadyRate   int
	SteadyWarmup time.Duration

	// Topologies, when set, runs only the topology measurement
	// (RunTopology) on each Redis setup, with freshness probes at
	// TopologyRate events per second.
	Topologies   bool
	TopologyRate int
	// Security, when set, runs RunTopology and RunTopologyQueries on a
	// plaintext cluster, one with TLS, one with TLS and authorization.
	Security bool

	// PprofDir, when set, receives the raw profiles for go tool pprof.
	PprofDir string

	// Out is the Markdown report; the chart is written next to it as
	// Chart. Empty writes neither.
	Out   string
	Chart string
	// View is the progress display: auto (a live line on a terminal, one
	// line per second otherwise), on, off.
	View string
}

// RegisterFlags registers the flags under -bench. Their help says what
// each does; why the defaults are what they are is in the comments here
// and in the package documentation.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.registerTargetFlags(fs)
	c.registerWorkloadFlags(fs)
	c.registerPhaseFlags(fs)
	c.registerModeFlags(fs)
	fs.StringVar(&c.PprofDir, "bench.pprof-dir", "", "also write the raw profiles (ingest, queries, heap, recovery) there for go tool pprof; in-process cluster only")
	fs.StringVar(&c.Out, "bench.out", "docs/benchmarks.md", "Markdown report to write, keeping its hand-written notes; empty writes no files")
	fs.StringVar(&c.Chart, "bench.chart", "benchmarks.svg", "file name of the SVG chart, written next to -bench.out")
	fs.StringVar(&c.View, "bench.view", "auto", "progress display: auto (a live line on a terminal), on or off")
}

// registerTargetFlags registers what the bench measures and where its data
// goes.
func (c *Config) registerTargetFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Router, "bench.router", "", "gRPC address of a running cluster's router to measure; empty starts a cluster in this process")
	fs.StringVar(&c.Queryd, "bench.queryd", "", "gRPC address of the running cluster's queryd; default: -bench.router")
	fs.StringVar(&c.Coordinator, "bench.coordinator", "", "gRPC address of the running cluster's coordinator, for lag; default: -bench.queryd")
	fs.StringVar(&c.ClusterRedis, "bench.cluster-redis", "", "the running cluster's Redis, read only for its CPU time (optional)")
	fs.StringVar(&c.ClusterRedisPasswordFile, "bench.cluster-redis-password-file", "", "file holding -bench.cluster-redis's password, if it has one")
	// The baselines delete the keys they write afterwards.
	fs.StringVar(&c.Redis, "bench.redis", "", "Redis for the naive baseline and the snapshot measurement; empty starts a redis-server child")
	fs.StringVar(&c.RedisPasswordFile, "bench.redis-password-file", "", "file holding -bench.redis's password, if it has one")
	fs.StringVar(&c.DataDir, "bench.data-dir", "", "empty or new directory for the local cluster's and the baseline's data, kept afterwards; default: a temporary one")
	// always: an acknowledged click is on disk, as in production.
	fs.StringVar(&c.AppendFsync, "bench.appendfsync", "always", "AOF fsync policy of the redis-server children: always, everysec or no")
}

// registerWorkloadFlags registers the clicks the bench sends.
func (c *Config) registerWorkloadFlags(fs *flag.FlagSet) {
	w := &c.Workload
	fs.IntVar(&w.Ads, "bench.ads", 2_000_000, "distinct ads; popularity is Zipf-distributed")
	// 1.1 gives the top ad about 12% of the clicks of 2M ads.
	fs.Float64Var(&w.ZipfS, "bench.zipf-s", 1.1, "Zipf exponent of ad popularity (> 1)")
	// Real ISO codes, largest internet populations first, share falling as
	// 1/rank.
	fs.IntVar(&w.Countries, "bench.countries", len(Countries), fmt.Sprintf("distinct countries, at most %d", len(Countries)))
	fs.IntVar(&w.Users, "bench.users", 4_000_000, "distinct user_ids (uniform)")
	fs.IntVar(&w.IPs, "bench.ips", 2_000_000, "distinct IP addresses; each user clicks from one")
	// Exact fractions, not random: as client retries do, a duplicate
	// repeats a recent event, event_id and all.
	fs.Float64Var(&w.Duplicates, "bench.duplicates", 0.01, "fraction of events that repeat a recent event exactly")
	fs.Float64Var(&w.Late, "bench.late", 0.01, "fraction of events 2 to 10 minutes behind the others")
	fs.Uint64Var(&w.Seed, "bench.seed", 1, "seed of the workload; the same seed gives the same events")
	// The click times sweep through the span ending a minute before the
	// run started, so that 60-minute queries find 60 filled minutes; with
	// -bench.ads the span sizes a bitmap of ads × minutes (15 MB for the
	// defaults) that counts the keys.
	fs.DurationVar(&c.Span, "bench.span", time.Hour, "event time the click times sweep through")
	// Click times sweep through -bench.span as keys are added, an equal
	// share per minute; after the freshness window the load goes on, as
	// fast as acknowledged, until this many are in.
	fs.Int64Var(&c.Keys, "bench.keys", 10_000_000, "distinct (ad, minute) keys to put in the cluster before the queries")
	fs.IntVar(&c.Streams, "bench.streams", 4, "concurrent IngestStreams, each on its own connection")
	// A router acknowledges a request once its log entry is fsynced, and
	// appends the requests that wait meanwhile together (group commit): a
	// cluster that serves thousands of ad servers always has many requests
	// waiting. With 4 streams × 4 the routers waited for requests: 192k/s
	// acknowledged with 4 in flight, 251k/s with 16, on the same build.
	fs.IntVar(&c.Inflight, "bench.inflight", 16, "requests sent ahead of their acknowledgement on each stream")
	fs.IntVar(&c.Batch, "bench.batch", 500, "events per IngestStream request")
}

// registerPhaseFlags registers how long each phase of a cluster run lasts.
func (c *Config) registerPhaseFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.FillTimeout, "bench.fill-timeout", 5*time.Minute, "the longest the load goes on after the freshness window to reach -bench.keys")
	fs.DurationVar(&c.Warmup, "bench.warmup", 5*time.Second, "ingest before the measured window starts (not measured)")
	fs.DurationVar(&c.Duration, "bench.duration", 30*time.Second, "the measured ingest window, as fast as the cluster acknowledges")
	// The profile is of the pipeline at the scale of the targets, and does
	// not slow the measured window.
	fs.DurationVar(&c.ProfileDuration, "bench.profile", 10*time.Second, "CPU-profile the load that adds keys for at least this long (in-process cluster only; 0: no profile)")
	fs.DurationVar(&c.FreshnessDuration, "bench.freshness-duration", 20*time.Second, "the freshness window: ingest paced at the freshness rate, with probes")
	// When the cluster sustained less in the measured window,
	// -bench.freshness-load of what it sustained is used, and the report
	// says so.
	fs.IntVar(&c.FreshnessRate, "bench.freshness-rate", 1_000_000, "events per second during the freshness window, if the cluster sustains it")
	// The targets ask for freshness at 1M events/s of a cluster that
	// sustains 1.5M: at two thirds of its capacity. Where the capacity is
	// lower, the same fraction of it keeps the comparison fair; queueing
	// delay grows as 1/(1-load), so at 90% it would measure the queue.
	fs.Float64Var(&c.FreshnessLoad, "bench.freshness-load", 2.0/3, "fraction of the sustained rate the freshness window uses when -bench.freshness-rate is out of reach")
	fs.DurationVar(&c.ProbeInterval, "bench.probe-interval", 50*time.Millisecond, "how often a probe click is sent (one at a time; each waits until seen)")
	fs.DurationVar(&c.ProbePoll, "bench.probe-poll", 2*time.Millisecond, "how often a probe's visibility is polled; freshness is measured to within this")
	fs.IntVar(&c.ProbeAds, "bench.probe-ads", 8, "distinct ads the probes click, in turn")

	fs.DurationVar(&c.QueryTime, "bench.query-time", 2*time.Second, "how long each kind of query is repeated (one client, one at a time)")
	fs.IntVar(&c.QueryMinSamples, "bench.query-min", 100, "each kind of query runs at least this many times, even past -bench.query-time")
	fs.IntVar(&c.QueryMaxSamples, "bench.query-max", 5000, "each kind of query runs at most this many times")

	fs.BoolVar(&c.Naive, "bench.naive", true, "run the naive Redis baseline (HINCRBY and ZINCRBY per event) on the same events")
	// Its rate is steady well before; its memory and query figures are
	// then for fewer keys.
	fs.DurationVar(&c.NaiveTimeout, "bench.naive-timeout", 30*time.Second, "stop the naive baseline's ingest after this long and report the rate it had")
	fs.IntVar(&c.NaiveTopRuns, "bench.naive-top-runs", 3, "how many times the naive top-100 over the span (ZUNIONSTORE) is timed")
	// The default, the targets' 10M, takes every partition of a default
	// run. A few partitions are a noisy sample: the hottest ads land in
	// random partitions, and their events per key set the bytes per key.
	fs.Int64Var(&c.SnapshotKeys, "bench.snapshot-keys", 10_000_000, "snapshot and recover the first partitions holding at least this many keys; 0 takes every partition")
	fs.BoolVar(&c.Inproc, "bench.inproc", true, "run the in-process limit (package tally in one goroutine) and the snapshot/recovery measurement")
}

// registerModeFlags registers the runs that replace the cluster run.
func (c *Config) registerModeFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.History, "bench.history", false, "instead, measure the archive and queries over a synthetic 30-day history; no cluster is started")
	fs.IntVar(&c.HistoryRuns, "bench.history-runs", 3, "with -bench.history: timed runs over the same history, each of 400 counts and 5 tops")
	// With the raw archive on, the partition logs must level off, trimmed
	// once archived and snapshotted.
	fs.DurationVar(&c.Steady, "bench.steady", 0, "instead, pace the workload for this long and sample the cluster Redis's memory (0: no steady run)")
	// Below what the cluster sustains, so that the logs measure the
	// archive's lag rather than a queue.
	fs.IntVar(&c.SteadyRate, "bench.steady-rate", 100_000, "events per second of the -bench.steady run")
	// While the logs fill to their level (one to two -archive.interval).
	fs.DurationVar(&c.SteadyWarmup, "bench.steady-warmup", 2*time.Minute, "the start of the -bench.steady run left out of its verdict")
	fs.BoolVar(&c.Topologies, "bench.redis-topologies", false, "instead, run the same load on a new local cluster for each Redis setup in turn")
	// The same for every setup: below what the slowest setup sustains, so
	// that freshness measures the pipeline rather than a queue.
	fs.IntVar(&c.TopologyRate, "bench.topology-rate", 20_000, "events per second of the freshness window of -bench.redis-topologies and -bench.security")
	fs.BoolVar(&c.Security, "bench.security", false, "instead, run the same load plaintext, with mutual TLS, and with TLS and authorization")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if err := c.Workload.Validate(); err != nil {
		return err
	}
	switch {
	case c.Span < time.Minute || c.Span%time.Minute != 0:
		return errors.New("-bench.span: must be a whole number of minutes, at least 1m")
	case c.Keys < 1 || c.FillTimeout < 0:
		return errors.New("-bench.keys must be at least 1 and -bench.fill-timeout not negative")
	case int64(c.Workload.Ads)*int64(c.Span/time.Minute) > 1<<34:
		return errors.New("-bench.ads × -bench.span in minutes: at most 2^34 (a 2 GiB bitmap counts the keys)")
	case c.Warmup < 0 || c.ProfileDuration < 0:
		return errors.New("-bench.warmup and -bench.profile: must not be negative")
	case c.Duration <= 0 || c.FreshnessDuration <= 0:
		return errors.New("-bench.duration and -bench.freshness-duration: must be positive")
	case c.FreshnessRate <= 0:
		return errors.New("-bench.freshness-rate: must be positive")
	case c.FreshnessLoad <= 0 || c.FreshnessLoad > 1:
		return errors.New("-bench.freshness-load: must be in (0, 1]")
	case c.ProbeInterval <= 0 || c.ProbePoll <= 0:
		return errors.New("-bench.probe-interval and -bench.probe-poll: must be positive")
	case c.ProbeAds < 1:
		return errors.New("-bench.probe-ads: must be at least 1")
	case c.Streams < 1 || c.Inflight < 1:
		return errors.New("-bench.streams and -bench.inflight: must be at least 1")
	case c.Batch < 1 || c.Batch > 10_000:
		return errors.New("-bench.batch: must be in [1, 10000]")
	case c.QueryTime < 0 || c.QueryMinSamples < 1 || c.QueryMaxSamples < c.QueryMinSamples:
		return errors.New("-bench.query-time must not be negative, -bench.query-min at least 1 and -bench.query-max at least -bench.query-min")
	case c.SnapshotKeys < 0:
		return errors.New("-bench.snapshot-keys: must not be negative")
	case c.NaiveTimeout <= 0 || c.NaiveTopRuns < 1:
		return errors.New("-bench.naive-timeout must be positive and -bench.naive-top-runs at least 1")
	case c.Steady < 0 || c.SteadyRate < 1 || c.SteadyWarmup < 0:
		return errors.New("-bench.steady and -bench.steady-warmup must not be negative, -bench.steady-rate at least 1")
	case c.Steady > 0 && c.Steady < c.SteadyWarmup+3*time.Minute:
		// The minutes are the clock's, so a run starting mid-minute
		// covers one fewer whole minute than its length.
		return errors.New("-bench.steady: must be at least -bench.steady-warmup plus 3m, so that two whole clock minutes give a trend")
	case c.History && c.HistoryRuns < 1:
		return fmt.Errorf("-bench.history-runs %d: must be at least 1", c.HistoryRuns)
	case c.TopologyRate < 1:
		return errors.New("-bench.topology-rate: must be at least 1")
	case c.Topologies && c.Steady > 0:
		return errors.New("-bench.redis-topologies and -bench.steady: choose one")
	case c.Security && (c.Topologies || c.Steady > 0):
		return errors.New("-bench.security with -bench.redis-topologies or -bench.steady: choose one")
	case c.View != "auto" && c.View != "on" && c.View != "off":
		return fmt.Errorf("-bench.view %q: want auto, on or off", c.View)
	}
	return nil
}
