package history_test

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/bench/histbench"
	"github.com/clickagg/clickagg/history"
)

var generated struct {
	once sync.Once
	dir  string
	h    *histbench.History
	b    *archive.Bucket
	err  error
}

// TestMain removes the benchmarks' history, if they made one.
func TestMain(m *testing.M) {
	code := m.Run()
	if generated.b != nil {
		generated.b.Close()
	}
	if generated.dir != "" {
		os.RemoveAll(generated.dir)
	}
	os.Exit(code)
}

// benchHistory is the history of histbench.Defaults (2M ads in 64
// partitions, 30 days of 1e9 clicks, about 250 MB of rollups), generated
// once per test binary in a temporary directory, or in
// CLICKAGG_HISTBENCH_DIR when set, which is kept and reused.
func benchHistory(b *testing.B) (*histbench.History, *archive.Bucket) {
	generated.once.Do(func() {
		ctx := context.Background()
		if dir := os.Getenv("CLICKAGG_HISTBENCH_DIR"); dir != "" {
			// Kept between runs: generated once, into an empty dir.
			if generated.b, generated.err = archive.OpenBucket(ctx, dir); generated.err != nil {
				return
			}
			if keys, _ := generated.b.List(ctx, "history-rollup/"); len(keys) > 0 {
				generated.h, generated.err = histbench.Open(histbench.Defaults())
				return
			}
		} else {
			if generated.dir, generated.err = os.MkdirTemp("", "clickagg-histbench-"); generated.err != nil {
				return
			}
			if generated.b, generated.err = archive.OpenBucket(ctx, generated.dir); generated.err != nil {
				return
			}
		}
		generated.h, generated.err = histbench.Generate(ctx, generated.b, histbench.Defaults())
	})
	if generated.err != nil {
		b.Fatal(generated.err)
	}
	return generated.h, generated.b
}

// BenchmarkHistoryCount30d times a count of one ad, drawn by popularity,
// over 30 whole days of the history at the bench's scale, from the
// directory store (rollups, one row group a day); it reports p50 and p99.
func BenchmarkHistoryCount30d(b *testing.B) {
	h, bucket := benchHistory(b)
	r := history.NewReader(bucket)
	var ds []time.Duration
	cfg := histbench.Defaults()
	zipf := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), cfg.ZipfS, 1, uint64(cfg.Ads-1))
	for b.Loop() {
		d, err := h.Count(context.Background(), r, int(zipf.Uint64()))
		if err != nil {
			b.Fatal(err)
		}
		ds = append(ds, d)
	}
	slices.Sort(ds)
	b.ReportMetric(float64(histbench.Quantile(ds, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(histbench.Quantile(ds, 0.99).Microseconds()), "p99-µs")
}

// BenchmarkHistoryTop100x7d times the top 100 over 7 whole days of all 64
// partitions; it reports p50.
func BenchmarkHistoryTop100x7d(b *testing.B) {
	h, bucket := benchHistory(b)
	r := history.NewReader(bucket)
	var ds []time.Duration
	first := true
	for b.Loop() {
		d, err := h.Top(context.Background(), r, first)
		if err != nil {
			b.Fatal(err)
		}
		first = false
		ds = append(ds, d)
	}
	slices.Sort(ds)
	b.ReportMetric(float64(histbench.Quantile(ds, 0.5).Milliseconds()), "p50-ms")
}
