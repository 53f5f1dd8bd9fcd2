package histbench

import (
	"context"
	"testing"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/history"
)

// TestSmallHistory generates a small history and measures it: every
// count and the first top are checked against the truth inside Measure.
func TestSmallHistory(t *testing.T) {
	ctx := context.Background()
	b, err := archive.OpenBucket(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cfg := Config{Ads: 20_000, Partitions: 4, Days: 4, ClicksPerDay: 1e6, ZipfS: 1.1, Seed: 2, FirstDay: 20_400,
		CountDays: 3, TopDays: 2, TopN: 100, CountQueries: 50, TopQueries: 2}
	h, err := Generate(ctx, b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if h.Files != 16 || h.Rows < 16_000 {
		t.Fatalf("%d files, %d rows", h.Files, h.Rows)
	}
	res, err := h.Measure(ctx, history.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Count) != 50 || len(res.Top) != 2 {
		t.Fatalf("%d counts, %d tops timed", len(res.Count), len(res.Top))
	}
}
