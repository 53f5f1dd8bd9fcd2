package bench

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"time"

	"github.com/clickagg/clickagg/buildinfo"
)

// The targets.
const (
	targetIngest        = 1_500_000
	targetVsNaive       = 6
	targetFreshRate     = 1_000_000
	targetFreshP50      = 0.050
	targetFreshP99      = 0.250
	targetCountP99      = 0.002
	targetTopP99        = 0.010
	targetKeys          = 10_000_000
	targetHeapPerKey    = 32
	targetDedupPerID    = 16
	targetSnapshotWrite = 0.5 // its floor: bytes per key × keys ÷ Redis write bandwidth, see inprocResult.redisWriteBps
	targetRecovery      = 2
	perKeys             = 10_000_000 // snapshot targets are for this many keys
)

// ratio returns a/b, NaN when either is unknown or b is 0.
func ratio(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return math.NaN()
	}
	return a / b
}

func yesNo(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// report turns the measurements into rows and notes. m's ip and nv are
// nil when their baseline did not run.
func (r *run) report(m *measurements) *Report {
	b := newReportBuilder(r, m)
	b.ingestRows()
	b.queryRows()
	b.memoryRows()
	b.snapshotRows()
	b.exactRows()
	b.cpuNotes()
	b.pipelineNotes()
	b.snapshotNotes()
	b.workloadNotes()
	b.rep.Notes = slicesDeleteEmpty(b.rep.Notes)
	b.settings()
	return b.rep
}

// reportBuilder builds a run's report, a section of rows or notes per
// method, from the measurements and the figures derived from them (NaN
// when unknown).
type reportBuilder struct {
	*run
	*measurements
	rep    *Report
	events int64 // the cluster's, probes included
	keys   float64

	naiveRate, naiveKeys, naiveEvents, naiveBytesPerKey float64

	inRate, inKeys, inEvents, inHeapPerKey, dedupPerID float64
	rowsPerKey, filterPerEvent                         float64
	clusterHeapPerKey, clusterHeapAllPerKey            float64

	// The snapshot's: the keys and partitions snapshotted, the write and
	// recovery times (and per 10M keys), the incremental write, the bytes
	// per key, whether the recovered state answered alike.
	snapKeys                         float64
	snapParts                        int
	write, rec, write10, rec10, incr float64
	perKey, exactRec                 float64
}

func newReportBuilder(r *run, m *measurements) *reportBuilder {
	nan := math.NaN()
	ing, ip, nv := m.ing, m.ip, m.nv
	b := &reportBuilder{run: r, measurements: m, rep: &Report{Started: r.started, Elapsed: time.Since(r.started), Command: r.targets.Command}}
	b.events = ing.events + int64(len(r.probes))
	b.naiveRate, b.naiveKeys, b.naiveEvents, b.naiveBytesPerKey = nan, nan, nan, nan
	if nv != nil {
		b.naiveRate, b.naiveKeys, b.naiveEvents = nv.rate, float64(nv.keys), float64(nv.events)
		b.naiveBytesPerKey = ratio(float64(nv.bytes), float64(nv.keys))
	}
	b.inRate, b.inKeys, b.inEvents, b.inHeapPerKey, b.dedupPerID = nan, nan, nan, nan, nan
	b.rowsPerKey, b.filterPerEvent = nan, nan
	if ip != nil {
		b.inRate, b.inKeys, b.inEvents = ip.rate, float64(ip.keys), float64(ip.events)
		b.inHeapPerKey = ratio(ip.stateBytes-float64(ip.mem.DedupBytes), float64(ip.keys))
		b.dedupPerID = ratio(float64(ip.mem.DedupBytes), float64(ip.mem.DedupIDs))
		b.rowsPerKey = ratio(float64(ip.mem.RowBytes), float64(ip.mem.Keys))
		b.filterPerEvent = ratio(float64(ip.mem.FilterBytes), float64(ip.mem.Events))
		b.keys = float64(ip.keys)
	} else {
		// The workload's own keys, as the producer counted them; the
		// probes' few are left out.
		b.keys = float64(ing.keys)
	}
	b.clusterHeapPerKey, b.clusterHeapAllPerKey = nan, nan
	if r.targets.InProcess {
		grown := float64(m.heapAfter) - float64(m.heapBefore)
		ids := float64(b.events - ing.duplicates)
		b.clusterHeapAllPerKey = ratio(grown, b.keys)
		b.clusterHeapPerKey = ratio(grown-b.dedupPerID*ids, b.keys)
	}
	b.snapKeys, b.snapParts = nan, 0
	b.write, b.rec, b.write10, b.rec10, b.exactRec = nan, nan, nan, nan, nan
	b.incr, b.perKey = nan, nan
	if ip != nil && r.targets.Redis != "" {
		b.snapKeys, b.snapParts = float64(ip.snapKeys), ip.snapParts
		b.write, b.rec = ip.snapWrite.Seconds(), ip.recovery.Seconds()
		b.write10, b.rec10 = b.write*perKeys/b.snapKeys, b.rec*perKeys/b.snapKeys
		b.incr, b.perKey = ip.incrWrite.Seconds(), ratio(float64(ip.snap.bytes), b.snapKeys)
		b.exactRec = yesNo(ip.recoveredSame)
	}
	return b
}

// note adds a note.
func (b *reportBuilder) note(format string, args ...any) {
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf(format, args...))
}

