package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/bench/histbench"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
)

// HistoryResult is what RunHistory measured.
type HistoryResult struct {
	Started time.Time
	Command string

	// ArchiveEvents were encoded ArchiveRuns times into one archive file
	// of ArchiveBytes; ArchiveNs is the median time of a run.
	ArchiveEvents, ArchiveRuns int
	ArchiveBytes               int
	ArchiveNs                  []int64

	History    histbench.Config
	Gen        *histbench.History
	Runs       []histbench.Result
	Machine    Machine
	Elapsed    time.Duration
	Partitions int
}

// RunHistory measures what `clickagg bench -bench.history` reports: the
// archive's bytes and encoding time per event on the workload's events,
// and counts and tops over a synthetic history at the bench's scale
// (package histbench), in runs timed one after another. dir holds the
// history, written there first.
func RunHistory(ctx context.Context, cfg Config, hc histbench.Config, runs int, dir, command string, out io.Writer) (*HistoryResult, error) {
	res := &HistoryResult{Started: time.Now(), Command: command, History: hc, Machine: machine(ctx, nil, nil), Partitions: 64}
	fmt.Fprintf(out, "archive: encoding the workload's events of one partition\n")
	if err := res.measureArchive(cfg.Workload); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "archive: %.1f B/event, %.0f ns/event on one goroutine\n", res.ArchiveBytesPerEvent(), res.ArchiveNsPerEvent())
	b, err := archive.OpenBucket(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	fmt.Fprintf(out, "history: writing %d days of %d ads in %d partitions to %s\n", hc.Days, hc.Ads, hc.Partitions, dir)
	if res.Gen, err = histbench.Generate(ctx, b, hc); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "history: %d rollups, %s, %d rows, in %s\n", res.Gen.Files, formatBytes(float64(res.Gen.Bytes)), res.Gen.Rows, res.Gen.Took.Round(time.Second))
	for i := range runs {
		r, err := res.Gen.Measure(ctx, history.NewReader(b))
		if err != nil {
			return nil, err
		}
		res.Runs = append(res.Runs, r)
		fmt.Fprintf(out, "history run %d: count over %d days p50 %s p99 %s; top %d over %d days p50 %s\n", i+1,
			hc.CountDays, histbench.Quantile(r.Count, 0.5), histbench.Quantile(r.Count, 0.99), hc.TopN, hc.TopDays, histbench.Quantile(r.Top, 0.5))
	}
	res.Elapsed = time.Since(res.Started)
	return res, nil
}

// measureArchive encodes the events one partition's log holds when the
// workload's 500-event requests are spread over 64 partitions, as the
// router writes them, into one archive file, as the archiver does.
func (res *HistoryResult) measureArchive(w Workload) error {
	const events, runs = 50_000, 5
	parts, err := ring.NewPartitioner(res.Partitions)
	if err != nil {
		return err
	}
	names := Names{Tag: "bench"}
	start := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).UnixMilli()
	gen := NewGenerator(w, start)
	var entries []partlog.Entry
	n := 0
	now := start
	for n < events {
		le := &clickaggv1.LogEntry{RouterId: "bench"}
		for range 500 {
			e := names.LogEvent(gen.Next(now))
			if parts.Partition(e.AdId) == 0 {
				le.Events = append(le.Events, e)
			}
		}
		now += 10
		if len(le.Events) == 0 {
			continue
		}
		data, err := proto.Marshal(le)
		if err != nil {
			return err
		}
		entries = append(entries, partlog.Entry{ID: fmt.Sprintf("%d-0", now), Data: data})
		n += len(le.Events)
	}
	res.ArchiveEvents, res.ArchiveRuns = n, runs
	for range runs {
		t := time.Now()
		data, err := archive.EncodeEntries(0, "", entries)
		if err != nil {
			return err
		}
		res.ArchiveNs = append(res.ArchiveNs, time.Since(t).Nanoseconds())
		res.ArchiveBytes = len(data)
	}
	slices.Sort(res.ArchiveNs)
	return nil
}

// ArchiveBytesPerEvent is the archive file's bytes per event.
func (res *HistoryResult) ArchiveBytesPerEvent() float64 {
	return float64(res.ArchiveBytes) / float64(res.ArchiveEvents)
}

// ArchiveNsPerEvent is the median run's time per event, on one goroutine.
func (res *HistoryResult) ArchiveNsPerEvent() float64 {
	return float64(res.ArchiveNs[len(res.ArchiveNs)/2]) / float64(res.ArchiveEvents)
}

// Markers of the history section of the Markdown report, which
// -bench.history writes and a cluster run keeps.
const (
	historyBegin = "<!-- history: written by `clickagg bench -bench.history` -->"
	historyEnd   = "<!-- end of history -->"
)

