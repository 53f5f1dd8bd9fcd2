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

// RegisterFlags registers the flags under -bench.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	w := &c.Workload
	fs.IntVar(&w.Ads, "bench.ads", 2_000_000, "distinct ads; popularity is Zipf-distributed")
	fs.Float64Var(&w.ZipfS, "bench.zipf-s", 1.1, "Zipf exponent of ad popularity (> 1; 1.1 gives the top ad about 12% of the clicks of 2M ads)")
	fs.IntVar(&w.Countries, "bench.countries", len(Countries), fmt.Sprintf("distinct countries (real ISO codes, largest internet populations first, share falling as 1/rank), at most %d", len(Countries)))
	fs.IntVar(&w.Users, "bench.users", 4_000_000, "distinct user_ids (uniform)")
	fs.IntVar(&w.IPs, "bench.ips", 2_000_000, "distinct IP addresses; each user clicks from one, several users share one")
	fs.Float64Var(&w.Duplicates, "bench.duplicates", 0.01, "fraction of events that repeat a recent event exactly (same event_id), as client retries do; exact, not random")
	fs.Float64Var(&w.Late, "bench.late", 0.01, "fraction of events whose click time is 2 to 10 minutes behind the others, in minutes already complete; exact, not random")
	fs.Uint64Var(&w.Seed, "bench.seed", 1, "seed of the workload; the same seed gives the same events")
	fs.DurationVar(&c.Span, "bench.span", time.Hour, "event time the clicks cover: the click times sweep through the span ending a minute before the run started, so that 60-minute queries find 60 filled minutes; with -bench.ads, it sizes a bitmap of ads × minutes (15 MB for the defaults) that counts keys")

	fs.Int64Var(&c.Keys, "bench.keys", 10_000_000, "distinct (ad, minute) keys the workload puts in the cluster before queries are measured: click times sweep through -bench.span as keys are added, an equal share of them per minute, and after the freshness window the load goes on, as fast as acknowledged, until this many are in")
	fs.DurationVar(&c.FillTimeout, "bench.fill-timeout", 5*time.Minute, "the longest the load goes on after the freshness window to reach -bench.keys; the report says how many keys the queries then found")
	fs.DurationVar(&c.Warmup, "bench.warmup", 5*time.Second, "ingest before the measured window starts (not measured)")
	fs.DurationVar(&c.Duration, "bench.duration", 30*time.Second, "the measured ingest window: as fast as the cluster acknowledges")
	fs.DurationVar(&c.ProfileDuration, "bench.profile", 10*time.Second, "the load that adds keys after the freshness window runs with the CPU profiler on, for at least this long (in-process cluster only; 0 disables the profile): the profile is of the pipeline at the scale of the targets, and does not slow the measured window")
	fs.DurationVar(&c.FreshnessDuration, "bench.freshness-duration", 20*time.Second, "the freshness window: ingest paced at the freshness rate while probes measure ack-to-visible time")
	fs.IntVar(&c.FreshnessRate, "bench.freshness-rate", 1_000_000, "events per second during the freshness window; if the cluster sustained less in the measured window, -bench.freshness-load of what it sustained is used instead, and the report says so")
	// The targets ask for freshness at 1M events/s of a cluster that
	// sustains 1.5M: at two thirds of its capacity. Where the capacity is
	// lower, the same fraction of it keeps the comparison fair; queueing
	// delay grows as 1/(1-load), so at 90% it would measure the queue.
	fs.Float64Var(&c.FreshnessLoad, "bench.freshness-load", 2.0/3, "fraction of the sustained rate used for the freshness window when -bench.freshness-rate is out of reach; the default is the targets' own ratio, 1M/s of freshness load against 1.5M/s of capacity")
	fs.DurationVar(&c.ProbeInterval, "bench.probe-interval", 50*time.Millisecond, "how often a probe click is sent (one at a time; each waits until seen)")
	fs.DurationVar(&c.ProbePoll, "bench.probe-poll", 2*time.Millisecond, "how often GetAggregatedCount is asked whether the probe is visible; freshness is measured to within this")
	fs.IntVar(&c.ProbeAds, "bench.probe-ads", 8, "distinct ads the probes click, in turn")

	fs.IntVar(&c.Streams, "bench.streams", 4, "concurrent IngestStreams, each on its own connection")
	// A router acknowledges a request once its log entry is fsynced, and
	// appends the requests that wait meanwhile together (group commit): a
	// cluster that serves thousands of ad servers always has many requests
	// waiting. With 4 streams × 4 the routers waited for requests: 192k/s
	// acknowledged with 4 in flight, 251k/s with 16, on the same build.
	fs.IntVar(&c.Inflight, "bench.inflight", 16, "requests sent ahead of their acknowledgement on each stream")
	fs.IntVar(&c.Batch, "bench.batch", 500, "events per IngestStream request")

	fs.DurationVar(&c.QueryTime, "bench.query-time", 2*time.Second, "how long each kind of query is repeated (one client, one at a time)")
	fs.IntVar(&c.QueryMinSamples, "bench.query-min", 100, "each kind of query runs at least this many times, even past -bench.query-time")
	fs.IntVar(&c.QueryMaxSamples, "bench.query-max", 5000, "each kind of query runs at most this many times")

	fs.BoolVar(&c.Naive, "bench.naive", true, "run the naive Redis baseline (pipelined HINCRBY per (minute, ad) and ZINCRBY per minute) on the same events")
	fs.DurationVar(&c.NaiveTimeout, "bench.naive-timeout", 30*time.Second, "give up the naive baseline's ingest after this long and report the rate it had (its rate is steady well before; its memory and query figures are then for fewer keys)")
	fs.IntVar(&c.NaiveTopRuns, "bench.naive-top-runs", 3, "how many times the naive top-100 over the span (ZUNIONSTORE) is timed")
	fs.Int64Var(&c.SnapshotKeys, "bench.snapshot-keys", 10_000_000, "snapshot and recover the first partitions of the in-process state that together hold at least this many (ad, minute) keys (the default, the targets' 10M, takes every partition of a default run); 0 takes every partition. A few partitions are a noisy sample: the hottest ads land in random partitions, and their events per key set the bytes per key")
	fs.BoolVar(&c.Inproc, "bench.inproc", true, "run the in-process limit (the same log entries decoded and counted by package tally in one goroutine) and the snapshot/recovery measurement")

	fs.DurationVar(&c.Steady, "bench.steady", 0, "instead of the cluster run, pace the workload at -bench.steady-rate for this long with click times at the clock, sample the cluster Redis's memory each second, and write the report's steady-ingest section: the partition logs must level off, trimmed once archived and snapshotted (0: no steady run)")
	fs.IntVar(&c.SteadyRate, "bench.steady-rate", 100_000, "events per second of the -bench.steady run, below what the cluster sustains so that the logs measure the archive's lag rather than a queue")
	fs.DurationVar(&c.SteadyWarmup, "bench.steady-warmup", 2*time.Minute, "the start of the -bench.steady run left out of its verdict, while the logs fill to their level (one to two -archive.interval)")
	fs.BoolVar(&c.Topologies, "bench.redis-topologies", false, "instead of the cluster run, run the same load on a new local cluster for each Redis setup in turn (one redis-server; a Redis Cluster of 3 primaries; 3 primaries with a replica each, without and with -redis.wait-replicas=1): -bench.duration as fast as acknowledged after -bench.warmup, with each Redis server's CPU and memory, then -bench.freshness-duration paced at -bench.topology-rate with freshness probes; writes the report's topology section")
	fs.IntVar(&c.TopologyRate, "bench.topology-rate", 20_000, "events per second of the -bench.redis-topologies and -bench.security freshness window, the same for every setup: below what the slowest setup sustains, so that freshness measures the pipeline rather than a queue")
	fs.BoolVar(&c.Security, "bench.security", false, "instead of the cluster run, run the same load on a new local cluster (one redis-server) plaintext, with mutual TLS, and with TLS and authorization (a bearer token), with certificates made for the run: -bench.duration as fast as acknowledged after -bench.warmup with clickagg's CPU, -bench.freshness-duration paced at -bench.topology-rate with probes, then query latency (-bench.query-time of GetAggregatedCount and of GetPopularAds(100) over -bench.span); writes the report's security section")
	fs.StringVar(&c.PprofDir, "bench.pprof-dir", "", "also write the raw profiles there, for go tool pprof: ingest.pprof (CPU, while adding keys), queries.pprof (CPU, the cluster's query phase), heap.pprof (after ingest); in-process cluster only")
	fs.StringVar(&c.Out, "bench.out", "docs/benchmarks.md", "Markdown report to write (its hand-written notes section is kept); empty writes no files")
	fs.StringVar(&c.Chart, "bench.chart", "benchmarks.svg", "file name of the SVG chart, written next to -bench.out")
	fs.StringVar(&c.View, "bench.view", "auto", "progress display: auto (a live line on a terminal, one line per second otherwise), on, off")
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