// ingestRows are ingest and freshness.
func (b *reportBuilder) ingestRows() {
	nan := math.NaN()
	ing := b.ing
	b.rep.Rows = append(b.rep.Rows,
		Row{ID: "ingest", Label: "ingest, events acknowledged/s (end to end, exactly-once on)", Unit: UnitRate, Value: ing.rate,
			Target: &Target{AtLeast, targetIngest}, Naive: b.naiveRate, Inproc: b.inRate},
		Row{ID: "ingest_vs_naive", Label: "ingest ÷ naive Redis ingest", Unit: UnitRatio, Value: ratio(ing.rate, b.naiveRate),
			Target: &Target{AtLeast, targetVsNaive}, Naive: nan, Inproc: nan},
		Row{ID: "applied", Label: "events applied/s by the aggregators, same window", Unit: UnitRate, Value: ing.appliedRate, Naive: nan, Inproc: nan},
		Row{ID: "max_lag", Label: "largest partition lag during the run, log entries", Unit: UnitCount, Lower: true, Value: float64(ing.maxLag), Naive: nan, Inproc: nan},
		Row{ID: "drain", Label: "time to apply the backlog of the saturated windows", Unit: UnitSeconds, Lower: true, Value: ing.drain.Seconds(), Naive: nan, Inproc: nan},
		Row{ID: "fresh_p50", Label: "freshness p50 (ack to visible in a query), freshness window", Unit: UnitSeconds, Lower: true,
			Value: ing.freshness.Seconds(50), Target: &Target{AtMost, targetFreshP50}, Naive: nan, Inproc: nan},
		Row{ID: "fresh_p99", Label: "freshness p99, freshness window", Unit: UnitSeconds, Lower: true,
			Value: ing.freshness.Seconds(99), Target: &Target{AtMost, targetFreshP99}, Naive: nan, Inproc: nan},
		Row{ID: "fresh_sat_p50", Label: "freshness p50 while saturated (measured window)", Unit: UnitSeconds, Lower: true, Value: ing.saturated.Seconds(50), Naive: nan, Inproc: nan},
		Row{ID: "fresh_sat_p99", Label: "freshness p99 while saturated (measured window)", Unit: UnitSeconds, Lower: true, Value: ing.saturated.Seconds(99), Naive: nan, Inproc: nan},
	)
}

