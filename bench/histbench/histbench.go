// Package histbench measures queries over the history at the bench's
// scale: it writes a synthetic history of many days into a bucket through
// the history package's own encoder, and times counts of one ad and
// popular-ads queries over it, the way the aggregators read the history
// (history.View.Sums per partition, topn.Merge across them). Both the Go
// benchmarks of package history and `clickagg bench -bench.history` use it.
//
// # What is generated
//
// Only what the queries need at full fidelity: the daily rollups, which
// serve every query over whole UTC days without a filter. The hourly
// period files, with a hash per click, are not written: at the default
// 1e9 clicks a day they would be 16 GB a day of hashes, and a query over
// whole days does not open them. Each ad's clicks in a day are drawn from
// a Poisson law whose mean is its Zipf share of the day's clicks, so the
// rollups hold the rows a real day of that volume would: one per ad with
// clicks that day (nearly every ad at 1e9 a day).
//
// Every answer timed is checked against the generator's ground truth,
// which it recomputes by drawing the same numbers again.
package histbench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/topn"
)

// Config is a synthetic history and the queries measured over it.
type Config struct {
	Ads, Partitions, Days int
	// ClicksPerDay is the mean of a day's clicks over all ads.
	ClicksPerDay float64
	ZipfS        float64
	Seed         uint64
	// FirstDay is the first UTC day (Unix minute / 1440).
	FirstDay int64

	// CountDays is the window of a count of one ad, TopDays of a top
	// TopN; both end with the history's last day.
	CountDays, TopDays, TopN int
	// CountQueries and TopQueries are how many of each are timed.
	CountQueries, TopQueries int
}

// Defaults is the scale: 2M ads in 64 partitions, 30 days of 1e9
// clicks (11.6k/s on average) with Zipf s = 1.1 popularity, as in the
// cluster bench's workload; counts over 30 days and the top 100 over 7.
func Defaults() Config {
	return Config{Ads: 2_000_000, Partitions: 64, Days: 30, ClicksPerDay: 1e9, ZipfS: 1.1, Seed: 1, FirstDay: 20_400,
		CountDays: 30, TopDays: 7, TopN: 100, CountQueries: 400, TopQueries: 5}
}

// Validate checks c.
func (c Config) Validate() error {
	switch {
	case c.Ads < 2 || c.Partitions < 1 || c.Days < 1 || c.ClicksPerDay <= 0 || c.ZipfS <= 1:
		return fmt.Errorf("histbench: %d ads, %d partitions, %d days, %g clicks a day, zipf s %g", c.Ads, c.Partitions, c.Days, c.ClicksPerDay, c.ZipfS)
	case c.CountDays < 1 || c.CountDays > c.Days || c.TopDays < 1 || c.TopDays > c.Days || c.TopN < 1:
		return fmt.Errorf("histbench: windows of %d and %d days over %d, top %d", c.CountDays, c.TopDays, c.Days, c.TopN)
	}
	return nil
}

// History is a generated history.
type History struct {
	cfg Config
	// ads[p] are partition p's ad ranks (0 the most popular), in ad_id
	// order; part[k] is rank k's partition.
	ads  [][]int32
	part []int32
	mean []float64 // by rank: mean clicks a day

	Files int
	Bytes int64
	Rows  int64
	Took  time.Duration
}

// AdID is the ad_id of the ad of popularity rank k.
func AdID(k int) string { return fmt.Sprintf("ad-%07d", k) }