// Markdown renders the history section, markers included.
func (res *HistoryResult) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	hc := res.History
	p("%s\n## History and archive\n\n", historyBegin)
	p("Measured %s, the run took %s, on the machine above (%s, %d cores).\n\n", res.Started.UTC().Format("2006-01-02 15:04 MST"), res.Elapsed.Round(time.Second), mdEscape(res.Machine.CPU), res.Machine.Cores)
	p("```sh\n%s\n```\n\n", res.Command)
	p("| figure | value | goal | verdict |\n|---|---|---|---|\n")
	verdict := func(met bool) string {
		if met {
			return "met"
		}
		return "missed"
	}
	bpe, npe := res.ArchiveBytesPerEvent(), res.ArchiveNsPerEvent()
	p("| archive bytes per event (zstd Parquet, %d events of one of 64 partitions) | %.1f B | ≤ 30 B | %s |\n", res.ArchiveEvents, bpe, verdict(bpe <= 30))
	p("| archive encoding per event, one core (decode the log entries, encode the file; median of %d) | %.0f ns, %s events/s per core | above the ingest rate | see the notes |\n", res.ArchiveRuns, npe, si(1e9/npe))
	for i, r := range res.Runs {
		c50, c99, t50 := histbench.Quantile(r.Count, 0.5), histbench.Quantile(r.Count, 0.99), histbench.Quantile(r.Top, 0.5)
		p("| run %d: count of one ad over %d days, p50 (%d queries) | %s |  |  |\n", i+1, hc.CountDays, len(r.Count), formatSeconds(c50.Seconds()))
		p("| run %d: count of one ad over %d days, p99 | %s | ≤ 50 ms | %s |\n", i+1, hc.CountDays, formatSeconds(c99.Seconds()), verdict(c99 <= 50*time.Millisecond))
		p("| run %d: top %d over %d days, p50 (%d queries) | %s | ≤ 1 s | %s |\n", i+1, hc.TopN, hc.TopDays, len(r.Top), formatSeconds(t50.Seconds()), verdict(t50 <= time.Second))
	}
	p("\n- History: %d ads (Zipf s = %.2f) in %d partitions, %d UTC days of %s clicks a day, each ad's clicks in a day drawn from a Poisson law of its Zipf share. Written through history.EncodeRollup to a directory bucket: %d daily rollups, %s, %s rows, in %s. Only the rollups are written: queries over whole days without a filter read nothing else, and the hourly files with a hash per click would be about 16 GB a day at this volume.\n",
		hc.Ads, hc.ZipfS, hc.Partitions, hc.Days, si(hc.ClicksPerDay), res.Gen.Files, formatBytes(float64(res.Gen.Bytes)), si(float64(res.Gen.Rows)), res.Gen.Took.Round(time.Second))
	p("- Counts draw the ad by popularity and read its partition's %d rollups through history.Reader.Sums, one row group a day; tops read every partition's %d rollups, one partition per core at a time, each partition's exact top %d, then topn.Merge, as an aggregator holding all %d partitions answers from the history. Every count and each run's first top equal the generator's ground truth.\n",
		hc.CountDays, hc.TopDays, hc.TopN, hc.Partitions)
	p("- The archive's events are the cluster bench's workload (-bench.* workload flags), 500-event requests spread over 64 partitions by the router's partitioner; one partition's entries encoded as the archiver encodes a chunk. %s events/s per core is the rate one core archives; an aggregator archives the partitions it holds on its cores beside counting.\n", si(1e9/npe))
	p("%s\n", historyEnd)
	return b.String()
}

// WriteHistorySection puts the history section into the Markdown report
// at mdPath, replacing the one there, or before the notes if there is
// none; the rest of the file is kept.
func (res *HistoryResult) WriteHistorySection(mdPath string) error {
	return writeSection(mdPath, historyBegin, historyEnd, res.Markdown())
}

// writeSection puts section, which has the markers begin and end, into
// the Markdown report at mdPath, replacing the one there, or before the
// notes if there is none; the rest of the file is kept.
func writeSection(mdPath, begin, end, section string) error {
	old, err := os.ReadFile(mdPath)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("read old report: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(mdPath), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(mdPath, []byte(withSection(string(old), begin, end, section)), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// withSection returns report with its section between the markers begin
// and end replaced by section (which has the markers), or with section
// put before the notes if report has none.
func withSection(report, begin, end, section string) string {
	if before, rest, ok := strings.Cut(report, begin); ok {
		if _, after, ok := strings.Cut(rest, end+"\n"); ok {
			return before + section + after
		}
	}
	if before, after, ok := strings.Cut(report, "## Notes\n"); ok {
		return before + section + "\n## Notes\n" + after
	}
	return report + "\n" + section
}

// keptSection returns the section between the markers begin and end of an
// earlier report, markers included, or "".
func keptSection(old, begin, end string) string {
	section, ok := between(old, begin, end)
	if !ok {
		return ""
	}
	return begin + section + end + "\n"
}
