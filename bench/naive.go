package bench

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/topn"
)

// Naive is the design most teams try first: Redis does the counting. Each
// click is one HINCRBY of the (minute, ad) field of the minute's hash and
// one ZINCRBY of the ad in the minute's sorted set, pipelined; a top N over
// several minutes is a ZUNIONSTORE of their sorted sets. It has no dedup (a
// retried click counts twice), no filters, and no recovery story beyond
// Redis's own: it is here for its speed and size, on the same events.
type Naive struct {
	rdb    *redis.Client
	prefix string
	names  Names
}

// NewNaive returns the naive design over rdb, its keys under prefix.
func NewNaive(rdb *redis.Client, prefix string, names Names) *Naive {
	return &Naive{rdb: rdb, prefix: prefix, names: names}
}

func (n *Naive) countKey(minute int64) string {
	return n.prefix + ":c:" + strconv.FormatInt(minute, 10)
}

func (n *Naive) topKey(minute int64) string {
	return n.prefix + ":t:" + strconv.FormatInt(minute, 10)
}

// Add counts evs in one pipeline.
func (n *Naive) Add(ctx context.Context, evs []Event) error {
	var ad []byte
	_, err := n.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range evs {
			ad = n.names.AppendAdID(ad[:0], e.Ad)
			id := string(ad)
			m := e.Minute()
			p.HIncrBy(ctx, n.countKey(m), id, 1)
			p.ZIncrBy(ctx, n.topKey(m), 1, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("naive: pipeline of %d events: %w", len(evs), err)
	}
	return nil
}

// Ingest counts the batches from in with workers concurrent pipelines and
// returns how many events it counted.
func (n *Naive) Ingest(ctx context.Context, in <-chan []Event, workers int) (int64, error) {
	var counted atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			for evs := range in {
				if err := n.Add(gctx, evs); err != nil {
					return err
				}
				counted.Add(int64(len(evs)))
			}
			return nil
		})
	}
	err := g.Wait()
	return counted.Load(), err
}

// Count returns adID's clicks over the minutes [from, to): one HGET per
// minute, pipelined.
func (n *Naive) Count(ctx context.Context, adID string, from, to int64) (int64, error) {
	cmds := make([]*redis.StringCmd, 0, to-from)
	_, err := n.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for m := from; m < to; m++ {
			cmds = append(cmds, p.HGet(ctx, n.countKey(m), adID))
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return 0, err
	}
	var total int64
	for _, c := range cmds {
		v, err := c.Int64()
		if err == redis.Nil {
			continue
		}
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}

// Top returns the k most clicked ads over [from, to): ZREVRANGE of the
// minute's sorted set for one minute, else ZUNIONSTORE of every minute's
// into a scratch key first. Ties are put in the cluster's order (ad_id
// ascending) for comparison, but which tied ads make the cut at the k-th
// place is Redis's choice (ad_id descending).
func (n *Naive) Top(ctx context.Context, from, to int64, k int) ([]topn.AdCount, error) {
	key := n.topKey(from)
	if to-from > 1 {
		keys := make([]string, 0, to-from)
		for m := from; m < to; m++ {
			keys = append(keys, n.topKey(m))
		}
		key = n.prefix + ":union"
		if err := n.rdb.ZUnionStore(ctx, key, &redis.ZStore{Keys: keys}).Err(); err != nil {
			return nil, fmt.Errorf("naive: ZUNIONSTORE of %d minutes: %w", len(keys), err)
		}
		defer n.rdb.Unlink(context.WithoutCancel(ctx), key)
	}
	zs, err := n.rdb.ZRevRangeWithScores(ctx, key, 0, int64(k-1)).Result()
	if err != nil {
		return nil, err
	}
	out := make([]topn.AdCount, len(zs))
	for i, z := range zs {
		out[i] = topn.AdCount{AdID: z.Member.(string), Count: int64(z.Score)}
	}
	return topn.Merge(k, out), nil
}

// Keys returns the number of (minute, ad) keys over [from, to) and the sum
// of their counts.
func (n *Naive) Keys(ctx context.Context, from, to int64) (keys, clicks int64, err error) {
	for m := from; m < to; m++ {
		vals, err := n.rdb.HVals(ctx, n.countKey(m)).Result()
		if err != nil {
			return 0, 0, err
		}
		keys += int64(len(vals))
		for _, v := range vals {
			c, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("naive: count %q: %w", v, err)
			}
			clicks += c
		}
	}
	return keys, clicks, nil
}

// Clear deletes every key of the design.
func (n *Naive) Clear(ctx context.Context) {
	deleteKeys(ctx, n.rdb, n.prefix+":*")
}