// queryRows are each kind of query's latencies.
func (b *reportBuilder) queryRows() {
	nan := math.NaN()
	cq, ip, nv := b.cq, b.ip, b.nv
	for _, k := range b.kinds {
		for _, pc := range []float64{50, 99} {
			row := Row{ID: fmt.Sprintf("%s_p%.0f", k.id, pc), Label: fmt.Sprintf("%s p%.0f", k.label, pc), Unit: UnitSeconds, Lower: true, Value: nan, Naive: nan, Inproc: nan}
			if q := cq[k.id]; q != nil {
				row.Value = q.lat.Seconds(pc)
			}
			if nv != nil {
				if q := nv.queries[k.id]; q != nil {
					row.Naive = q.lat.Seconds(pc)
				}
			}
			if ip != nil {
				if q := ip.queries[k.id]; q != nil {
					row.Inproc = q.lat.Seconds(pc)
				}
			}
			switch {
			case pc == 99 && k.id == "count":
				row.Target = &Target{AtMost, targetCountP99}
			case pc == 99 && k.id == "top":
				row.Target = &Target{AtMost, targetTopP99}
			}
			b.rep.Rows = append(b.rep.Rows, row)
		}
		if k.top && k.long {
			// The p99 of repeated queries is the cached path's; the slowest
			// is the first of each window and filter, which adds the
			// window up and builds the partitions' cache entries.
			row := Row{ID: k.id + "_max", Label: k.label + ", slowest (the first query of a window and filter builds the cache)", Unit: UnitSeconds, Lower: true, Value: nan, Naive: nan, Inproc: nan}
			if q := cq[k.id]; q != nil {
				row.Value = q.lat.Seconds(100)
			}
			if ip != nil {
				if q := ip.queries[k.id]; q != nil {
					row.Inproc = q.lat.Seconds(100)
				}
			}
			b.rep.Rows = append(b.rep.Rows, row)
		}
	}
}

// memoryRows are keys, events and memory per key.
func (b *reportBuilder) memoryRows() {
	nan := math.NaN()
	ip := b.ip
	b.rep.Rows = append(b.rep.Rows,
		Row{ID: "keys", Label: "live (ad, minute) keys while querying", Unit: UnitCount, Value: b.keys,
			Target: &Target{AtLeast, targetKeys}, Naive: b.naiveKeys, Inproc: b.inKeys},
		Row{ID: "events", Label: "events ingested (duplicates and probes included)", Unit: UnitCount, Value: float64(b.events), Naive: b.naiveEvents, Inproc: b.inEvents},
		Row{ID: "rows_per_key", Label: "aggregator rows per live (ad, minute) key: counts by ad and by (ad, country) (package tally's accounting)", Unit: UnitBytes, Lower: true, Value: b.rowsPerKey,
			Target: &Target{AtMost, targetHeapPerKey}, Naive: b.naiveBytesPerKey, Inproc: nan},
		Row{ID: "filter_per_event", Label: "ip/user_id filter index per counted event, its own budget (package tally's accounting)", Unit: UnitBytes, Lower: true, Value: b.filterPerEvent,
			Naive: nan, Inproc: nan},
		Row{ID: "heap_per_key", Label: "aggregator heap per live (ad, minute) key: rows and filter index, dedup excluded (measured heap)", Unit: UnitBytes, Lower: true, Value: b.clusterHeapPerKey,
			Naive: b.naiveBytesPerKey, Inproc: b.inHeapPerKey},
		Row{ID: "heap_all_per_key", Label: "aggregator heap per live (ad, minute) key, dedup included", Unit: UnitBytes, Lower: true, Value: b.clusterHeapAllPerKey,
			Naive: b.naiveBytesPerKey, Inproc: ratio(ipState(ip), b.inKeys)},
		Row{ID: "dedup_per_id", Label: "dedup per remembered event_id, its own budget (package tally's accounting)", Unit: UnitBytes, Lower: true, Value: b.dedupPerID,
			Target: &Target{AtMost, targetDedupPerID}, Naive: nan, Inproc: nan},
	)
}

