package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// SteadyResult is what RunSteady measured: the cluster Redis's memory,
// once a second, while clicks arrive at one steady rate for a long time.
type SteadyResult struct {
	Started  time.Time
	Command  string
	Settings []Setting
	Machine  Machine
	// Rate is the pace asked for, in events per second; Warmup is the
	// start of the run left out of the verdict, while the logs fill to
	// their level (one to two archive intervals).
	Rate     float64
	Duration time.Duration
	Warmup   time.Duration
	// LoadStart is when the paced load began; the samples' At counts from
	// it.
	LoadStart time.Time
	Samples   []SteadySample
}

// SteadySample is the cluster Redis at one second of the run.
type SteadySample struct {
	At    float64 // seconds since the paced load started
	Acked int64   // events acknowledged so far
	// Used is Redis's used_memory; Logs is the MEMORY USAGE of every
	// partition log; Entries is their length summed, and Added the
	// entries ever appended to them (XINFO entries-added) summed.
	Used, Logs     float64
	Entries, Added int64
	// OldestAge is the age of the oldest entry any log still holds: how
	// much of the log Redis keeps, whatever keeps it (the archive's lag,
	// the snapshots' interval).
	OldestAge float64
}

// SteadyMinute sums up one minute of a steady run.
type SteadyMinute struct {
	// Start and End are its first and last sample's At.
	Start, End    float64
	Rate          float64 // events acknowledged per second
	LogsPeak      float64 // bytes
	LogsMean      float64
	UsedPeak      float64
	OldestAgePeak float64 // seconds
}