// usedMemory returns Redis's used_memory once the keys unlinked before
// are freed: UNLINK frees big values on a background thread, and the
// in-process limit's snapshots (GBs) were still being freed when the
// baseline started, which made its memory growth negative.
func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	for {
		v, err := infoField(ctx, rdb, "memory", "lazyfree_pending_objects")
		if err != nil || v == "0" {
			break // an older Redis without the field frees at once
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	v, err := infoField(ctx, rdb, "memory", "used_memory")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// infoField returns one field of INFO section.
func infoField(ctx context.Context, rdb *redis.Client, section, field string) (string, error) {
	info, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("INFO %s has no %s", section, field)
}

// redisCPUOf returns the CPU seconds (user + system) a Redis server has
// used, -1 when unknown.
func redisCPUOf(ctx context.Context, rdb *redis.Client) float64 {
	var total float64
	for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := infoField(ctx, rdb, "cpu", f)
		if err != nil {
			return -1
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return -1
		}
		total += x
	}
	return total
}

// naiveResult is what the naive baseline measured.
type naiveResult struct {
	events    int64
	complete  bool // every batch of the run was counted
	rate      float64
	keys      int64
	clicks    int64
	bytes     int64 // used_memory growth
	queries   map[string]*queryResult
	countedOK bool // the design counted every event it was sent
}

// runNaive feeds the run's events (the same batches, then the probes) to
// the naive design and measures it.
func (r *run) runNaive(ctx context.Context, rdb *redis.Client) (*naiveResult, error) {
	n := NewNaive(rdb, "bench-naive-"+r.names.Tag, r.names)
	defer n.Clear(context.WithoutCancel(ctx))
	res := &naiveResult{queries: map[string]*queryResult{}}
	mem0, err := usedMemory(ctx, rdb)
	if err != nil {
		return nil, fmt.Errorf("naive: %w", err)
	}
	in := make(chan []Event, 2*r.cfg.Streams*r.cfg.Inflight)
	ictx, cancel := context.WithTimeout(ctx, r.cfg.NaiveTimeout)
	defer cancel()
	var sent atomic.Int64
	go func() {
		defer close(in)
		gen := NewGenerator(r.cfg.Workload, r.spanStart)
		for _, now := range r.batchTimes {
			evs := make([]Event, r.cfg.Batch)
			for i := range evs {
				evs[i] = gen.Next(now)
			}
			select {
			case in <- evs:
				sent.Add(int64(len(evs)))
			case <-ictx.Done():
				return
			}
		}
		select {
		case in <- r.probes:
			sent.Add(int64(len(r.probes)))
		case <-ictx.Done():
		}
	}()
	t := time.Now()
	done := make(chan struct{})
	go func() {
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		total := len(r.batchTimes) * r.cfg.Batch
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				s := sent.Load()
				r.progress.set("naive Redis baseline", fmt.Sprintf("%s of %s events, %s/s", si(float64(s)), si(float64(total)), si(float64(s)/time.Since(t).Seconds())))
			}
		}
	}()
	// As many pipelines at once as the cluster's client keeps requests in
	// flight: the same concurrency for both.
	counted, err := n.Ingest(ictx, in, r.cfg.Streams*r.cfg.Inflight)
	close(done)
	elapsed := time.Since(t)
	if err != nil && ictx.Err() == nil {
		return nil, err
	}
	res.events = counted
	res.complete = counted == int64(len(r.batchTimes)*r.cfg.Batch+len(r.probes))
	res.rate = float64(counted) / elapsed.Seconds()
	mem1, err := usedMemory(ctx, rdb)
	if err != nil {
		return nil, fmt.Errorf("naive: %w", err)
	}
	res.bytes = mem1 - mem0
	r.progress.set("naive Redis baseline", "counting keys")
	from, to := r.spanStart/60_000, r.spanEnd/60_000
	if res.keys, res.clicks, err = n.Keys(ctx, from, to); err != nil {
		return nil, err
	}
	res.countedOK = res.clicks == counted

	for _, k := range r.kinds {
		if k.country {
			continue // the naive design has no filters
		}
		r.progress.set("naive Redis queries", k.label)
		qs := r.queries(k, r.cfg.QueryMaxSamples)
		maxN := r.cfg.QueryMaxSamples
		if k.top && k.long {
			// ZUNIONSTORE of millions of members takes seconds: a few runs.
			maxN = r.cfg.NaiveTopRuns
		}
		qf, qt := r.window(k)
		lat, ans, err := r.measure(ctx, k, qs, min(r.cfg.QueryMinSamples, maxN), maxN, func(q query) (answer, error) {
			if k.top {
				t, err := n.Top(ctx, qf, qt, 100)
				return answer{top: t}, err
			}
			c, err := n.Count(ctx, q.ad, qf, qt)
			return answer{count: c}, err
		})
		if err != nil {
			return nil, err
		}
		res.queries[k.id] = &queryResult{lat: lat, answers: ans}
	}
	return res, nil
}