// snapshotRows are snapshot and recovery.
func (b *reportBuilder) snapshotRows() {
	nan := math.NaN()
	b.rep.Rows = append(b.rep.Rows,
		Row{ID: "snapshot_write", Label: fmt.Sprintf("full snapshot write, %s keys in %d partitions, %d at once", si(b.snapKeys), b.snapParts, saveParallelism()), Unit: UnitSeconds, Lower: true, Value: b.write, Naive: nan, Inproc: nan},
		Row{ID: "snapshot_write_10m", Label: "full snapshot write per 10M keys (linear)", Unit: UnitSeconds, Lower: true, Value: b.write10,
			Target: &Target{AtMost, targetSnapshotWrite}, Naive: nan, Inproc: nan},
		Row{ID: "snapshot_bytes_per_key", Label: "full snapshot bytes per (ad, minute) key", Unit: UnitBytes, Lower: true, Value: b.perKey, Naive: nan, Inproc: nan},
		Row{ID: "snapshot_incremental", Label: fmt.Sprintf("incremental snapshot write of the same %d partitions after one more minute of events", b.snapParts), Unit: UnitSeconds, Lower: true, Value: b.incr, Naive: nan, Inproc: nan},
		Row{ID: "recovery", Label: fmt.Sprintf("full recovery (claim, load, restore), %s keys, %d partitions at once", si(b.snapKeys), takeParallelism), Unit: UnitSeconds, Lower: true, Value: b.rec, Naive: nan, Inproc: nan},
		Row{ID: "recovery_10m", Label: "full recovery per 10M keys (linear)", Unit: UnitSeconds, Lower: true, Value: b.rec10,
			Target: &Target{AtMost, targetRecovery}, Naive: nan, Inproc: nan},
	)
}

// exactRows say whether the answers were exact.
func (b *reportBuilder) exactRows() {
	nan := math.NaN()
	cq, ip, nv := b.cq, b.ip, b.nv
	exactCluster := nan
	if ip != nil && b.targets.InProcess {
		same := true
		for _, k := range b.kinds {
			got, want := cq[k.id].answers, ip.reference[k.id]
			if len(got) != len(want) {
				same = false
				continue
			}
			for i := range got {
				if !got[i].equal(want[i]) {
					same = false
				}
			}
		}
		exactCluster = yesNo(same && ip.events == b.events)
	}
	exactNaive := nan
	if nv != nil {
		exactNaive = yesNo(nv.countedOK)
	}
	b.rep.Rows = append(b.rep.Rows,
		Row{ID: "exact_cluster", Label: "cluster answers equal the ground truth (in-process replay)", Unit: UnitYesNo, Value: exactCluster, Target: &Target{AtLeast, 1}, Naive: nan, Inproc: nan},
		Row{ID: "exact_recovery", Label: "recovered state answers exactly like the saved one", Unit: UnitYesNo, Value: b.exactRec, Target: &Target{AtLeast, 1}, Naive: nan, Inproc: nan},
		Row{ID: "exact_naive", Label: "naive baseline counted every event it was sent", Unit: UnitYesNo, Value: exactNaive, Naive: nan, Inproc: nan},
	)
}

// cpuNotes are about the measured window and who used the CPU.
func (b *reportBuilder) cpuNotes() {
	ing, cfg := b.ing, b.cfg
	b.note("The measured window is %s of ingest as fast as the cluster acknowledges: %d IngestStreams on their own connections, %d requests in flight each, %d events per request, requests encoded before they are sent.",
		ing.window.Round(time.Second), cfg.Streams, cfg.Inflight, cfg.Batch)
	if !math.IsNaN(ing.procCPU) {
		f := fmt.Sprintf("In the measured window this process (load generator, router, aggregator, queryd, coordinator, embedded etcd) used %.2f cores", ing.procCPU)
		if !math.IsNaN(ing.redisCPU) {
			f += fmt.Sprintf(" and the cluster's redis-server %.2f", ing.redisCPU)
		}
		b.note("%s, of %d.", f, runtime.NumCPU())
	}
	if l, m := ing.logMem, ing.redisMem; !math.IsNaN(l.slope) && !math.IsNaN(m.slope) {
		b.note("Redis memory, sampled each second for %.0f s from the measured window to the end of the load, while the cluster acknowledged %.0f clicks/s in the measured window: the partition logs (MEMORY USAGE of the streams) %.1f to %.1f MiB, a trend of %+.1f KiB/s (%+.2f B per acknowledged click); they are trimmed once archived and snapshotted (-aggregator.raw-retention=0), so they hold the archive's lag, not a retention. used_memory %.1f to %.1f MiB, a trend of %+.1f KiB/s: it also holds the snapshots, which grow with the aggregate state the load adds (distinct keys, up to -aggregator.retention), not with the raw clicks.",
			l.seconds, ing.rate, l.min/(1<<20), l.max/(1<<20), l.slope/1024, l.slope/ing.rate, m.min/(1<<20), m.max/(1<<20), m.slope/1024)
		peaks := make([]string, len(l.perMinute))
		for i, b := range l.perMinute {
			peaks[i] = fmt.Sprintf("%.0f", b/(1<<20))
		}
		b.note("The partition logs' largest size in each minute of that time, MiB: %s.", strings.Join(peaks, ", "))
	}
	if !math.IsNaN(ing.kernelCPU) && ing.kernelCPU > 0.01 {
		b.note("Kernel threads used %.2f cores in the measured window, largely writing and syncing the AOF (appendfsync) for redis-server.", ing.kernelCPU)
	}
	if !math.IsNaN(ing.stealCPU) && ing.stealCPU > 0.02 {
		b.note("The hypervisor took %.2f cores from this virtual machine in the measured window (steal time).", ing.stealCPU)
	}
	if b.targets.InProcess && ing.othersCPU > 0.1 {
		b.note("WARNING: other processes used %.2f cores of this machine during the measured window (load average %.1f when the run started); every figure is lower than this machine can do alone.", ing.othersCPU, b.loadAtStart)
	}
}

