package bench

import (
	"context"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// memSample is the cluster's Redis used_memory at a time of the run.
type memSample struct {
	at    float64 // seconds since the run started
	bytes float64
}

// sampleRedisMemory reads the cluster's Redis used_memory every interval
// until stop is closed or ctx ends, and returns what it read.
func sampleRedisMemory(ctx context.Context, rdb *redis.Client, rel func(time.Time) float64, interval time.Duration, stop <-chan struct{}) []memSample {
	var out []memSample
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if v, err := infoField(ctx, rdb, "memory", "used_memory"); err == nil {
			if b, err := strconv.ParseFloat(v, 64); err == nil {
				out = append(out, memSample{at: rel(time.Now()), bytes: b})
			}
		}
		select {
		case <-ctx.Done():
			return out
		case <-stop:
			return out
		case <-t.C:
		}
	}
}

// memTrend is how Redis memory moved over a run: its least-squares slope
// in bytes per second, and the smallest and largest sample; NaN slope with
// fewer than two samples.
type memTrend struct {
	slope, min, max float64
	seconds         float64
	samples         int
}

func trendOf(ss []memSample) memTrend {
	tr := memTrend{slope: math.NaN(), samples: len(ss), min: math.Inf(1), max: math.Inf(-1)}
	if len(ss) < 2 {
		return tr
	}
	var sx, sy, sxx, sxy float64
	for _, s := range ss {
		sx += s.at
		sy += s.bytes
		sxx += s.at * s.at
		sxy += s.at * s.bytes
		tr.min, tr.max = min(tr.min, s.bytes), max(tr.max, s.bytes)
	}
	n := float64(len(ss))
	if d := n*sxx - sx*sx; d > 0 {
		tr.slope = (n*sxy - sx*sy) / d
	}
	tr.seconds = ss[len(ss)-1].at - ss[0].at
	return tr
}
