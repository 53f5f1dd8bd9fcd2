package bench

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/aggregator"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/topn"
)

// liveHeap collects garbage and returns the bytes of live heap objects.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// entry is one encoded log entry of one partition.
type entry struct {
	partition int
	id        string
	data      []byte
}

// replayer turns the run's batches back into the log entries the router
// wrote: one entry per partition per request, partitions in order, plus a
// tick to every partition about once a second of the original run.
type replayer struct {
	r         *run
	parts     *ring.Partitioner
	gen       *Generator
	next      int // next batch
	seq       uint64
	frontier  int64
	tickEvery int
	evs       []Event
}

func (r *run) newReplayer(parts *ring.Partitioner, ratePerSecond float64) *replayer {
	every := int(math.Round(ratePerSecond / float64(r.cfg.Batch)))
	return &replayer{
		r:         r,
		parts:     parts,
		gen:       NewGenerator(r.cfg.Workload, r.spanStart),
		tickEvery: max(every, 1),
		evs:       make([]Event, r.cfg.Batch),
	}
}

func (p *replayer) id() string {
	p.seq++
	return strconv.FormatUint(p.seq, 10) + "-0"
}

// events regenerates the events of the next batch; nil when none is left.
func (p *replayer) events() []Event {
	if p.next >= len(p.r.batchTimes) {
		return nil
	}
	now := p.r.batchTimes[p.next]
	p.next++
	for i := range p.evs {
		p.evs[i] = p.gen.Next(now)
	}
	return p.evs
}

// entries encodes evs as the router would; the events also go through
// each, when it is not nil, in log form (untimed work such as the dedup
// measurement).
func (p *replayer) entries(evs []Event, out []entry, each func(part int, le *clickaggv1.LogEvent)) []entry {
	byPart := map[int]*clickaggv1.LogEntry{}
	for _, e := range evs {
		le := p.r.names.LogEvent(e)
		part := p.parts.Partition(le.AdId)
		if each != nil {
			each(part, le)
		}
		en := byPart[part]
		if en == nil {
			en = &clickaggv1.LogEntry{RouterId: "bench"}
			byPart[part] = en
		}
		en.Events = append(en.Events, le)
		p.frontier = max(p.frontier, e.TimeMs)
	}
	for _, part := range slices.Sorted(maps.Keys(byPart)) {
		data, _ := proto.Marshal(byPart[part])
		out = append(out, entry{partition: part, id: p.id(), data: data})
	}
	if p.next%p.tickEvery == 0 {
		out = p.ticks(out)
	}
	return out
}

func (p *replayer) ticks(out []entry) []entry {
	data, _ := proto.Marshal(&clickaggv1.LogEntry{RouterId: "bench", TickMs: p.frontier})
	for part := range p.parts.Partitions() {
		out = append(out, entry{partition: part, id: p.id(), data: data})
	}
	return out
}

// inprocResult is what the in-process limit measured.
type inprocResult struct {
	events     int64
	rate       float64      // events decoded and counted per second
	stateBytes float64      // heap of the partitions' state, dedup sets included
	mem        tally.Memory // the state's own accounting of its three budgets
	keys       int64        // live (ad, minute) keys
	queries    map[string]*queryResult
	reference  map[string][]answer // answers kept before the state was dropped

	snapParts  int   // partitions snapshotted and recovered
	snapKeys   int64 // the keys they hold
	snap       saved // the full write
	snapWrite  time.Duration
	incrEvents int64 // events of the minute applied after the full write
	incr       saved // the incremental write
	incrWrite  time.Duration
	recovery   time.Duration
	// recoveryCPU and recoveryRedisCPU are the CPU seconds this process
	// and Redis used while recovering (-1: unknown), recoveryProfile the
	// CPU profile of this process then.
	recoveryCPU, recoveryRedisCPU float64
	recoveryProfile               []byte
	recoveredSame                 bool
	// redisWriteBps is what Redis took in per second from big SETs
	// through its AOF. It bounds the full write from below: a snapshot of
	// B bytes per key takes at least B × keys ÷ redisWriteBps, however it
	// is encoded or scheduled, while the state is written as it is
	// (mostly the 8-byte dedup hash and the user and IP hashes of each
	// counted event) and Redis copies it on one thread and fsyncs it.
	// On the 2-core bench machine, with appendfsync always: about 104
	// B/key and 110–160 MB/s, so 6.5–9.5 s per 10M keys, against a target
	// of 0.5 s that would take 2 GB/s.
	redisWriteBps float64
}

