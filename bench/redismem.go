package bench

import (
	"context"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// memSample is an amount of the cluster's Redis memory at a time of the
// run.
type memSample struct {
	at    float64 // seconds since the run started
	bytes float64
}

// sampleRedisMemory reads every interval, until stop is closed or ctx
// ends, the cluster Redis's used_memory and the memory of its partition
// logs (MEMORY USAGE of every stream key, *}:log): the logs are what the
// raw archive keeps flat; used_memory also holds the snapshots, which grow
// with the aggregate state up to -aggregator.retention.
func sampleRedisMemory(ctx context.Context, rdb *redis.Client, rel func(time.Time) float64, interval time.Duration, stop <-chan struct{}) (used, logs []memSample) {
	var streams []string
	iter := rdb.Scan(ctx, 0, "*}:log", 1000).Iterator()
	for iter.Next(ctx) {
		streams = append(streams, iter.Val())
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		at := rel(time.Now())
		if v, err := infoField(ctx, rdb, "memory", "used_memory"); err == nil {
			if b, err := strconv.ParseFloat(v, 64); err == nil {
				used = append(used, memSample{at: at, bytes: b})
			}
		}
		if len(streams) > 0 {
			pipe := rdb.Pipeline()
			cmds := make([]*redis.IntCmd, len(streams))
			for i, k := range streams {
				cmds[i] = pipe.MemoryUsage(ctx, k)
			}
			_, _ = pipe.Exec(ctx)
			var total float64
			ok := true
			for _, c := range cmds {
				n, err := c.Result()
				if err != nil && err != redis.Nil {
					ok = false
					break
				}
				total += float64(n)
			}
			if ok {
				logs = append(logs, memSample{at: at, bytes: total})
			}
		}
		select {
		case <-ctx.Done():
			return used, logs
		case <-stop:
			return used, logs
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
	// perMinute is the largest sample of each whole minute from the
	// first: a log trimmed once archived is a sawtooth whose peaks stay
	// level, which a slope over a few teeth does not show.
	perMinute []float64
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
	for _, s := range ss {
		i := int((s.at - ss[0].at) / 60)
		if i >= len(tr.perMinute) {
			tr.perMinute = append(tr.perMinute, make([]float64, i+1-len(tr.perMinute))...)
		}
		tr.perMinute[i] = max(tr.perMinute[i], s.bytes)
	}
	return tr
}
