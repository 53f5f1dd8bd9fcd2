package bench

import (
	"context"
	"fmt"
	"maps"
	"math"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

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

	snapParts     int   // partitions snapshotted and recovered
	snapKeys      int64 // the keys they hold
	snapEntries   int
	snapBytes     int64
	snapWrite     time.Duration
	recovery      time.Duration
	recoveredSame bool
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
	var timed time.Duration
	var chunk []entry
	total := len(r.batchTimes)
	for done := false; !done; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk = chunk[:0]
		for range chunkBatches {
			evs := rp.events()
			if evs == nil {
				done = true
				break
			}
			res.events += int64(len(evs))
			chunk = rp.entries(evs, chunk, nil)
		}
		if done {
			// The probes, which the cluster counted too.
			chunk = rp.entries(r.probes, chunk, nil)
			res.events += int64(len(r.probes))
			chunk = rp.ticks(chunk)
		}
		t := time.Now()
		for _, e := range chunk {
			// As the aggregator does: straight from the log encoding.
			if _, err := state[e.partition].ApplyEncoded(e.id, e.data, nil); err != nil {
				return nil, fmt.Errorf("decode log entry: %w", err)
			}
		}
		timed += time.Since(t)
		r.progress.set("in-process limit", fmt.Sprintf("%d of %d batches replayed, %s events/s", rp.next, total, si(float64(res.events)/timed.Seconds())))
	}
	chunk = nil
	res.rate = float64(res.events) / timed.Seconds()
	after := liveHeap()
	res.stateBytes = float64(after) - float64(before)
	for _, p := range state {
		m := p.Memory()
		res.mem.Keys += m.Keys
		res.mem.RowBytes += m.RowBytes
		res.mem.Events += m.Events
		res.mem.FilterBytes += m.FilterBytes
		res.mem.DedupIDs += m.DedupIDs
		res.mem.DedupBytes += m.DedupBytes
	}

	r.progress.set("in-process limit", "counting (ad, minute) keys")
	fromMin, toMin := r.spanStart/60_000, r.spanEnd/60_000
	keysOf := make([]int64, len(state))
	for i, p := range state {
		for m := fromMin; m < toMin; m++ {
			keysOf[i] += int64(len(p.Top(m, m+1, math.MaxInt32, tally.Filter{})))
		}
		res.keys += keysOf[i]
	}

	res.queries = map[string]*queryResult{}
	res.reference = map[string][]answer{}
	for _, k := range r.kinds {
		r.progress.set("in-process queries", k.label)
		qs := r.queries(k, r.cfg.QueryMaxSamples)
		lat, ans, err := r.measure(ctx, k, qs, r.cfg.QueryMinSamples, r.cfg.QueryMaxSamples, func(q query) (answer, error) {
			return inprocQuery(state, parts, r.window, k, q), nil
		})
		if err != nil {
			return nil, err
		}
		res.queries[k.id] = &queryResult{lat: lat, answers: ans}
		res.reference[k.id] = ans
	}

	if rdb != nil {
		if err := r.snapshotRecovery(ctx, rdb, state, keysOf, res); err != nil {
			return nil, err
		}
	}
	return res, nil
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

// snapshotRecovery writes a full snapshot of the first partitions that
// hold at least SnapshotKeys keys (all of them when it is 0) to rdb, the way
// an aggregator does (sequentially, one Lua script each), drops their
// state, then loads and restores them, and checks that the restored state
// answers exactly like the original.
func (r *run) snapshotRecovery(ctx context.Context, rdb *redis.Client, state []*tally.Partition, keysOf []int64, res *inprocResult) error {
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

	// What the restored partitions must answer.
	from, to := r.spanStart/60_000, r.spanEnd/60_000
	type reference struct {
		stats       tally.Stats
		top, topBy  []topn.AdCount
		country     string
		offset      string
		watermarkMs int64
	}
	refs := make([]reference, n)
	for i, p := range set {
		refs[i] = reference{stats: p.Stats(), top: p.Top(from, to, 100, tally.Filter{}), country: Countries[0], offset: p.Offset(), watermarkMs: p.Watermark()}
		refs[i].topBy = p.Top(from, to, 100, tally.Filter{Country: refs[i].country})
	}

	r.progress.set("snapshot", fmt.Sprintf("writing %d partitions, %s keys", n, si(float64(res.snapKeys))))
	t := time.Now()
	for i, p := range set {
		s := p.Snapshot(1)
		if err := store.Save(ctx, i, snapshot.Write{Epoch: 1, Meta: s.Meta, Minutes: s.Minutes, Drop: s.Drop}); err != nil {
			return err
		}
		p.MarkSaved(s)
		res.snapEntries += len(s.Minutes)
		res.snapBytes += int64(len(s.Meta))
		for _, m := range s.Minutes {
			res.snapBytes += int64(len(m))
		}
	}
	res.snapWrite = time.Since(t)
	clear(set)
	liveHeap()

	r.progress.set("snapshot", fmt.Sprintf("recovering %d partitions, %s keys", n, si(float64(res.snapKeys))))
	t = time.Now()
	for i := range set {
		if err := store.Claim(ctx, i, 2); err != nil {
			return err
		}
		l, err := store.Load(ctx, i)
		if err != nil {
			return err
		}
		if set[i], err = tally.Restore(i, r.targets.Tally, l.Meta, l.Minutes); err != nil {
			return err
		}
	}
	res.recovery = time.Since(t)

	res.recoveredSame = true
	for i, p := range set {
		ref := refs[i]
		if p.Stats() != ref.stats || p.Offset() != ref.offset || p.Watermark() != ref.watermarkMs ||
			!slices.Equal(p.Top(from, to, 100, tally.Filter{}), ref.top) ||
			!slices.Equal(p.Top(from, to, 100, tally.Filter{Country: ref.country}), ref.topBy) {
			res.recoveredSame = false
		}
	}
	clear(set)
	return nil
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