// Generate writes cfg's history into b (meant to be empty) and returns it.
func Generate(ctx context.Context, b *archive.Bucket, cfg Config) (*History, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	h, err := Open(cfg)
	if err != nil {
		return nil, err
	}
	var bytes, rows atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for p := range cfg.Partitions {
		names := make([]string, len(h.ads[p]))
		for i, k := range h.ads[p] {
			names[i] = AdID(int(k))
		}
		for d := range cfg.Days {
			g.Go(func() error {
				day := cfg.FirstDay + int64(d)
				clicks := h.clicks(p, day)
				out := make([]history.RollupRow, 0, len(clicks))
				for i, n := range clicks {
					if n > 0 {
						out = append(out, history.RollupRow{AdID: names[i], Clicks: n})
					}
				}
				data, err := history.EncodeRollup(p, day, hours(p, day), out)
				if err != nil {
					return err
				}
				if err := b.Put(gctx, history.RollupKey(p, day), data); err != nil {
					return err
				}
				bytes.Add(int64(len(data)))
				rows.Add(int64(len(out)))
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("generate history: %w", err)
	}
	h.Files, h.Bytes, h.Rows, h.Took = cfg.Partitions*cfg.Days, bytes.Load(), rows.Load(), time.Since(start)
	return h, nil
}

// Open returns the history Generate writes for cfg, without writing it:
// for a bucket that holds it already.
func Open(cfg Config) (*History, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &History{cfg: cfg, ads: make([][]int32, cfg.Partitions), part: make([]int32, cfg.Ads), mean: make([]float64, cfg.Ads)}
	var norm float64
	for k := range cfg.Ads {
		norm += math.Pow(float64(k+1), -cfg.ZipfS)
	}
	// Ranks are appended in order, and ad_ids of one width sort like them.
	for k := range cfg.Ads {
		h.mean[k] = cfg.ClicksPerDay * math.Pow(float64(k+1), -cfg.ZipfS) / norm
		p := int32(xxhash.Sum64String(AdID(k)) % uint64(cfg.Partitions))
		h.part[k] = p
		h.ads[p] = append(h.ads[p], int32(k))
	}
	return h, nil
}

// hours are the period files a rollup of day says it summed: the 24
// hours of revision 0, which a reader with no revision applied serves.
func hours(p int, day int64) []history.Name {
	out := make([]history.Name, 24)
	for i := range out {
		from := day*1440 + int64(i)*60
		out[i] = history.Name{Partition: p, From: from, To: from + 60}
	}
	return out
}

// clicks draws partition p's clicks of day, by ad in ad_id order: the
// same numbers on every call.
func (h *History) clicks(p int, day int64) []int64 {
	r := rand.New(rand.NewPCG(h.cfg.Seed, uint64(day)<<16|uint64(p)))
	out := make([]int64, len(h.ads[p]))
	for i, k := range h.ads[p] {
		out[i] = poisson(r, h.mean[k])
	}
	return out
}

// poisson draws from a Poisson law of mean m: by Knuth's products below
// 30, by its normal approximation above.
func poisson(r *rand.Rand, m float64) int64 {
	if m >= 30 {
		return max(0, int64(math.Round(m+math.Sqrt(m)*r.NormFloat64())))
	}
	l, k, prod := math.Exp(-m), int64(0), r.Float64()
	for prod > l {
		k++
		prod *= r.Float64()
	}
	return k
}

// Result is what Measure timed, each answer checked.
type Result struct {
	Count []time.Duration // one per count, sorted
	Top   []time.Duration // one per top, sorted
}

// Quantile returns the q-quantile of sorted ds (nearest rank).
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(len(ds)-1, int(math.Ceil(q*float64(len(ds))))-1)]
}

// Count times one count of the ad of rank k over the last CountDays days
// and checks it.
func (h *History) Count(ctx context.Context, r *history.Reader, k int) (time.Duration, error) {
	p := int(h.part[k])
	last := h.cfg.FirstDay + int64(h.cfg.Days)
	from, to := (last-int64(h.cfg.CountDays))*1440, last*1440
	ad := AdID(k)
	start := time.Now()
	sums, err := r.Sums(ctx, p, from, to, history.Filter{}, ad)
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	i := sort.Search(len(h.ads[p]), func(i int) bool { return AdID(int(h.ads[p][i])) >= ad })
	var want int64
	for day := last - int64(h.cfg.CountDays); day < last; day++ {
		want += h.clicks(p, day)[i]
	}
	if sums[ad] != want || len(sums) > 1 {
		return 0, fmt.Errorf("count of %s over %d days: %d, truth %d", ad, h.cfg.CountDays, sums[ad], want)
	}
	return took, nil
}

// Top times the top TopN over the last TopDays days, as an aggregator
// holding every partition answers it from the history: each partition's
// sums, one partition per core at a time, its exact top n, one merge.
// check compares it with the ground truth.
func (h *History) Top(ctx context.Context, r *history.Reader, check bool) (time.Duration, error) {
	last := h.cfg.FirstDay + int64(h.cfg.Days)
	from, to := (last-int64(h.cfg.TopDays))*1440, last*1440
	n := h.cfg.TopN
	start := time.Now()
	lists := make([][]topn.AdCount, h.cfg.Partitions)
	view := r.View()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for p := range h.cfg.Partitions {
		g.Go(func() error {
			sums, err := view.AdSums(gctx, p, from, to, history.Filter{})
			if err != nil {
				return err
			}
			lists[p] = topOfList(sums, n)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	top := topn.Merge(n, lists...)
	took := time.Since(start)
	if !check {
		return took, nil
	}
	want := make([][]topn.AdCount, h.cfg.Partitions)
	for p := range h.cfg.Partitions {
		sums := map[string]int64{}
		for day := last - int64(h.cfg.TopDays); day < last; day++ {
			for i, c := range h.clicks(p, day) {
				if c > 0 {
					sums[AdID(int(h.ads[p][i]))] += c
				}
			}
		}
		want[p] = topOf(sums, n)
	}
	if w := topn.Merge(n, want...); !slices.Equal(top, w) {
		return 0, fmt.Errorf("top %d over %d days differs from the truth: %v, want %v", n, h.cfg.TopDays, top[:min(3, len(top))], w[:min(3, len(w))])
	}
	return took, nil
}

// topOfList is the exact top n of sums, kept in a bounded heap as the
// aggregator's history top does without memory: no map, no full sort.
func topOfList(sums history.AdSums, n int) []topn.AdCount {
	h := make([]topn.AdCount, 0, n)
	// h is a heap with the worst kept ad at the root.
	down := func(i int) {
		for {
			l, worst := 2*i+1, i
			if l < len(h) && topn.Less(h[worst], h[l]) {
				worst = l
			}
			if r := l + 1; r < len(h) && topn.Less(h[worst], h[r]) {
				worst = r
			}
			if worst == i {
				return
			}
			h[i], h[worst] = h[worst], h[i]
			i = worst
		}
	}
	for _, ac := range sums {
		if len(h) < n {
			h = append(h, ac)
			for i := len(h) - 1; i > 0 && topn.Less(h[(i-1)/2], h[i]); i = (i - 1) / 2 {
				h[(i-1)/2], h[i] = h[i], h[(i-1)/2]
			}
			continue
		}
		if topn.Less(ac, h[0]) {
			h[0] = ac
			down(0)
		}
	}
	slices.SortFunc(h, byRank)
	return h
}

// topOf is the exact top n of sums.
func topOf(sums map[string]int64, n int) []topn.AdCount {
	l := make([]topn.AdCount, 0, len(sums))
	for ad, c := range sums {
		l = append(l, topn.AdCount{AdID: ad, Count: c})
	}
	slices.SortFunc(l, byRank)
	return l[:min(n, len(l))]
}

// Measure times cfg.CountQueries counts of ads drawn by popularity and
// cfg.TopQueries tops, the first of them checked against the truth (every
// count is).
func (h *History) Measure(ctx context.Context, r *history.Reader) (Result, error) {
	var res Result
	rng := rand.New(rand.NewPCG(h.cfg.Seed, 99))
	zipf := rand.NewZipf(rng, h.cfg.ZipfS, 1, uint64(h.cfg.Ads-1))
	for range h.cfg.CountQueries {
		d, err := h.Count(ctx, r, int(zipf.Uint64()))
		if err != nil {
			return res, err
		}
		res.Count = append(res.Count, d)
	}
	for i := range h.cfg.TopQueries {
		d, err := h.Top(ctx, r, i == 0)
		if err != nil {
			return res, err
		}
		res.Top = append(res.Top, d)
	}
	slices.Sort(res.Count)
	slices.Sort(res.Top)
	return res, nil
}

// byRank is topn.Less as a three-way comparison for the slices package:
// the order a top lists its ads in.
func byRank(a, b topn.AdCount) int {
	if topn.Less(a, b) {
		return -1
	}
	if topn.Less(b, a) {
		return 1
	}
	return 0
}