// chunkBatches is how many batches are encoded ahead of being counted: the
// encoding is not timed, and a chunk bounds the memory it takes.
const chunkBatches = 256

// runInproc replays the run's events, decoded from their log encoding, into
// one tally.Partition per partition in this goroutine, and measures the
// rate, the heap the state takes and its budgets (tally.Memory), the number
// of (ad, minute) keys and the latency of the same queries as the cluster.
// Then it snapshots the state into rdb and recovers it, timed.
func (r *run) runInproc(ctx context.Context, rdb *redis.Client, sustained float64) (*inprocResult, error) {
	parts, err := ring.NewPartitioner(r.partitions)
	if err != nil {
		return nil, err
	}
	opts := r.targets.Tally
	res := &inprocResult{}
	before := liveHeap()
	state := make([]*tally.Partition, r.partitions)
	for i := range state {
		state[i] = tally.NewPartition(i, opts)
	}
	rp := r.newReplayer(parts, sustained)
	ectx, stopEncoding := context.WithCancel(ctx)
	defer stopEncoding()
	chunks, free := r.encodeChunks(ectx, rp)
	var timed time.Duration
	total := len(r.batchTimes)
	for c := range chunks {
		t := time.Now()
		for _, e := range c.entries {
			// As the aggregator does: straight from the log encoding.
			if _, err := state[e.partition].ApplyEncoded(e.id, e.data, nil); err != nil {
				return nil, fmt.Errorf("decode log entry: %w", err)
			}
		}
		timed += time.Since(t)
		res.events += c.events
		free <- c.entries
		r.progress.set("in-process limit", fmt.Sprintf("%d of %d batches replayed, %s events/s", c.batches, total, si(float64(res.events)/timed.Seconds())))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res.rate = float64(res.events) / timed.Seconds()
	after := liveHeap()
	res.stateBytes = float64(after) - float64(before)
	// Memory counts each partition's distinct (ad, minute) keys.
	keysOf := make([]int64, len(state))
	for i, p := range state {
		m := p.Memory()
		res.mem.Add(m)
		keysOf[i] = m.Keys
	}
	res.keys = res.mem.Keys

	if err := r.inprocQueries(ctx, state, parts, res); err != nil {
		return nil, err
	}
	if rdb != nil {
		if err := r.snapshotRecovery(ctx, rdb, rp, state, keysOf, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// replayChunk is entries of chunkBatches batches, encoded ahead of being
// counted.
type replayChunk struct {
	entries []entry
	events  int64
	batches int // replayed so far
}

// encodeChunks regenerates and encodes the run's entries, untimed, in
// another goroutine, on the other core, while the caller counts them: the
// replay then takes about as long as the counting alone. The caller hands
// each chunk's entries back on free for reuse; the goroutine ends when
// every chunk is sent or ctx is done.
func (r *run) encodeChunks(ctx context.Context, rp *replayer) (<-chan replayChunk, chan<- []entry) {
	chunks := make(chan replayChunk, 2)
	free := make(chan []entry, 3)
	for range cap(free) {
		free <- nil
	}
	go func() {
		defer close(chunks)
		for done := false; !done; {
			var c replayChunk
			select {
			case c.entries = <-free:
			case <-ctx.Done():
				return
			}
			c.entries = c.entries[:0]
			for range chunkBatches {
				evs := rp.events()
				if evs == nil {
					done = true
					break
				}
				c.events += int64(len(evs))
				c.entries = rp.entries(evs, c.entries, nil)
			}
			if done {
				// The probes, which the cluster counted too.
				c.entries = rp.entries(r.probes, c.entries, nil)
				c.events += int64(len(r.probes))
				c.entries = rp.ticks(c.entries)
			}
			c.batches = rp.next
			select {
			case chunks <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	return chunks, free
}

// inprocQueries measures the cluster's queries on the in-process state,
// whose answers are the ground truth.
func (r *run) inprocQueries(ctx context.Context, state []*tally.Partition, parts *ring.Partitioner, res *inprocResult) error {
	res.queries = map[string]*queryResult{}
	res.reference = map[string][]answer{}
	for _, k := range r.kinds {
		r.progress.set("in-process queries", k.label)
		qs := r.queries(k, r.cfg.QueryMaxSamples)
		lat, ans, err := r.measure(ctx, k, qs, r.cfg.QueryMinSamples, r.cfg.QueryMaxSamples, func(q query) (answer, error) {
			return inprocQuery(state, parts, r.window, k, q), nil
		})
		if err != nil {
			return err
		}
		res.queries[k.id] = &queryResult{lat: lat, answers: ans}
		res.reference[k.id] = ans
	}

	return nil
}

// inprocQuery answers q from the state directly, as an aggregator and
// queryd would together.
func inprocQuery(state []*tally.Partition, parts *ring.Partitioner, window func(queryKind) (int64, int64), k queryKind, q query) answer {
	from, to := window(k)
	f := tally.Filter{Country: q.country}
	if !k.top {
		return answer{count: state[parts.Partition(q.ad)].Count(q.ad, from, to, f)}
	}
	lists := make([][]topn.AdCount, len(state))
	for i, p := range state {
		lists[i] = p.Top(from, to, 100, f)
	}
	return answer{top: topn.Merge(100, lists...)}
}

// saveParallelism is how many partitions' snapshots the bench writes at
// once: as many as an aggregator writes concurrently
// (aggregator.SaveParallelism, GOMAXPROCS×2). Each save is still
// one fenced Lua script; Redis runs them one after another, so what the
// concurrency buys is the encoding of one partition overlapping the
// transfer and the AOF write of another, and saves that reach Redis in the
// same event-loop iteration sharing one fsync.
func saveParallelism() int { return aggregator.SaveParallelism() }

// takeParallelism is how many partitions the bench recovers at once: an
// aggregator's takeParallelism (aggregator/consumer.go), 8.
const takeParallelism = 8

// redisProbeBytes is what the Redis write-bandwidth probe writes: four SETs
// of 8 MiB, through the same AOF (appendfsync as the bench's Redis has it).
const (
	redisProbeValue = 8 << 20
	redisProbeSets  = 4
)

// snapshotRecovery measures, on the first partitions that hold at least
// SnapshotKeys keys (all of them when it is 0), against rdb, what an
// aggregator does with their snapshots:
//
//   - the full write: every partition's first snapshot (every minute),
//     saveParallelism partitions in flight, one fenced Lua script each;
//   - the steady-state incremental write: after one more minute of the
//     workload (rp's next minute of events) is applied, the save of the
//     whole partition set again, which writes only the minutes that changed
//     (the new minute and those its late clicks fell into);
//   - recovery: claim, load and restore, takeParallelism partitions at once;
//
// then it checks that the restored state answers exactly like the saved
// one. Last it probes the Redis write bandwidth (big SETs through the same
// AOF), which bounds the full write: see inprocResult.redisWriteBps.
func (r *run) snapshotRecovery(ctx context.Context, rdb *redis.Client, rp *replayer, state []*tally.Partition, keysOf []int64, res *inprocResult) error {
	prefix := "bench-snap-" + r.names.Tag
	store := snapshot.New(rdb, prefix)
	defer deleteKeys(context.WithoutCancel(ctx), rdb, prefix+":*")
	n := 0
	for n < len(state) && (r.cfg.SnapshotKeys == 0 || res.snapKeys < r.cfg.SnapshotKeys) {
		res.snapKeys += keysOf[n]
		n++
	}
	res.snapParts = n
	set := state[:n]

	r.progress.set("snapshot", fmt.Sprintf("writing %d partitions, %s keys, %d at once", n, si(float64(res.snapKeys)), saveParallelism()))
	t := time.Now()
	var err error
	if res.snap, err = saveSet(ctx, store, set); err != nil {
		return err
	}
	res.snapWrite = time.Since(t)

	// One more minute of the workload (untimed), then the incremental save.
	r.progress.set("snapshot", "applying one more minute of events")
	events, err := rp.applyNextMinute(set)
	if err != nil {
		return err
	}
	res.incrEvents = events
	r.progress.set("snapshot", fmt.Sprintf("incremental write of %d partitions", n))
	t = time.Now()
	if res.incr, err = saveSet(ctx, store, set); err != nil {
		return err
	}
	res.incrWrite = time.Since(t)

	// What the restored partitions must answer: the state as last saved.
	from, to := r.spanStart/60_000, r.spanEnd/60_000+1
	refs := make([]partitionRef, n)
	for i, p := range set {
		refs[i] = refOf(p, from, to)
	}
	clear(set)
	liveHeap()

	r.progress.set("snapshot", fmt.Sprintf("recovering %d partitions, %s keys, %d at once", n, si(float64(res.snapKeys)), takeParallelism))
	if err := r.recoverSet(ctx, rdb, store, set, res); err != nil {
		return err
	}
	res.recoveredSame = true
	for i, p := range set {
		if !refs[i].same(p, from, to) {
			res.recoveredSame = false
		}
	}
	clear(set)

	// Last, so that its bytes do not change what the AOF held (and when
	// Redis rewrote it) during the timed parts.
	r.progress.set("snapshot", "probing the Redis write bandwidth")
	res.redisWriteBps, err = probeRedisWrite(ctx, rdb, prefix+":probe")
	return err
}

// partitionRef is what a partition answers, to compare a restored one
// with.
type partitionRef struct {
	stats       tally.Stats
	top, topBy  []topn.AdCount
	country     string
	offset      string
	watermarkMs int64
}

// refOf is what p answers, its tops over the minutes [from, to).
func refOf(p *tally.Partition, from, to int64) partitionRef {
	ref := partitionRef{stats: p.Stats(), top: p.Top(from, to, 100, tally.Filter{}), country: Countries[0], offset: p.Offset(), watermarkMs: p.Watermark()}
	ref.topBy = p.Top(from, to, 100, tally.Filter{Country: ref.country})
	return ref
}

// same reports whether p answers as ref.
func (ref partitionRef) same(p *tally.Partition, from, to int64) bool {
	return p.Stats() == ref.stats && p.Offset() == ref.offset && p.Watermark() == ref.watermarkMs &&
		slices.Equal(p.Top(from, to, 100, tally.Filter{}), ref.top) &&
		slices.Equal(p.Top(from, to, 100, tally.Filter{Country: ref.country}), ref.topBy)
}

// recoverSet recovers every partition of set from store as an aggregator
// does (claim, load, restore), takeParallelism at once, timed. It is
// profiled, and the CPU of both sides counted, to tell the decoding here
// from Redis serving the bytes.
func (r *run) recoverSet(ctx context.Context, rdb *redis.Client, store *snapshot.Store, set []*tally.Partition, res *inprocResult) error {
	var prof bytes.Buffer
	profiling := pprof.StartCPUProfile(&prof) == nil
	cpu0, redis0 := processCPU(), redisCPUOf(ctx, rdb)
	t := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(takeParallelism)
	for i := range set {
		g.Go(func() error {
			if err := store.Claim(gctx, i, 2); err != nil {
				return err
			}
			l, err := store.Load(gctx, i)
			if err != nil {
				return err
			}
			set[i], err = tally.Restore(i, r.targets.Tally, l.Meta, l.Minutes, l.Late)
			return err
		})
	}
	err := g.Wait()
	res.recovery = time.Since(t)
	res.recoveryCPU, res.recoveryRedisCPU = processCPU()-cpu0, redisCPUOf(ctx, rdb)-redis0
	if redis0 < 0 {
		res.recoveryRedisCPU = -1
	}
	if profiling {
		pprof.StopCPUProfile()
		res.recoveryProfile = prof.Bytes()
	}
	return err
}

// saved is what saveSet wrote.
type saved struct {
	whole, late int   // minutes written whole, late parts
	bytes       int64 // all of it, metas included
	lateBytes   int64 // the late parts
}

// saveSet saves a snapshot of every partition in set, saveParallelism at
// once, as an aggregator does (Snapshot, a fenced Save at epoch 1,
// MarkSaved), and returns what it wrote.
func saveSet(ctx context.Context, store *snapshot.Store, set []*tally.Partition) (saved, error) {
	var whole, late, size, lateSize atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(saveParallelism())
	for i, p := range set {
		g.Go(func() error {
			s := p.Snapshot(1)
			if err := store.Save(gctx, i, snapshot.Write{Epoch: 1, Meta: s.Meta, Minutes: s.Minutes, Late: s.Late, Drop: s.Drop}); err != nil {
				return err
			}
			p.MarkSaved(s)
			b, lb := len(s.Meta), 0
			for _, m := range s.Minutes {
				b += len(m)
			}
			for _, m := range s.Late {
				lb += len(m)
			}
			whole.Add(int64(len(s.Minutes)))
			late.Add(int64(len(s.Late)))
			size.Add(int64(b + lb))
			lateSize.Add(int64(lb))
			return nil
		})
	}
	err := g.Wait()
	return saved{whole: int(whole.Load()), late: int(late.Load()), bytes: size.Load(), lateBytes: lateSize.Load()}, err
}

// probeRedisWrite returns the bytes per second that Redis takes in and
// makes durable through its AOF when a few big values are written one
// after another: the ceiling of any snapshot write, whose bytes take the
// same path (received, copied into the keyspace, appended to the AOF and
// fsynced) on Redis's one thread.
func probeRedisWrite(ctx context.Context, rdb *redis.Client, key string) (float64, error) {
	v := make([]byte, redisProbeValue)
	for i := range v {
		v[i] = byte(i*131 + i>>8)
	}
	t := time.Now()
	for range redisProbeSets {
		if err := rdb.Set(ctx, key, v, 0).Err(); err != nil {
			return 0, fmt.Errorf("redis write probe: %w", err)
		}
	}
	d := time.Since(t)
	return float64(redisProbeSets*redisProbeValue) / d.Seconds(), rdb.Unlink(ctx, key).Err()
}

// applyNextMinute regenerates the minute of events that would follow the
// run (as many events as an average minute of the span, clicks timed in
// the minute after it, late ones among them), applies those of the
// partitions in set, then ticks them, and returns the events applied.
func (p *replayer) applyNextMinute(set []*tally.Partition) (int64, error) {
	spanMinutes := max((p.r.spanEnd-p.r.spanStart)/60_000, 1)
	batches := max(int64(len(p.r.batchTimes))/spanMinutes, 1)
	var out []entry
	var events int64
	apply := func() error {
		for _, e := range out {
			if e.partition >= len(set) {
				continue
			}
			if _, err := set[e.partition].ApplyEncoded(e.id, e.data, nil); err != nil {
				return fmt.Errorf("decode log entry: %w", err)
			}
		}
		out = out[:0]
		return nil
	}
	for i := range batches {
		now := p.r.spanEnd + i*60_000/batches
		for j := range p.evs {
			p.evs[j] = p.gen.Next(now)
		}
		p.next++ // ticks at the run's cadence
		out = p.entries(p.evs, out, func(part int, _ *clickaggv1.LogEvent) {
			if part < len(set) {
				events++
			}
		})
		if err := apply(); err != nil {
			return 0, err
		}
	}
	p.frontier = max(p.frontier, p.r.spanEnd+60_000)
	out = p.ticks(out)
	return events, apply()
}

// deleteKeys unlinks every key matching pattern.
func deleteKeys(ctx context.Context, rdb *redis.Client, pattern string) {
	it := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	var keys []string
	for it.Next(ctx) {
		keys = append(keys, it.Val())
		if len(keys) == 500 {
			rdb.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		rdb.Unlink(ctx, keys...)
	}
}
