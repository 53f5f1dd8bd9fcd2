//go:build !nobench

package cli

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/clickagg/clickagg/testsupport"
)

// TestBenchEndToEnd runs clickagg bench with tiny parameters against a
// cluster in this process and checks that the report has a number in every
// row, that the cluster's answers equal the in-process ground truth, and
// that the Markdown report and the chart are written.
func TestBenchEndToEnd(t *testing.T) {
	defer goleak.VerifyNone(t, benchLeakOptions()...)
	dir := t.TempDir()
	md := filepath.Join(dir, "docs", "benchmarks.md")
	args := []string{
		"-bench.warmup=0", "-bench.duration=1500ms", "-bench.profile=500ms", "-bench.freshness-duration=2s",
		"-bench.ads=2000", "-bench.keys=40000", "-bench.fill-timeout=30s", "-bench.users=5000", "-bench.ips=3000", "-bench.batch=100",
		"-bench.streams=2", "-bench.inflight=2", "-bench.probe-interval=20ms",
		"-bench.query-time=0", "-bench.query-min=3", "-bench.query-max=3", "-bench.naive-top-runs=1",
		"-bench.out=" + md, "-bench.view=off", "-bench.data-dir=" + filepath.Join(dir, "data"),
		"-cluster.partitions=8", "-aggregator.snapshot-interval=1s",
	}
	var out bytes.Buffer
	rep, err := benchMain(context.Background(), args, &out)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	want := []string{
		"ingest", "ingest_vs_naive", "applied", "max_lag", "drain", "fresh_p50", "fresh_p99", "fresh_sat_p50", "fresh_sat_p99",
		"count_p50", "count_p99", "count_country_p50", "count_country_p99", "top1_p50", "top1_p99", "top1_country_p50",
		"top1_country_p99", "top_p50", "top_p99", "top_max", "top_country_p50", "top_country_p99", "top_country_max", "keys", "events", "rows_per_key", "filter_per_event", "heap_per_key",
		"heap_all_per_key", "dedup_per_id", "snapshot_write", "snapshot_write_10m", "snapshot_bytes_per_key", "snapshot_incremental", "recovery", "recovery_10m",
		"exact_cluster", "exact_recovery", "exact_naive",
	}
	for _, id := range want {
		row, ok := rep.Row(id)
		switch {
		case !ok:
			t.Errorf("no row %s", id)
		case math.IsNaN(row.Value) || math.IsInf(row.Value, 0):
			t.Errorf("row %s (%s) has no number", id, row.Label)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out.String())
	}
	if len(rep.Rows) != len(want) {
		t.Errorf("%d rows, want %d", len(rep.Rows), len(want))
	}
	for _, id := range []string{"exact_cluster", "exact_recovery", "exact_naive"} {
		if row, _ := rep.Row(id); row.Value != 1 {
			t.Errorf("%s: %s", row.Label, row.Formatted())
		}
	}
	// The baselines counted the very events the cluster counted.
	events, _ := rep.Row("events")
	if events.Value != events.Naive || events.Value != events.Inproc {
		t.Errorf("events: cluster %v, naive %v, in-process %v", events.Value, events.Naive, events.Inproc)
	}
	keys, _ := rep.Row("keys")
	if keys.Value != keys.Naive || keys.Value <= 0 {
		t.Errorf("keys: %v, naive %v", keys.Value, keys.Naive)
	}

	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rep.Rows {
		line := "| " + strings.ReplaceAll(row.Label, "|", `\|`) + " | " + row.Formatted() + " |"
		if !strings.Contains(string(b), line) {
			t.Errorf("report lacks %q", line)
		}
	}
	svg, err := os.ReadFile(filepath.Join(dir, "docs", "benchmarks.svg"))
	if err != nil || !strings.Contains(string(svg), `<polyline id="acked"`) {
		t.Errorf("chart: %v\n%.300s", err, svg)
	}
	if !strings.Contains(out.String(), "figure") || !strings.Contains(out.String(), "report written to") {
		t.Errorf("output:\n%s", out.String())
	}
}

// benchLeakOptions are what goleak ignores after a bench test: what ran
// before it, and the goroutines that embedded etcd's libraries leave for
// the life of the process.
func benchLeakOptions() []goleak.Option {
	return append(testsupport.IgnoreDaemons(), goleak.IgnoreCurrent())
}

func TestBenchRefusesAUsedDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "left-over"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := benchMain(context.Background(), []string{"-bench.data-dir=" + dir, "-bench.view=off"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("err = %v, want one saying the data dir is not empty", err)
	}
}

// TestBenchSecurity runs clickagg bench -bench.security with tiny
// durations: three clusters, plaintext, mutual TLS, and TLS with
// authorization, each measured end to end (a client that dialled one of
// them wrongly would be refused and fail the run), and checks the
// section it writes: a row for each, with a rate and query latencies.
func TestBenchSecurity(t *testing.T) {
	defer goleak.VerifyNone(t, benchLeakOptions()...)
	dir := t.TempDir()
	md := filepath.Join(dir, "benchmarks.md")
	args := []string{
		"-bench.security", "-bench.warmup=0", "-bench.duration=1s", "-bench.freshness-duration=1s", "-bench.topology-rate=2000",
		"-bench.ads=2000", "-bench.users=5000", "-bench.ips=3000", "-bench.batch=100",
		"-bench.streams=2", "-bench.inflight=2", "-bench.probe-interval=20ms",
		"-bench.query-time=0", "-bench.query-min=3", "-bench.query-max=3",
		"-bench.out=" + md, "-bench.view=off", "-bench.data-dir=" + filepath.Join(dir, "data"),
		"-cluster.partitions=8",
	}
	var out bytes.Buffer
	if _, err := benchMain(context.Background(), args, &out); err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	report := string(b)
	if !strings.Contains(report, "## Cost of TLS and authorization") || !strings.Contains(report, "clickagg bench -bench.security") {
		t.Errorf("report:\n%s", report)
	}
	rows := map[string][]string{}
	for line := range strings.Lines(report) {
		cells := strings.Split(strings.TrimSpace(line), " | ")
		if len(cells) == 7 && strings.HasPrefix(cells[0], "| ") {
			rows[strings.TrimPrefix(cells[0], "| ")] = cells[1:]
		}
	}
	for _, name := range []string{"plaintext", "TLS", "TLS + authorization"} {
		cells, ok := rows[name]
		switch {
		case !ok:
			t.Errorf("no row %q in:\n%s", name, report)
			continue
		case strings.HasPrefix(cells[0], "0") || cells[0] == "NaN":
			t.Errorf("%s: acknowledged/s %q", name, cells[0])
		}
		for i, c := range cells[3:] {
			if !strings.Contains(c, " ms / ") {
				t.Errorf("%s: column %d is %q, want p50 / p99", name, 4+i, c)
			}
		}
	}
	t.Logf("report:\n%s\noutput:\n%s", report, out.String())
	if want := "| plaintext | "; !strings.Contains(report, want) || !strings.Contains(report, "| 1.00× |") {
		t.Errorf("report lacks the plaintext row at 1.00×:\n%s", report)
	}
}
