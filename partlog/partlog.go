package partlog

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/durable"
	"github.com/clickagg/clickagg/retry"
)

// dataField is the one field of every stream entry.
const dataField = "d"

// Key returns the stream key of partition p: prefix + ":{p" + p + "}:log",
// e.g. "clickagg:{p7}:log".
// All keys of one partition share the hash tag {pN} so the design works on
// Redis Cluster.
func Key(prefix string, p int) string {
	return prefix + ":{p" + strconv.Itoa(p) + "}:log"
}

// Entry is one stream entry; Data is an encoded clickaggv1.LogEntry.
type Entry struct {
	ID   string
	Data []byte
}

// ErrFull is in the error of an append that Redis refused for lack of
// memory (maxmemory reached under the noeviction policy): nothing is
// lost, but nothing can be appended until memory is freed, and retrying
// at once will not help.
var ErrFull = errors.New("partlog: log store is full (Redis maxmemory reached)")

// full marks an OOM refusal of Redis with ErrFull.
func full(err error) error {
	if redis.IsOOMError(err) {
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return err
}

// Append is one item to append to partition Partition's stream.
type Append struct {
	Partition int
	Data      []byte
}

// Log reads and appends the partition streams under one key prefix.
// It is safe for concurrent use.
type Log struct {
	rdb    redis.UniversalClient
	prefix string
	// poll is how often Read looks again at partitions that were all
	// caught up; 0 makes it block in one XREAD over all of them instead
	// (see Read).
	poll time.Duration
	// w runs appends: with replicas to wait for, an append is
	// acknowledged only once they have it.
	w *durable.Writer
}

// Option configures a Log.
type Option func(*Log)

// WithWriter makes Append write through w, which waits for replicas as
// the operator asks (-redis.wait-replicas). Without it, an append is
// acknowledged once the primary has it.
func WithWriter(w *durable.Writer) Option {
	return func(l *Log) { l.w = w }
}

// ClusterPoll is how often Read, on a Redis Cluster, reads again
// partitions that were all caught up. It bounds the extra delay of an
// entry appended while a reader waits (half of it on average), and costs
// each primary one pipelined round trip per reader per ClusterPoll while
// nothing is appended: see Read.
const ClusterPoll = 5 * time.Millisecond

// New returns a Log over rdb whose stream keys start with prefix. It does no I/O.
func New(rdb redis.UniversalClient, prefix string, opts ...Option) *Log {
	l := &Log{rdb: rdb, prefix: prefix}
	if _, ok := rdb.(*redis.ClusterClient); ok {
		l.poll = ClusterPoll
	}
	for _, o := range opts {
		o(l)
	}
	if l.w == nil {
		l.w = durable.New(rdb, durable.Options{})
	}
	return l
}

// Append appends each item to its partition's stream (XADD, pipelined, field
// "d") and returns the entry IDs in order.
// It returns only after Redis answered every XADD and, with WithWriter,
// after the replicas asked for have every entry; any error means the
// caller must treat all items as not acknowledged (retrying may
// duplicate, which dedup absorbs).
func (l *Log) Append(ctx context.Context, items []Append) ([]string, error) {
	if len(items) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.StringCmd, len(items))
	writes := make([]durable.Write, len(items))
	// A plain pipeline, not MULTI: the items usually belong to different
	// partitions (different slots on Redis Cluster), and atomicity buys
	// nothing since a partial failure is answered with a retry of the whole
	// batch anyway.
	for i, it := range items {
		k := Key(l.prefix, it.Partition)
		cmds[i] = redis.NewStringCmd(ctx, "xadd", k, "*", dataField, it.Data)
		writes[i] = durable.Command(k, cmds[i])
	}
	if err := l.w.Do(ctx, writes...); err != nil {
		for i, c := range cmds {
			if c.Err() != nil {
				return nil, fmt.Errorf("append to partition %d: %w", items[i].Partition, full(c.Err()))
			}
		}
		return nil, fmt.Errorf("append %d entries: %w", len(items), full(err))
	}
	ids := make([]string, len(items))
	for i, c := range cmds {
		ids[i] = c.Val()
	}
	return ids, nil
}