// pipelineNotes are about the aggregators, freshness and the keys reached.
func (b *reportBuilder) pipelineNotes() {
	ing, cfg := b.ing, b.cfg
	if ing.appliedRate < 0.95*ing.rate {
		b.note("The aggregators fell behind in the measured window: %s/s applied against %s/s acknowledged; the largest partition lag reached %d log entries (%.1f s) and the backlog took %s to apply once the load paused.",
			si(ing.appliedRate), si(ing.rate), ing.maxLag, ing.maxLagSec, ing.drain.Round(100*time.Millisecond))
	} else {
		b.note("The aggregators kept up: %s/s applied against %s/s acknowledged; the largest partition lag was %d log entries (%.1f s).",
			si(ing.appliedRate), si(ing.rate), ing.maxLag, ing.maxLagSec)
	}
	if ing.freshPaced < targetFreshRate {
		why := ""
		if math.Abs(cfg.FreshnessLoad-float64(targetFreshRate)/targetIngest) < 0.005 {
			why = fmt.Sprintf(", the ratio of the targets' %s/s of freshness load to their %s/s of capacity", si(targetFreshRate), si(targetIngest))
		}
		b.note("Freshness was measured at %s/s (paced at %.0f%% of the %s/s sustained in the measured window%s), not at the %s/s the target names, which this machine does not sustain. %d probes, polled every %s.",
			si(ing.freshRate), 100*cfg.FreshnessLoad, si(ing.rate), why, si(targetFreshRate), ing.freshness.N(), cfg.ProbePoll)
	} else {
		b.note("Freshness was measured at %s/s. %d probes, polled every %s.", si(ing.freshRate), ing.freshness.N(), cfg.ProbePoll)
	}
	if ing.forks > 0 {
		b.note("The cluster's redis-server forked %d times during the cluster run, each fork a child that rewrites the AOF: it serializes the whole dataset (the logs and the snapshots) on a core of its own and writes it to the disk that every fsynced append waits on.", ing.forks)
	}
	if ing.statusFailures > 0 {
		b.note("%d of the once-a-second GetClusterStatus calls failed or left partitions out (an aggregator answering status slower than -coordinator.status-timeout under load); the lag figures come from the others.", ing.statusFailures)
	}
	if ing.timeouts > 0 {
		b.note("%d probes were not visible within %s; they are counted with that latency.", ing.timeouts, probeTimeout)
	}
	if !math.IsNaN(b.keys) && b.keys < targetKeys {
		b.note("The key target (≥ %s live (ad, minute) keys) was not reached: %s keys from %s events ingested in %s, the load stopped by -bench.fill-timeout=%s. With %s ads of Zipf popularity (s = %.2f) a minute of n clicks holds far fewer than n distinct ads, so 10M keys over %d minutes take about 65M events; raise -bench.fill-timeout to get there. The query latencies above are at %s keys.",
			si(targetKeys), si(b.keys), si(float64(b.events)), time.Duration(float64(time.Second)*b.timelineEnd()).Round(time.Second), cfg.FillTimeout, si(float64(cfg.Workload.Ads)), cfg.Workload.ZipfS, int(cfg.Span/time.Minute), si(b.keys))
	}
}