// RunSteady paces the workload at cfg.SteadyRate events per second into
// the cluster at t for cfg.Steady, with click times at the clock (the way
// production traffic arrives), and samples t.ClusterRedis once a second.
// With the raw archive on, the partition logs hold only what is not yet
// archived and snapshotted, so their memory must level off however long
// ingest runs; untrimmed, it would grow by every click's bytes.
func RunSteady(ctx context.Context, cfg Config, t Targets, out io.Writer) (*SteadyResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if t.ClusterRedis == "" {
		return nil, errors.New("bench: the steady run needs the cluster's Redis (-bench.cluster-redis)")
	}
	rdb := redis.NewClient(&redis.Options{Addr: t.ClusterRedis, Password: t.ClusterRedisPassword})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("cluster redis %s: %w", t.ClusterRedis, err)
	}
	res := &SteadyResult{Started: time.Now(), Command: t.Command, Settings: t.Settings, Machine: machine(ctx, rdb, nil),
		Rate: float64(cfg.SteadyRate), Duration: cfg.Steady, Warmup: cfg.SteadyWarmup}
	streams, err := steadyReady(ctx, t, rdb, out)
	if err != nil {
		return nil, err
	}
	conns, err := t.dialStreams(cfg.Streams)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var acked, retries atomic.Int64
	start := time.Now()
	res.LoadStart = start
	next := pacedAtClock(clockGenerator(cfg.Workload, start), start, cfg.SteadyRate, cfg.Steady)
	loadDone := make(chan error, 1)
	go func() { loadDone <- load(ctx, cfg, Names{Tag: "steady"}, conns, &acked, &retries, next, nil) }()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if err := res.sample(ctx, rdb, streams, start, &acked, out); err != nil {
			return nil, err
		}
		select {
		case err := <-loadDone:
			if err != nil {
				return nil, fmt.Errorf("bench: steady load: %w", err)
			}
			if want := int64(cfg.Steady.Seconds() * float64(cfg.SteadyRate)); acked.Load() < want*9/10 {
				return res, fmt.Errorf("bench: %d events acknowledged at the end of the steady run, %d paced: the cluster did not sustain -bench.steady-rate", acked.Load(), want)
			}
			return res, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// steadyReady waits until the cluster at t serves every partition, and
// returns the keys of its partition logs in rdb.
func steadyReady(ctx context.Context, t Targets, rdb *redis.Client, out io.Writer) ([]string, error) {
	cconn, err := t.dial(t.Coordinator)
	if err != nil {
		return nil, fmt.Errorf("dial coordinator: %w", err)
	}
	defer cconn.Close()
	r := &run{coord: clickaggv1.NewCoordinatorServiceClient(cconn)}
	fmt.Fprintln(out, "steady: waiting for every partition to be served")
	if _, err := r.waitServing(ctx); err != nil {
		return nil, err
	}
	streams, err := logKeys(ctx, rdb)
	if err != nil {
		return nil, err
	}
	if len(streams) == 0 {
		return nil, errors.New("bench: the cluster's Redis holds no partition log (*}:log)")
	}
	return streams, nil
}

// sample adds a sample of the logs' memory and of the events acked has
// counted since start, and shows it.
func (res *SteadyResult) sample(ctx context.Context, rdb *redis.Client, streams []string, start time.Time, acked *atomic.Int64, out io.Writer) error {
	s, err := sampleLogs(ctx, rdb, streams)
	if err != nil {
		return err
	}
	s.At, s.Acked = time.Since(start).Seconds(), acked.Load()
	res.Samples = append(res.Samples, s)
	if n := len(res.Samples); n > 1 {
		prev := res.Samples[n-2]
		fmt.Fprintf(out, "[%4.0fs] steady: acked %s/s, logs %s (oldest entry %.0fs), used_memory %s\n", s.At,
			si(float64(s.Acked-prev.Acked)/(s.At-prev.At)), formatBytes(s.Logs), s.OldestAge, formatBytes(s.Used))
	}
	return nil
}

// logKeys returns the keys of the partition logs.
func logKeys(ctx context.Context, rdb *redis.Client) ([]string, error) {
	var keys []string
	iter := rdb.Scan(ctx, 0, "*}:log", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}

// sampleLogs reads used_memory and, in one pipeline, each log's memory and
// XINFO STREAM. MEMORY USAGE counts every node of a stream (SAMPLES 0),
// not its default estimate from 5 of them.
func sampleLogs(ctx context.Context, rdb *redis.Client, streams []string) (SteadySample, error) {
	var s SteadySample
	v, err := infoField(ctx, rdb, "memory", "used_memory")
	if err != nil {
		return s, err
	}
	if _, err := fmt.Sscan(v, &s.Used); err != nil {
		return s, fmt.Errorf("used_memory %q: %w", v, err)
	}
	pipe := rdb.Pipeline()
	mem := make([]*redis.IntCmd, len(streams))
	info := make([]*redis.XInfoStreamCmd, len(streams))
	for i, k := range streams {
		mem[i] = pipe.MemoryUsage(ctx, k, 0)
		info[i] = pipe.XInfoStream(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return s, fmt.Errorf("sample the partition logs: %w", err)
	}
	now := time.Now().UnixMilli()
	for i := range streams {
		s.Logs += float64(mem[i].Val())
		in := info[i].Val()
		s.Entries += in.Length
		s.Added += in.EntriesAdded
		if in.Length > 0 {
			s.OldestAge = max(s.OldestAge, float64(now-idMillis(in.FirstEntry.ID))/1000)
		}
	}
	return s, nil
}

// idMillis is the time part of a stream ID.
func idMillis(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	var v int64
	_, _ = fmt.Sscan(ms, &v)
	return v
}

// Minutes sums up each whole minute of the clock the run covered: the
// archive's intervals are aligned to the clock, so each holds one trim of
// every log, and its peak is the log just before it.
func (res *SteadyResult) Minutes() []SteadyMinute {
	var out []SteadyMinute
	off := float64(res.LoadStart.UnixMilli()%60_000) / 1000 // seconds into its minute the load started
	for i := 0; i < len(res.Samples); {
		m := math.Floor((off + res.Samples[i].At) / 60)
		j := i
		var cur SteadyMinute
		for ; j < len(res.Samples) && math.Floor((off+res.Samples[j].At)/60) == m; j++ {
			s := res.Samples[j]
			cur.LogsPeak, cur.UsedPeak = max(cur.LogsPeak, s.Logs), max(cur.UsedPeak, s.Used)
			cur.LogsMean += s.Logs
			cur.OldestAgePeak = max(cur.OldestAgePeak, s.OldestAge)
		}
		first, last := res.Samples[i], res.Samples[j-1]
		// A minute the run covered only in part is not a minute's peak.
		if last.At-first.At >= 50 {
			cur.LogsMean /= float64(j - i)
			cur.Rate = float64(last.Acked-first.Acked) / (last.At - first.At)
			cur.Start, cur.End = first.At, last.At
			out = append(out, cur)
		}
		i = j
	}
	return out
}

// BytesPerEvent is what one acknowledged event takes in the logs, from the
// samples after warm-up: their memory over the events they hold (entries
// held times events per entry appended during the run).
func (res *SteadyResult) BytesPerEvent() float64 {
	ss := res.steady()
	if len(ss) < 2 {
		return math.NaN()
	}
	first, last := res.Samples[0], res.Samples[len(res.Samples)-1]
	perEntry := float64(last.Acked-first.Acked) / float64(last.Added-first.Added)
	var bytes, events float64
	for _, s := range ss {
		bytes += s.Logs
		events += float64(s.Entries) * perEntry
	}
	return bytes / events
}

// steady returns the samples after warm-up.
func (res *SteadyResult) steady() []SteadySample {
	for i, s := range res.Samples {
		if s.At >= res.Warmup.Seconds() {
			return res.Samples[i:]
		}
	}
	return nil
}

// PeakSlope is how the logs' per-minute peaks after warm-up move: the
// least-squares slope in bytes per minute; NaN with fewer than two.
func (res *SteadyResult) PeakSlope() float64 {
	var ss []memSample
	for i, m := range res.Minutes() {
		if m.End > res.Warmup.Seconds() {
			ss = append(ss, memSample{at: float64(i), bytes: m.LogsPeak})
		}
	}
	if len(ss) < 2 {
		return math.NaN()
	}
	return trendOf(ss).slope
}

// UntrimmedPerMinute is what the logs would grow by each minute if they
// kept every click, at the run's acknowledged rate after warm-up.
func (res *SteadyResult) UntrimmedPerMinute() float64 {
	ss := res.steady()
	if len(ss) < 2 {
		return math.NaN()
	}
	first, last := ss[0], ss[len(ss)-1]
	rate := float64(last.Acked-first.Acked) / (last.At - first.At)
	return rate * 60 * res.BytesPerEvent()
}

// Flat says whether the logs leveled off: their per-minute peaks after
// warm-up move by less than a tenth of what untrimmed logs would grow by.
func (res *SteadyResult) Flat() bool {
	s, u := res.PeakSlope(), res.UntrimmedPerMinute()
	return !math.IsNaN(s) && !math.IsNaN(u) && math.Abs(s) < u/10
}

// Markers of the steady section of the Markdown report, which
// -bench.steady writes and the other runs keep.
const (
	steadyBegin = "<!-- steady: written by `clickagg bench -bench.steady` -->"
	steadyEnd   = "<!-- end of steady -->"
)

// Markdown renders the steady section, markers included.
func (res *SteadyResult) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	mib := func(v float64) string { return fmt.Sprintf("%.0f", v/(1<<20)) }
	p("%s\n## Redis memory at steady ingest\n\n", steadyBegin)
	p("Measured %s on the machine above (%s, %d cores).\n\n", res.Started.UTC().Format("2006-01-02 15:04 MST"), mdEscape(res.Machine.CPU), res.Machine.Cores)
	p("```sh\n%s\n```\n\n", res.Command)
	for _, s := range res.Settings {
		p("- %s: %s\n", s.Name, mdEscape(s.Value))
	}
	verdict := "missed"
	if res.Flat() {
		verdict = "met"
	}
	slope, untrimmed := res.PeakSlope(), res.UntrimmedPerMinute()
	p("\n| figure | value | goal | verdict |\n|---|---|---|---|\n")
	p("| partition logs' per-minute peaks after %s of warm-up, trend | %+.1f MiB/min | flat: under a tenth of an untrimmed log's growth, %.0f MiB/min | %s |\n",
		res.Warmup, slope/(1<<20), untrimmed/(1<<20), verdict)
	p("| partition logs per acknowledged event held | %.1f B |  |  |\n", res.BytesPerEvent())
	p("\n| minute (UTC) | acknowledged/s | logs, peak MiB | logs, mean MiB | oldest entry in the logs, s | used_memory, peak MiB |\n|---|---|---|---|---|---|\n")
	for _, m := range res.Minutes() {
		at := res.LoadStart.Add(time.Duration(m.Start * float64(time.Second))).UTC()
		p("| %s | %s | %s | %s | %.0f | %s |\n", at.Format("15:04"), si(m.Rate), mib(m.LogsPeak), mib(m.LogsMean), m.OldestAgePeak, mib(m.UsedPeak))
	}
	p("\n- The load: the workload's events (-bench.* workload flags) paced at %s/s for %s, click times at the clock, 1%% duplicates and 1%% late as in the cluster run. Redis was sampled once a second: MEMORY USAGE and XINFO STREAM of every partition log, and used_memory.\n", si(res.Rate), res.Duration)
	p("- The logs are trimmed below both the archived and the snapshotted offset, so they hold what is not yet in both: about one -archive.interval (a file holds one interval's entries, written once the next interval has begun), plus the write and the next snapshot. Their peak level is the ingest rate times that time, not a retention: kept for -aggregator.raw-retention=24h, they would hold 24 hours of clicks.\n")
	p("- used_memory also holds the snapshots: the aggregate state of every minute still in memory (-aggregator.retention), which grows with the distinct (ad, minute) keys the clicks add until minutes reach that retention, not with the raw clicks.\n")
	p("%s\n", steadyEnd)
	return b.String()
}

// WriteSteadySection puts the steady section into the Markdown report at
// mdPath, replacing the one there, or before the notes if there is none.
func (res *SteadyResult) WriteSteadySection(mdPath string) error {
	return writeSection(mdPath, steadyBegin, steadyEnd, res.Markdown())
}