// Read reads entries after the given IDs ("0" = from the start), at most
// count per stream (count <= 0: no limit), waiting up to block (0 = don't
// wait) when there are none yet. Returns an empty map on timeout.
//
// On one Redis server it is one XREAD over all the streams, which blocks
// in Redis and returns as soon as any of them gets an entry: nothing is
// fresher, and a waiting reader costs Redis nothing. Cancelling ctx does
// not interrupt that XREAD (the client only honours deadlines set before
// the call); keep block short enough for shutdown.
//
// A Redis Cluster refuses an XREAD over keys of different hash slots
// (CROSSSLOT), and every partition has its own. There Read sends one
// non-blocking XREAD per partition in one pipeline (one round trip per
// primary, in parallel) and, only when all came back empty, reads them
// again every ClusterPoll until block has passed or ctx is done. Blocking
// instead is worse: a blocking XREAD names one stream, so it would wake
// up for one partition only and leave the others' entries waiting up to
// block (100ms by default) — or take one connection per partition for the
// whole block. Polling delays an entry appended to an idle log by at most
// ClusterPoll; an entry appended to a busy log waits for no poll at all,
// since Read then returns at once with the entries already there.
func (l *Log) Read(ctx context.Context, after map[int]string, count int64, block time.Duration) (map[int][]Entry, error) {
	if l.poll == 0 {
		return l.readBlocking(ctx, after, count, block)
	}
	if len(after) == 0 {
		return map[int][]Entry{}, nil
	}
	var deadline time.Time
	if block > 0 {
		deadline = time.Now().Add(block)
	}
	for {
		out, err := l.readEach(ctx, after, count)
		if err != nil || len(out) > 0 {
			return out, err
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return out, nil
		}
		if err := retry.Sleep(ctx, min(wait, l.poll)); err != nil {
			return nil, fmt.Errorf("read %d partitions: %w", len(after), err)
		}
	}
}

// readEach reads each partition with its own non-blocking XREAD, all in
// one pipeline, which a cluster client splits per node.
func (l *Log) readEach(ctx context.Context, after map[int]string, count int64) (map[int][]Entry, error) {
	out := make(map[int][]Entry)
	cmds := make(map[int]*redis.XStreamSliceCmd, len(after))
	// The pipeline's own error is that of its first failed command, which
	// may be a caught-up stream's redis.Nil: each command is checked below.
	_, _ = l.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for p, id := range after {
			if id == "" {
				id = "0"
			}
			cmds[p] = pipe.XRead(ctx, &redis.XReadArgs{Streams: []string{Key(l.prefix, p), id}, Count: max(count, 0), Block: -1})
		}
		return nil
	})
	for p, c := range cmds {
		res, err := c.Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read partition %d: %w", p, err)
		}
		for _, st := range res {
			if err := add(out, p, st.Messages); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// readBlocking reads all partitions in one XREAD, blocking up to block.
func (l *Log) readBlocking(ctx context.Context, after map[int]string, count int64, block time.Duration) (map[int][]Entry, error) {
	out := make(map[int][]Entry)
	if len(after) == 0 {
		return out, nil
	}
	keys := make(map[string]int, len(after))
	streams := make([]string, 0, 2*len(after))
	ids := make([]string, 0, len(after))
	for p, id := range after {
		k := Key(l.prefix, p)
		keys[k] = p
		streams = append(streams, k)
		if id == "" {
			id = "0"
		}
		ids = append(ids, id)
	}
	streams = append(streams, ids...)
	args := &redis.XReadArgs{Streams: streams, Count: max(count, 0), Block: -1}
	if block > 0 {
		// BLOCK 0 means "forever" to Redis: never let a sub-millisecond
		// block round down to it.
		args.Block = max(block, time.Millisecond)
	}
	res, err := l.rdb.XRead(ctx, args).Result()
	if errors.Is(err, redis.Nil) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %d partitions: %w", len(after), err)
	}
	for _, st := range res {
		p, ok := keys[st.Stream]
		if !ok {
			return nil, fmt.Errorf("read: unexpected stream %q in reply", st.Stream)
		}
		if err := add(out, p, st.Messages); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// add adds to out partition p's entries of an XREAD reply, if any.
func add(out map[int][]Entry, p int, msgs []redis.XMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	entries := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		e, err := entry(m)
		if err != nil {
			return fmt.Errorf("read partition %d: %w", p, err)
		}
		entries = append(entries, e)
	}
	out[p] = entries
	return nil
}

// Range returns up to count entries of partition p's stream after the ID
// after ("" or "0": from the start), in order (XRANGE). Unlike Read it
// never blocks and reads one stream, which makes it legal on Redis Cluster
// for any partition.
func (l *Log) Range(ctx context.Context, p int, after string, count int64) ([]Entry, error) {
	start := "-"
	if after != "" && after != "0" {
		start = "(" + after
	}
	msgs, err := l.rdb.XRangeN(ctx, Key(l.prefix, p), start, "+", count).Result()
	if err != nil {
		return nil, fmt.Errorf("range partition %d after %s: %w", p, after, err)
	}
	out := make([]Entry, len(msgs))
	for i, m := range msgs {
		if out[i], err = entry(m); err != nil {
			return nil, fmt.Errorf("range partition %d: %w", p, err)
		}
	}
	return out, nil
}

// Untrimmed reports whether partition p's stream still holds every entry
// ever appended to it: as many entries were added as it holds (Redis 7's
// entries-added; XTRIM does not move max-deleted-entry-id), or nothing
// was ever appended. The archive
// uses it to tell a log archived from its very first entry from one whose
// start was trimmed before archiving began.
func (l *Log) Untrimmed(ctx context.Context, p int) (bool, error) {
	info, err := l.rdb.XInfoStream(ctx, Key(l.prefix, p)).Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return true, nil
		}
		return false, fmt.Errorf("stream info of partition %d: %w", p, err)
	}
	return info.EntriesAdded == info.Length, nil
}