// snapshotNotes are about snapshot and recovery.
func (b *reportBuilder) snapshotNotes() {
	ip := b.ip
	if ip != nil && !math.IsNaN(b.write) {
		b.note("Snapshot and recovery were measured on %d of the in-process replay's %d partitions (%s of its %s keys), against the bench's Redis, with the concurrency of an aggregator: %d saves in flight (GOMAXPROCS×2), each still one fenced Lua script, and %d partitions taken at once for recovery (claim, load, restore). The full write is every partition's first snapshot: %s in %d minute entries, %.0f bytes per key, almost all of it the per-event columns a minute keeps (the 8-byte hashes of each counted event's id, user and IP), not the counts. The per-10M rows scale it linearly.",
			ip.snapParts, b.partitions, si(b.snapKeys), si(b.keys), saveParallelism(), takeParallelism, formatBytes(float64(ip.snap.bytes)), ip.snap.whole, b.perKey)
		if ip.redisWriteBps > 0 {
			floor := b.perKey * perKeys / ip.redisWriteBps
			b.note("What bounds the full write is Redis, not the encoding: its one thread receives every byte, copies it into the keyspace and appends it to the AOF, which is fsynced before the save is acknowledged; a fenced save copies its arguments twice more (into Lua, then into Redis objects), so it goes slower still. Redis took in %s/s from big SETs through the same AOF, so %.0f bytes per key cannot be written faster than %s per 10M keys (bytes per key × keys ÷ that bandwidth), however the saves are encoded or scheduled. The %s target would need %s/s at this size: it needs fewer bytes per key (the per-event columns out of the snapshot, or the snapshot spread over time as minutes complete) rather than a faster write path.",
				formatBytes(ip.redisWriteBps), b.perKey, formatSeconds(floor), formatSeconds(targetSnapshotWrite), formatBytes(b.perKey*perKeys/targetSnapshotWrite))
		}
		b.note("In steady state a save writes only the minutes that changed since the last one: whole, except a complete minute that changed only by late events, of which it writes the late events since the store took it whole (its late part). After one more minute of the workload (%s events into these partitions, late clicks among them, which touch up to 10 earlier minutes), saving all %d partitions wrote %d minutes whole and %d late parts (%s of them), %s in all (%.1f%% of the full write), in %s.",
			si(float64(ip.incrEvents)), ip.snapParts, ip.incr.whole, ip.incr.late, formatBytes(float64(ip.incr.lateBytes)), formatBytes(float64(ip.incr.bytes)), 100*float64(ip.incr.bytes)/float64(ip.snap.bytes), formatSeconds(b.incr))
	}
	if ip != nil && !math.IsNaN(b.rec) && ip.recovery > 0 {
		redisPart := "Redis's CPU is unknown"
		if ip.recoveryRedisCPU >= 0 {
			redisPart = fmt.Sprintf("redis-server used %.2f cores (its one thread serves every HGETALL)", ip.recoveryRedisCPU/b.rec)
		}
		b.note("While recovering, this process used %.2f cores (reading the replies, decoding and restoring, %d partitions at once; its profile is below) and %s.",
			ip.recoveryCPU/b.rec, takeParallelism, redisPart)
	}
}

