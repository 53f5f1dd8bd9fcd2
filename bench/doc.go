// Package bench is `clickagg bench`: it measures a cluster against the
// issue's targets and against two baselines that see exactly the same
// events, and writes the report (docs/benchmarks.md) and its chart.
//
// # The workload
//
// Generator makes clicks: ads with Zipf popularity, countries with
// popularity falling as 1/rank (real ISO codes), uniform users each
// clicking from one of fewer IP addresses, and exact fractions of
// duplicates (a recent event repeated, id and all) and of late events (2 to
// 10 minutes behind the others). Click times sweep through -bench.span of
// event time as the workload adds distinct (ad, minute) keys, an equal
// share of -bench.keys per minute, so that an hour-long query finds sixty
// filled minutes after a run of a few minutes, while the pipeline still
// sees time move forward as it would live (minutes fill, complete and get
// late events). The generator is deterministic: the run records the sweep
// time of every batch it sent, and replaying those times regenerates every
// event, which is how both baselines and the ground truth get the very
// events the cluster acknowledged, without keeping them in memory.
//
// # A run
//
//	warmup → measured window → backlog → freshness window → keys → drain
//	   (as fast as acknowledged)  (paused)    (paced)      (as fast as acknowledged, profiled)
//	→ queries → [cluster stopped] → in-process limit → snapshot/recovery → naive Redis
//
// In the measured window several IngestStreams send pre-encoded 500-event
// requests as fast as the routers acknowledge them; the acknowledged rate
// over the window is the ingest figure, and GetClusterStatus, sampled once a
// second, shows whether the aggregators kept up. The load then pauses
// until the aggregators have applied the backlog, and the freshness window
// sends at -bench.freshness-rate, or a fraction of the rate the pipeline
// sustained when that is out of reach. Then the load goes on as fast as
// acknowledged until the workload has put -bench.keys keys in the cluster
// (at most -bench.fill-timeout), so that the queries meet the state the
// targets name; that load runs with the CPU profiler on (only when the
// cluster runs in this process), which shows the pipeline at that scale
// and costs the measured window nothing. Throughout, a probe click
// for an ad outside the workload is acknowledged, then GetAggregatedCount
// is polled until it counts it: that interval is freshness.
//
// With every event applied, each kind of query is repeated for a while
// with ads and countries drawn from the workload's popularity (CPU-profiled
// too, for the query figures' profile), and the heap
// is read (live objects after GC, in this process) to give bytes per live
// (ad, minute) key.
//
// # Baselines
//
// The in-process limit regenerates the events, encodes them as the router
// writes them into the partition logs, and times only decoding and counting
// them with package tally, one partition object per partition, in one
// goroutine. Its state is also the ground truth: the cluster's answers to
// the first queries of every kind must equal its answers exactly. A second
// copy with every field but the event id made constant measures the dedup
// sets alone. Then the first partitions of the same state, holding at least
// -bench.snapshot-keys keys, are snapshotted into Redis with package
// snapshot and recovered from it, timed, and must answer exactly as before.
//
// The naive baseline is the design most teams try first: Redis counts,
// with a pipelined HINCRBY per (minute, ad) and ZINCRBY per minute, and the
// top N over an hour is a ZUNIONSTORE. It runs on the same events and its
// memory per key is Redis's used_memory growth divided by its keys.
//
// # Changing the bench
//
// Config holds every -bench.* flag (RegisterFlags, Validate); cli only
// starts what the targets need. A cluster run's phases are the methods of
// clusterRun, called in order by runCluster; a topology run's are those
// of topologyRun. The report's rows and notes come from reportBuilder,
// one method per group, in the order they are printed: a new figure is a
// field of ingestResult (or a baseline's result) set by its phase, and a
// row or note in its group.
//
// # Honesty
//
// Everything runs on one machine, so the load generator, the cluster and
// redis-server share its cores: the report states the CPU each used, and
// warns when other processes used some too. Figures that could not be
// measured say so ("n/a"), targets missed say by how much, and what is
// extrapolated says it is.
package bench