func entry(m redis.XMessage) (Entry, error) {
	v, ok := m.Values[dataField]
	if !ok {
		return Entry{}, fmt.Errorf("entry %s has no field %q", m.ID, dataField)
	}
	s, ok := v.(string)
	if !ok {
		return Entry{}, fmt.Errorf("entry %s: field %q is %T, not a string", m.ID, dataField, v)
	}
	return Entry{ID: m.ID, Data: []byte(s)}, nil
}

// LagExactBound is how far Lag counts entries one by one. Lag is exact when
// the lag, or the number of entries still in the stream at or before the
// given ID, is at most LagExactBound; otherwise it is an estimate.
const LagExactBound = 256

// lagScript answers Lag in one atomic step so the length and the counts
// describe the same stream. It counts at most LagExactBound+1 entries on each
// side of the given ID: Redis has no rank query on streams, and counting the
// whole stream would block the server for O(length). The entries' data is
// copied into Lua tables only to be counted, which is why the bound is small.
var lagScript = redis.NewScript(`
local len = redis.call('XLEN', KEYS[1])
if len == 0 then
  return {0, '', '', 0, 0}
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1][1]
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1][1]
local bound = tonumber(ARGV[2])
local fwd = #redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', bound + 1)
local back = 0
if fwd > bound then
  back = #redis.call('XRANGE', KEYS[1], '-', ARGV[1], 'COUNT', bound + 1)
end
return {len, last, first, fwd, back}
`)

// Lag returns the number of entries in partition p's stream after ID after,
// and the last entry ID ("" if empty).
//
// Precision: exact when the lag is at most LagExactBound (so 0 means caught
// up, always), and exact when at most LagExactBound entries at or before
// after remain in the stream (in particular when after is below the first
// entry, e.g. trimmed away: the lag is then the stream's length). Otherwise
// the lag is estimated by interpolating after between the first and last
// entry IDs' timestamps, and clamped to the range the counts proved
// (more than LagExactBound, fewer than length-LagExactBound). The cost is
// bounded: O(log n + LagExactBound) in Redis, one round trip.
func (l *Log) Lag(ctx context.Context, p int, after string) (int64, string, error) {
	if after == "" {
		after = "0"
	}
	res, err := lagScript.Run(ctx, l.rdb, []string{Key(l.prefix, p)}, after, LagExactBound).Slice()
	if err != nil {
		return 0, "", fmt.Errorf("lag of partition %d: %w", p, err)
	}
	if len(res) != 5 {
		return 0, "", fmt.Errorf("lag of partition %d: unexpected reply %v", p, res)
	}
	length, _ := res[0].(int64)
	last, _ := res[1].(string)
	first, _ := res[2].(string)
	fwd, _ := res[3].(int64)
	back, _ := res[4].(int64)
	switch {
	case length == 0:
		return 0, "", nil
	case fwd <= LagExactBound:
		return fwd, last, nil
	case back <= LagExactBound:
		return length - back, last, nil
	}
	return estimateLag(length, first, after, last), last, nil
}

// estimateLag interpolates the position of after between first and last.
// Within one millisecond Redis numbers entries by consecutive sequence
// numbers, so when all three share a millisecond the sequence numbers give
// the position (exactly, as long as nothing was deleted in between).
func estimateLag(length int64, first, after, last string) int64 {
	fm, fs := parseID(first)
	am, as := parseID(after)
	lm, ls := parseID(last)
	var frac float64
	switch {
	case lm > fm:
		am = min(max(am, fm), lm)
		frac = float64(lm-am) / float64(lm-fm)
	case ls > fs:
		as = min(max(as, fs), ls)
		frac = float64(ls-as) / float64(ls-fs)
	}
	est := int64(math.Round(frac * float64(length-1)))
	return min(max(est, LagExactBound+1), length-LagExactBound-1)
}

// CompareIDs compares two stream IDs ("ms-seq"; "" and "0" are the smallest)
// numerically: -1, 0, 1. A missing sequence part counts as 0, and an
// unparsable part as 0 as well, so that a corrupt ID never sorts after a
// real one.
func CompareIDs(a, b string) int {
	am, as := parseID(a)
	bm, bs := parseID(b)
	switch {
	case am < bm:
		return -1
	case am > bm:
		return 1
	case as < bs:
		return -1
	case as > bs:
		return 1
	}
	return 0
}

// parseID splits an "ms-seq" stream ID into its two numbers.
func parseID(id string) (ms, seq uint64) {
	msPart, seqPart, _ := strings.Cut(id, "-")
	return parseUint(msPart), parseUint(seqPart)
}

func parseUint(s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		// ParseUint answers an out-of-range number with the maximum.
		return 0
	}
	return n
}
