package bench

import (
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
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

// report turns the measurements into rows and notes. ip and nv are nil
// when their baseline did not run.
func (r *run) report(started time.Time, ing *ingestResult, cq map[string]*queryResult, ip *inprocResult, nv *naiveResult, heapBefore, heapAfter uint64) *Report {
	nan := math.NaN()
	cfg := r.cfg
	rep := &Report{Started: started, Elapsed: time.Since(started), Command: r.targets.Command}
	probes := int64(len(r.probes))
	events := ing.events + probes

	naiveRate, naiveKeys, naiveEvents, naiveBytesPerKey := nan, nan, nan, nan
	if nv != nil {
		naiveRate, naiveKeys, naiveEvents = nv.rate, float64(nv.keys), float64(nv.events)
		naiveBytesPerKey = ratio(float64(nv.bytes), float64(nv.keys))
	}
	inRate, inKeys, inEvents, inHeapPerKey, dedupPerID, keys := nan, nan, nan, nan, nan, nan
	rowsPerKey, filterPerEvent := nan, nan
	if ip != nil {
		inRate, inKeys, inEvents = ip.rate, float64(ip.keys), float64(ip.events)
		inHeapPerKey = ratio(ip.stateBytes-float64(ip.mem.DedupBytes), float64(ip.keys))
		dedupPerID = ratio(float64(ip.mem.DedupBytes), float64(ip.mem.DedupIDs))
		rowsPerKey = ratio(float64(ip.mem.RowBytes), float64(ip.mem.Keys))
		filterPerEvent = ratio(float64(ip.mem.FilterBytes), float64(ip.mem.Events))
		keys = float64(ip.keys)
	} else {
		// The workload's own keys, as the producer counted them; the
		// probes' few are left out.
		keys = float64(ing.keys)
	}
	clusterHeapPerKey, clusterHeapAllPerKey := nan, nan
	if r.targets.InProcess {
		grown := float64(heapAfter) - float64(heapBefore)
		ids := float64(events - ing.duplicates)
		clusterHeapAllPerKey = ratio(grown, keys)
		clusterHeapPerKey = ratio(grown-dedupPerID*ids, keys)
	}

	rows := []Row{
		{ID: "ingest", Label: "ingest, events acknowledged/s (end to end, exactly-once on)", Unit: UnitRate, Value: ing.rate,
			Target: &Target{AtLeast, targetIngest}, Naive: naiveRate, Inproc: inRate},
		{ID: "ingest_vs_naive", Label: "ingest ÷ naive Redis ingest", Unit: UnitRatio, Value: ratio(ing.rate, naiveRate),
			Target: &Target{AtLeast, targetVsNaive}, Naive: nan, Inproc: nan},
		{ID: "applied", Label: "events applied/s by the aggregators, same window", Unit: UnitRate, Value: ing.appliedRate, Naive: nan, Inproc: nan},
		{ID: "max_lag", Label: "largest partition lag during the run, log entries", Unit: UnitCount, Lower: true, Value: float64(ing.maxLag), Naive: nan, Inproc: nan},
		{ID: "drain", Label: "time to apply the backlog of the saturated windows", Unit: UnitSeconds, Lower: true, Value: ing.drain.Seconds(), Naive: nan, Inproc: nan},
		{ID: "fresh_p50", Label: "freshness p50 (ack to visible in a query), freshness window", Unit: UnitSeconds, Lower: true,
			Value: ing.freshness.Seconds(50), Target: &Target{AtMost, targetFreshP50}, Naive: nan, Inproc: nan},
		{ID: "fresh_p99", Label: "freshness p99, freshness window", Unit: UnitSeconds, Lower: true,
			Value: ing.freshness.Seconds(99), Target: &Target{AtMost, targetFreshP99}, Naive: nan, Inproc: nan},
		{ID: "fresh_sat_p50", Label: "freshness p50 while saturated (measured window)", Unit: UnitSeconds, Lower: true, Value: ing.saturated.Seconds(50), Naive: nan, Inproc: nan},
		{ID: "fresh_sat_p99", Label: "freshness p99 while saturated (measured window)", Unit: UnitSeconds, Lower: true, Value: ing.saturated.Seconds(99), Naive: nan, Inproc: nan},
	}
	for _, k := range r.kinds {
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
			rows = append(rows, row)
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
			rows = append(rows, row)
		}
	}
	rows = append(rows,
		Row{ID: "keys", Label: "live (ad, minute) keys while querying", Unit: UnitCount, Value: keys,
			Target: &Target{AtLeast, targetKeys}, Naive: naiveKeys, Inproc: inKeys},
		Row{ID: "events", Label: "events ingested (duplicates and probes included)", Unit: UnitCount, Value: float64(events), Naive: naiveEvents, Inproc: inEvents},
		Row{ID: "rows_per_key", Label: "aggregator rows per live (ad, minute) key: counts by ad and by (ad, country) (package tally's accounting)", Unit: UnitBytes, Lower: true, Value: rowsPerKey,
			Target: &Target{AtMost, targetHeapPerKey}, Naive: naiveBytesPerKey, Inproc: nan},
		Row{ID: "filter_per_event", Label: "ip/user_id filter index per counted event, its own budget (package tally's accounting)", Unit: UnitBytes, Lower: true, Value: filterPerEvent,
			Naive: nan, Inproc: nan},
		Row{ID: "heap_per_key", Label: "aggregator heap per live (ad, minute) key: rows and filter index, dedup excluded (measured heap)", Unit: UnitBytes, Lower: true, Value: clusterHeapPerKey,
			Naive: naiveBytesPerKey, Inproc: inHeapPerKey},
		Row{ID: "heap_all_per_key", Label: "aggregator heap per live (ad, minute) key, dedup included", Unit: UnitBytes, Lower: true, Value: clusterHeapAllPerKey,
			Naive: naiveBytesPerKey, Inproc: ratio(ipState(ip), inKeys)},
		Row{ID: "dedup_per_id", Label: "dedup per remembered event_id, its own budget (package tally's accounting)", Unit: UnitBytes, Lower: true, Value: dedupPerID,
			Target: &Target{AtMost, targetDedupPerID}, Naive: nan, Inproc: nan},
	)
	snapKeys, snapParts := nan, 0
	write, rec, write10, rec10, exactRec := nan, nan, nan, nan, nan
	incr, perKey := nan, nan
	if ip != nil && r.targets.Redis != "" {
		snapKeys, snapParts = float64(ip.snapKeys), ip.snapParts
		write, rec = ip.snapWrite.Seconds(), ip.recovery.Seconds()
		write10, rec10 = write*perKeys/snapKeys, rec*perKeys/snapKeys
		incr, perKey = ip.incrWrite.Seconds(), ratio(float64(ip.snap.bytes), snapKeys)
		exactRec = yesNo(ip.recoveredSame)
	}
	rows = append(rows,
		Row{ID: "snapshot_write", Label: fmt.Sprintf("full snapshot write, %s keys in %d partitions, %d at once", si(snapKeys), snapParts, saveParallelism()), Unit: UnitSeconds, Lower: true, Value: write, Naive: nan, Inproc: nan},
		Row{ID: "snapshot_write_10m", Label: "full snapshot write per 10M keys (linear)", Unit: UnitSeconds, Lower: true, Value: write10,
			Target: &Target{AtMost, targetSnapshotWrite}, Naive: nan, Inproc: nan},
		Row{ID: "snapshot_bytes_per_key", Label: "full snapshot bytes per (ad, minute) key", Unit: UnitBytes, Lower: true, Value: perKey, Naive: nan, Inproc: nan},
		Row{ID: "snapshot_incremental", Label: fmt.Sprintf("incremental snapshot write of the same %d partitions after one more minute of events", snapParts), Unit: UnitSeconds, Lower: true, Value: incr, Naive: nan, Inproc: nan},
		Row{ID: "recovery", Label: fmt.Sprintf("full recovery (claim, load, restore), %s keys, %d partitions at once", si(snapKeys), takeParallelism), Unit: UnitSeconds, Lower: true, Value: rec, Naive: nan, Inproc: nan},
		Row{ID: "recovery_10m", Label: "full recovery per 10M keys (linear)", Unit: UnitSeconds, Lower: true, Value: rec10,
			Target: &Target{AtMost, targetRecovery}, Naive: nan, Inproc: nan},
	)
	exactCluster := nan
	if ip != nil && r.targets.InProcess {
		same := true
		for _, k := range r.kinds {
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
		exactCluster = yesNo(same && ip.events == events)
	}
	exactNaive := nan
	if nv != nil {
		exactNaive = yesNo(nv.countedOK)
	}
	rows = append(rows,
		Row{ID: "exact_cluster", Label: "cluster answers equal the ground truth (in-process replay)", Unit: UnitYesNo, Value: exactCluster, Target: &Target{AtLeast, 1}, Naive: nan, Inproc: nan},
		Row{ID: "exact_recovery", Label: "recovered state answers exactly like the saved one", Unit: UnitYesNo, Value: exactRec, Target: &Target{AtLeast, 1}, Naive: nan, Inproc: nan},
		Row{ID: "exact_naive", Label: "naive baseline counted every event it was sent", Unit: UnitYesNo, Value: exactNaive, Naive: nan, Inproc: nan},
	)
	rep.Rows = rows

	// Notes.
	note := func(format string, args ...any) { rep.Notes = append(rep.Notes, fmt.Sprintf(format, args...)) }
	note("The measured window is %s of ingest as fast as the cluster acknowledges: %d IngestStreams on their own connections, %d requests in flight each, %d events per request, requests encoded before they are sent.",
		ing.window.Round(time.Second), cfg.Streams, cfg.Inflight, cfg.Batch)
	if !math.IsNaN(ing.procCPU) {
		f := fmt.Sprintf("In the measured window this process (load generator, router, aggregator, queryd, coordinator, embedded etcd) used %.2f cores", ing.procCPU)
		if !math.IsNaN(ing.redisCPU) {
			f += fmt.Sprintf(" and the cluster's redis-server %.2f", ing.redisCPU)
		}
		note("%s, of %d.", f, runtime.NumCPU())
	}
	if l, m := ing.logMem, ing.redisMem; !math.IsNaN(l.slope) && !math.IsNaN(m.slope) {
		note("Redis memory, sampled each second for %.0f s from the measured window to the end of the load, while the cluster acknowledged %.0f clicks/s in the measured window: the partition logs (MEMORY USAGE of the streams) %.1f to %.1f MiB, a trend of %+.1f KiB/s (%+.2f B per acknowledged click); they are trimmed once archived and snapshotted (-aggregator.raw-retention=0), so they hold the archive's lag, not a retention. used_memory %.1f to %.1f MiB, a trend of %+.1f KiB/s: it also holds the snapshots, which grow with the aggregate state the load adds (distinct keys, up to -aggregator.retention), not with the raw clicks.",
			l.seconds, ing.rate, l.min/(1<<20), l.max/(1<<20), l.slope/1024, l.slope/ing.rate, m.min/(1<<20), m.max/(1<<20), m.slope/1024)
		peaks := make([]string, len(l.perMinute))
		for i, b := range l.perMinute {
			peaks[i] = fmt.Sprintf("%.0f", b/(1<<20))
		}
		note("The partition logs' largest size in each minute of that time, MiB: %s.", strings.Join(peaks, ", "))
	}
	if !math.IsNaN(ing.kernelCPU) && ing.kernelCPU > 0.01 {
		note("Kernel threads used %.2f cores in the measured window, largely writing and syncing the AOF (appendfsync) for redis-server.", ing.kernelCPU)
	}
	if !math.IsNaN(ing.stealCPU) && ing.stealCPU > 0.02 {
		note("The hypervisor took %.2f cores from this virtual machine in the measured window (steal time).", ing.stealCPU)
	}
	if r.targets.InProcess && ing.othersCPU > 0.1 {
		note("WARNING: other processes used %.2f cores of this machine during the measured window (load average %.1f when the run started); every figure is lower than this machine can do alone.", ing.othersCPU, r.loadAtStart)
	}
	if ing.appliedRate < 0.95*ing.rate {
		note("The aggregators fell behind in the measured window: %s/s applied against %s/s acknowledged; the largest partition lag reached %d log entries (%.1f s) and the backlog took %s to apply once the load paused.",
			si(ing.appliedRate), si(ing.rate), ing.maxLag, ing.maxLagSec, ing.drain.Round(100*time.Millisecond))
	} else {
		note("The aggregators kept up: %s/s applied against %s/s acknowledged; the largest partition lag was %d log entries (%.1f s).",
			si(ing.appliedRate), si(ing.rate), ing.maxLag, ing.maxLagSec)
	}
	if ing.freshPaced < targetFreshRate {
		why := ""
		if math.Abs(cfg.FreshnessLoad-float64(targetFreshRate)/targetIngest) < 0.005 {
			why = fmt.Sprintf(", the ratio of the targets' %s/s of freshness load to their %s/s of capacity", si(targetFreshRate), si(targetIngest))
		}
		note("Freshness was measured at %s/s (paced at %.0f%% of the %s/s sustained in the measured window%s), not at the %s/s the target names, which this machine does not sustain. %d probes, polled every %s.",
			si(ing.freshRate), 100*cfg.FreshnessLoad, si(ing.rate), why, si(targetFreshRate), ing.freshness.N(), cfg.ProbePoll)
	} else {
		note("Freshness was measured at %s/s. %d probes, polled every %s.", si(ing.freshRate), ing.freshness.N(), cfg.ProbePoll)
	}
	if ing.forks > 0 {
		note("The cluster's redis-server forked %d times during the cluster run, each fork a child that rewrites the AOF: it serializes the whole dataset (the logs and the snapshots) on a core of its own and writes it to the disk that every fsynced append waits on.", ing.forks)
	}
	if ing.statusFailures > 0 {
		note("%d of the once-a-second GetClusterStatus calls failed or left partitions out (an aggregator answering status slower than -coordinator.status-timeout under load); the lag figures come from the others.", ing.statusFailures)
	}
	if ing.timeouts > 0 {
		note("%d probes were not visible within %s; they are counted with that latency.", ing.timeouts, probeTimeout)
	}
	if !math.IsNaN(keys) && keys < targetKeys {
		note("The key target (≥ %s live (ad, minute) keys) was not reached: %s keys from %s events ingested in %s, the load stopped by -bench.fill-timeout=%s. With %s ads of Zipf popularity (s = %.2f) a minute of n clicks holds far fewer than n distinct ads, so 10M keys over %d minutes take about 65M events; raise -bench.fill-timeout to get there. The query latencies above are at %s keys.",
			si(targetKeys), si(keys), si(float64(events)), time.Duration(float64(time.Second)*r.timelineEnd()).Round(time.Second), cfg.FillTimeout, si(float64(cfg.Workload.Ads)), cfg.Workload.ZipfS, int(cfg.Span/time.Minute), si(keys))
	}
	if ip != nil && !math.IsNaN(write) {
		note("Snapshot and recovery were measured on %d of the in-process replay's %d partitions (%s of its %s keys), against the bench's Redis, with the concurrency of an aggregator: %d saves in flight (GOMAXPROCS×2), each still one fenced Lua script, and %d partitions taken at once for recovery (claim, load, restore). The full write is every partition's first snapshot: %s in %d minute entries, %.0f bytes per key, almost all of it the per-event columns a minute keeps (the 8-byte hashes of each counted event's id, user and IP), not the counts. The per-10M rows scale it linearly.",
			ip.snapParts, r.partitions, si(snapKeys), si(keys), saveParallelism(), takeParallelism, formatBytes(float64(ip.snap.bytes)), ip.snap.whole, perKey)
		if ip.redisWriteBps > 0 {
			floor := perKey * perKeys / ip.redisWriteBps
			note("What bounds the full write is Redis, not the encoding: its one thread receives every byte, copies it into the keyspace and appends it to the AOF, which is fsynced before the save is acknowledged; a fenced save copies its arguments twice more (into Lua, then into Redis objects), so it goes slower still. Redis took in %s/s from big SETs through the same AOF, so %.0f bytes per key cannot be written faster than %s per 10M keys (bytes per key × keys ÷ that bandwidth), however the saves are encoded or scheduled. The %s target would need %s/s at this size: it needs fewer bytes per key (the per-event columns out of the snapshot, or the snapshot spread over time as minutes complete) rather than a faster write path.",
				formatBytes(ip.redisWriteBps), perKey, formatSeconds(floor), formatSeconds(targetSnapshotWrite), formatBytes(perKey*perKeys/targetSnapshotWrite))
		}
		note("In steady state a save writes only the minutes that changed since the last one: whole, except a complete minute that changed only by late events, of which it writes the late events since the store took it whole (its late part). After one more minute of the workload (%s events into these partitions, late clicks among them, which touch up to 10 earlier minutes), saving all %d partitions wrote %d minutes whole and %d late parts (%s of them), %s in all (%.1f%% of the full write), in %s.",
			si(float64(ip.incrEvents)), ip.snapParts, ip.incr.whole, ip.incr.late, formatBytes(float64(ip.incr.lateBytes)), formatBytes(float64(ip.incr.bytes)), 100*float64(ip.incr.bytes)/float64(ip.snap.bytes), formatSeconds(incr))
	}
	if ip != nil && !math.IsNaN(rec) && ip.recovery > 0 {
		redisPart := "Redis's CPU is unknown"
		if ip.recoveryRedisCPU >= 0 {
			redisPart = fmt.Sprintf("redis-server used %.2f cores (its one thread serves every HGETALL)", ip.recoveryRedisCPU/rec)
		}
		note("While recovering, this process used %.2f cores (reading the replies, decoding and restoring, %d partitions at once; its profile is below) and %s.",
			ip.recoveryCPU/rec, takeParallelism, redisPart)
	}
	dups, late := countKinds(r)
	note("The cluster dropped %d duplicates (the workload sent %d) and counted %d late events. The workload sent %d clicks 2–10 minutes behind the others; on-time clicks count as late too when they reach an aggregator after ticks have moved the watermark past their minute, which the sweep makes likelier than live traffic would: in the measured window it ran event time %.0f× faster than the clock, so a request that waited a second in flight was %.0f event-seconds old.",
		ing.duplicates, dups, ing.late, late, ing.sweepSpeed, ing.sweepSpeed)
	if nv != nil {
		f := fmt.Sprintf("The naive design counted %s events with %d concurrent pipelines of %d events (as many as the cluster's client keeps in flight); it has no dedup (it counted the duplicates too) and no country filter (—).", si(float64(nv.events)), cfg.Streams*cfg.Inflight, cfg.Batch)
		if !nv.complete {
			f += fmt.Sprintf(" It was stopped after -bench.naive-timeout=%s, so its memory and query figures are for fewer keys.", cfg.NaiveTimeout)
		}
		f += fmt.Sprintf(" Its top over the span is ZUNIONSTORE + ZREVRANGE, timed %d times.", nv.queries["top"].lat.N())
		note("%s", f)
	}
	if ip != nil {
		note("The in-process limit decodes the same events from their log encoding and counts them with package tally in one goroutine, no network: %s events in %s.", si(float64(ip.events)), time.Duration(float64(ip.events)/ip.rate*float64(time.Second)).Round(time.Millisecond))
	}
	rep.Notes = slicesDeleteEmpty(rep.Notes)

	rep.Settings = append(rep.Settings,
		Setting{"workload", fmt.Sprintf("%s ads (Zipf s = %.2f), %d countries, %s users, %s IPs, %.1f%% duplicates, %.1f%% late, seed %d",
			si(float64(cfg.Workload.Ads)), cfg.Workload.ZipfS, cfg.Workload.Countries, si(float64(cfg.Workload.Users)), si(float64(cfg.Workload.IPs)), 100*cfg.Workload.Duplicates, 100*cfg.Workload.Late, cfg.Workload.Seed)},
		Setting{"event time", fmt.Sprintf("click times sweep %s of event time, ending at %s, moving on as the workload adds distinct (ad, minute) keys: %s keys, an equal share per minute (-bench.keys)", cfg.Span, time.UnixMilli(r.spanEnd).UTC().Format("15:04 MST"), si(float64(cfg.Keys)))},
		Setting{"phases", fmt.Sprintf("warmup %s, measured %s, freshness %s, then %s more, as fast as acknowledged and CPU-profiled, to add keys", cfg.Warmup, cfg.Duration, cfg.FreshnessDuration, ing.fill.Round(time.Second))},
		Setting{"ingest clients", fmt.Sprintf("%d streams × %d in flight × %d events", cfg.Streams, cfg.Inflight, cfg.Batch)},
		Setting{"partitions", fmt.Sprint(r.partitions)},
		Setting{"GOMAXPROCS", fmt.Sprint(runtime.GOMAXPROCS(0))},
	)
	if rev := buildRevision(); rev != "" {
		rep.Settings = append(rep.Settings, Setting{"build", rev})
	}
	rep.Settings = append(rep.Settings, r.targets.Settings...)
	return rep
}

// buildRevision is the commit the binary was built from, as the Go
// toolchain recorded it, and whether the tree had uncommitted changes; ""
// when it recorded none (-buildvcs=false).
func buildRevision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	rev, modified := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev != "" && modified {
		rev += " with uncommitted changes"
	}
	return rev
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