// workloadNotes are about the workload and the baselines.
func (b *reportBuilder) workloadNotes() {
	ing, ip, nv, cfg := b.ing, b.ip, b.nv, b.cfg
	dups, late := countKinds(b.run)
	b.note("The cluster dropped %d duplicates (the workload sent %d) and counted %d late events. The workload sent %d clicks 2–10 minutes behind the others; on-time clicks count as late too when they reach an aggregator after ticks have moved the watermark past their minute, which the sweep makes likelier than live traffic would: in the measured window it ran event time %.0f× faster than the clock, so a request that waited a second in flight was %.0f event-seconds old.",
		ing.duplicates, dups, ing.late, late, ing.sweepSpeed, ing.sweepSpeed)
	if nv != nil {
		f := fmt.Sprintf("The naive design counted %s events with %d concurrent pipelines of %d events (as many as the cluster's client keeps in flight); it has no dedup (it counted the duplicates too) and no country filter (—).", si(float64(nv.events)), cfg.Streams*cfg.Inflight, cfg.Batch)
		if !nv.complete {
			f += fmt.Sprintf(" It was stopped after -bench.naive-timeout=%s, so its memory and query figures are for fewer keys.", cfg.NaiveTimeout)
		}
		f += fmt.Sprintf(" Its top over the span is ZUNIONSTORE + ZREVRANGE, timed %d times.", nv.queries["top"].lat.N())
		b.note("%s", f)
	}
	if ip != nil {
		b.note("The in-process limit decodes the same events from their log encoding and counts them with package tally in one goroutine, no network: %s events in %s.", si(float64(ip.events)), time.Duration(float64(ip.events)/ip.rate*float64(time.Second)).Round(time.Millisecond))
	}
}

// settings describe the run.
func (b *reportBuilder) settings() {
	cfg, ing := b.cfg, b.ing
	b.rep.Settings = append(b.rep.Settings,
		Setting{"workload", fmt.Sprintf("%s ads (Zipf s = %.2f), %d countries, %s users, %s IPs, %.1f%% duplicates, %.1f%% late, seed %d",
			si(float64(cfg.Workload.Ads)), cfg.Workload.ZipfS, cfg.Workload.Countries, si(float64(cfg.Workload.Users)), si(float64(cfg.Workload.IPs)), 100*cfg.Workload.Duplicates, 100*cfg.Workload.Late, cfg.Workload.Seed)},
		Setting{"event time", fmt.Sprintf("click times sweep %s of event time, ending at %s, moving on as the workload adds distinct (ad, minute) keys: %s keys, an equal share per minute (-bench.keys)", cfg.Span, time.UnixMilli(b.spanEnd).UTC().Format("15:04 MST"), si(float64(cfg.Keys)))},
		Setting{"phases", fmt.Sprintf("warmup %s, measured %s, freshness %s, then %s more, as fast as acknowledged and CPU-profiled, to add keys", cfg.Warmup, cfg.Duration, cfg.FreshnessDuration, ing.fill.Round(time.Second))},
		Setting{"ingest clients", fmt.Sprintf("%d streams × %d in flight × %d events", cfg.Streams, cfg.Inflight, cfg.Batch)},
		Setting{"partitions", fmt.Sprint(b.partitions)},
		Setting{"GOMAXPROCS", fmt.Sprint(runtime.GOMAXPROCS(0))},
	)
	// The version says the commit too, and "-dirty" for uncommitted changes.
	if bi := buildinfo.Get(); bi.Revision != buildinfo.Unknown {
		b.rep.Settings = append(b.rep.Settings, Setting{"build", bi.Version + " (commit " + bi.Revision + ")"})
	}
	b.rep.Settings = append(b.rep.Settings, b.targets.Settings...)
}

func ipState(ip *inprocResult) float64 {
	if ip == nil {
		return math.NaN()
	}
	return ip.stateBytes
}

// countKinds counts the workload's duplicates and late events by replaying
// the generator: cheap next to everything else, and exact.
func countKinds(r *run) (dups, late int64) {
	g := NewGenerator(r.cfg.Workload, r.spanStart)
	for _, now := range r.batchTimes {
		for range r.cfg.Batch {
			switch g.Next(now).Kind {
			case Duplicate:
				dups++
			case Late:
				late++
			}
		}
	}
	return dups, late
}

func (r *run) timelineEnd() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	end := 0.0
	for _, s := range r.timeline.Spans {
		end = max(end, s.To)
	}
	return end
}

func slicesDeleteEmpty(s []string) []string {
	out := s[:0]
	for _, x := range s {
		if strings.TrimSpace(x) != "" {
			out = append(out, x)
		}
	}
	return out
}
