package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/semaphore"

	"github.com/clickagg/clickagg/breakage"
	"github.com/clickagg/clickagg/durable"
	"github.com/clickagg/clickagg/partlog"
)

// ErrStaleEpoch is returned for a write by an owner whose epoch is older than
// the partition's fence.
var ErrStaleEpoch = errors.New("snapshot: stale epoch")

// ErrNotFound is returned when a partition has no snapshot, or a snapshot has
// no such minute.
var ErrNotFound = errors.New("snapshot: not found")

// Write is one incremental snapshot of a partition.
type Write struct {
	Epoch uint64
	// Meta is an encoded clickaggv1.SnapshotMeta.
	Meta []byte
	// Minutes are the changed minutes in package tally's versioned minute
	// encoding, keyed by Unix minute. This package stores them as opaque
	// bytes. Each replaces the minute and deletes its late part.
	Minutes map[int64][]byte
	// Late are late parts (package tally's late events of a minute since
	// it was stored whole), keyed by Unix minute. Each replaces the
	// minute's late part; a minute is in Minutes or in Late, not both.
	Late map[int64][]byte
	// Drop lists minutes no longer part of the snapshot; they are deleted
	// with their late parts.
	Drop []int64
	// TrimLogBefore, when non-empty, trims the partition's log below this ID
	// (XTRIM MINID) in the same atomic step.
	TrimLogBefore string
	// KeepUnarchived lowers the trim to the partition's archived offset
	// (SaveArchived), read in the same step, and trims nothing while there
	// is none: the raw archive has not taken what lies above it yet.
	KeepUnarchived bool
}

// Loaded is a partition's stored snapshot.
type Loaded struct {
	Meta    []byte
	Minutes map[int64][]byte
	// Late are the stored late parts, keyed by Unix minute.
	Late map[int64][]byte
	// Epoch is the fence epoch, which may be higher than the epoch that
	// saved the snapshot if a newer owner has claimed since.
	Epoch uint64
}

// Store keeps snapshots and fences in Redis. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	// loaded is set once saveScript has been loaded into Redis's script
	// cache, which Save does before its first call: the script runs by
	// EVALSHA, and a NOSCRIPT reply would make go-redis send the whole
	// write again as an EVAL.
	loaded atomic.Bool
	// inFlight bounds the bytes of the saves this Store has sent to Redis
	// and not yet seen answered (see saveBudget).
	inFlight *semaphore.Weighted
	// w runs every write (claims, saves, archived offsets, history
	// marks): with replicas to wait for, a write succeeds only once they
	// have it, so a failover cannot undo a fence, or a snapshot whose
	// log entries were trimmed.
	w *durable.Writer
}

// Option configures a Store.
type Option func(*Store)

// WithWriter makes every write go through w, which waits for replicas as
// the operator asks (-redis.wait-replicas). Without it, a write succeeds
// once the primary has it.
func WithWriter(w *durable.Writer) Option {
	return func(s *Store) { s.w = w }
}

// saveBudget is how many bytes of saves a Store lets be in flight at once;
// a save of more than this waits until it is alone. Redis runs the saves
// one at a time on its one thread anyway, and several multi-MB saves sent
// at once only make it slower: it holds all their arguments (query
// buffers, then Lua's copies) at once. On two cores, 24 saves of 4.2 MB
// took 1.0 s one at a time and 1.4 s eight at a time (BenchmarkSaveConcurrent,
// AOF fsync always). Small saves, the usual incremental ones, still go
// together and share Redis's fsyncs.
const saveBudget = 4 << 20

// New returns a Store over rdb whose keys start with prefix. It does no I/O.
func New(rdb redis.UniversalClient, prefix string, opts ...Option) *Store {
	s := &Store{rdb: rdb, prefix: prefix, inFlight: semaphore.NewWeighted(saveBudget)}
	for _, o := range opts {
		o(s)
	}
	if s.w == nil {
		s.w = durable.New(rdb, durable.Options{})
	}
	return s
}

const metaField = "meta"

func (s *Store) fenceKey(p int) string {
	return s.prefix + ":{p" + strconv.Itoa(p) + "}:epoch"
}

func (s *Store) snapKey(p int) string {
	return s.prefix + ":{p" + strconv.Itoa(p) + "}:snap"
}

func (s *Store) archivedKey(p int) string {
	return s.prefix + ":{p" + strconv.Itoa(p) + "}:archived"
}

func (s *Store) historyKey(p int) string {
	return s.prefix + ":{p" + strconv.Itoa(p) + "}:history"
}

func (s *Store) historyStartKey(p int) string {
	return s.prefix + ":{p" + strconv.Itoa(p) + "}:history-start"
}

func minuteField(m int64) string {
	return "m:" + strconv.FormatInt(m, 10)
}

func lateField(m int64) string {
	return "l:" + strconv.FormatInt(m, 10)
}

// older compares epochs as decimal strings: Lua numbers are doubles and would
// round epochs above 2^53. Epochs are always written by strconv.FormatUint,
// so there are no leading zeros and a shorter string is a smaller number.
const luaOlder = `
local function older(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
`

// luaFenced refuses, with {0, fence}, a write whose epoch ARGV[1] is
// older than the fence at KEYS[1]; every fenced script starts with it.
const luaFenced = luaOlder + `
local fence = redis.call('GET', KEYS[1])
if fence and ` + luaFenceCheck + ` then
  return {0, fence}
end
`

// luaFenceCheck is the condition under which luaFenced refuses a write.
const luaFenceCheck = "older(ARGV[1], fence)"

// idLess compares stream IDs ("ms-seq" or "ms"): the two parts are below
// 2^53 in practice (milliseconds and a per-millisecond sequence), so
// doubles hold them exactly.
const luaIDLess = `
local function idparts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if not ms then
    return tonumber(id), 0
  end
  return tonumber(ms), tonumber(seq)
end
local function idless(a, b)
  local am, as = idparts(a)
  local bm, bs = idparts(b)
  if am ~= bm then return am < bm end
  return as < bs
end
`

// claimScript: KEYS[1] fence; ARGV[1] epoch. Replies {1, fence} when the
// fence is now ARGV[1], {0, fence} when the fence is higher.
//
// allow-oom: a Redis over maxmemory (noeviction) refuses every write that
// may grow memory, and without this flag the fence too. But raising a
// fence rewrites one small string, and refusing it would strand a dead
// owner's partitions until memory is freed; with it, partitions still
// move while Redis is full and their new owners load their snapshots
// (Load reads nothing through MULTI for the same reason). Saves stay
// refused.
const claimLua = "#!lua flags=allow-oom\n" + luaFenced + `
if fence ~= ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1])
end
return {1, ARGV[1]}
`

// saveScript: KEYS[1] fence, KEYS[2] snapshot hash, KEYS[3] partition log;
// ARGV[1] epoch, ARGV[2] meta, ARGV[3] trim-before ID or "", ARGV[4] number
// of fields n to set, then n (field, value) pairs (whole minutes first,
// then late parts), then the fields to delete.
//
// Redis runs a script atomically but does not roll it back when a command
// fails halfway, so the order matters: minutes, then the late parts they
// replace are deleted, then meta, then the log trim last, so that no
// failure can trim log entries without having stored the snapshot that
// makes them unnecessary. A failure between a whole minute and the delete
// of its late part leaves a part that extends an older state of the
// minute, which package tally's Restore recognizes and ignores. Fields are
// written one HSET each rather than unpacked into one call: unpack is
// limited to a few thousand values, and a call per minute copies nothing
// more.
const saveLua = luaIDLess + luaFenced + `
if fence ~= ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1])
end
local n = tonumber(ARGV[4])
local i = 5
local stop = 5 + 2 * n
while i < stop do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = stop, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[j])
end
redis.call('HSET', KEYS[2], 'meta', ARGV[2])
local trim = ARGV[3]
if trim ~= '' and KEYS[4] then
  local archived = redis.call('GET', KEYS[4])
  if not archived then
    trim = ''
  elseif idless(archived, trim) then
    trim = archived
  end
end
if trim ~= '' then
  redis.call('XTRIM', KEYS[3], 'MINID', trim)
end
return {1, ARGV[1]}
`

// archivedScript: KEYS[1] fence, KEYS[2] archived offset; ARGV[1] epoch,
// ARGV[2] offset. Moves the offset forward only, and only for an epoch
// the fence allows; replies like saveScript.
const archivedLua = luaIDLess + luaFenced + `
local cur = redis.call('GET', KEYS[2])
if not cur or idless(cur, ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
return {1, ARGV[1]}
`

// historyScript: KEYS[1] fence, KEYS[2] history mark, KEYS[3] history
// start; ARGV[1] epoch, ARGV[2] end minute (decimal, no leading zeros, so
// older compares it too), ARGV[3] start minute or -1. Moves the mark
// forward only, for an epoch the fence allows, and records the start once.
const historyLua = luaFenced + `
local cur = redis.call('GET', KEYS[2])
if not cur or older(cur, ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
if ARGV[3] ~= '-1' then
  redis.call('SET', KEYS[3], ARGV[3], 'NX')
end
return {1, ARGV[1]}
`

var (
	claimScript    = redis.NewScript(claimLua)
	saveScript     = redis.NewScript(saveLua)
	archivedScript = redis.NewScript(archivedLua)
	historyScript  = redis.NewScript(historyLua)
)

// runFenced runs a fencing script and maps its reply.
func (s *Store) runFenced(ctx context.Context, script *redis.Script, keys []string, args ...any) error {
	if breakage.On(breakage.FencingOff) {
		// Broken on purpose: the fence refuses every write of an epoch
		// older than it (docs/architecture.md, invariant 5). The same
		// script runs with its check made false, so a paused or cut-off
		// ex-owner writes over the current owner's snapshot.
		script = unfenced(script)
	}
	wr, cmd := durable.Script(ctx, script, keys, args...)
	if err := s.w.Do(ctx, wr); err != nil {
		return err
	}
	res, err := cmd.Slice()
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return fmt.Errorf("unexpected script reply %v", res)
	}
	ok, _ := res[0].(int64)
	fence, _ := res[1].(string)
	if ok != 1 {
		return fmt.Errorf("fence is at epoch %s: %w", fence, ErrStaleEpoch)
	}
	return nil
}

// unfenced returns script with the fence's check removed
// (breakage.FencingOff). Only that broken branch calls it, so the release
// build links none of it.
func unfenced(script *redis.Script) *redis.Script {
	for _, src := range []string{claimLua, saveLua, archivedLua, historyLua} {
		if redis.NewScript(src).Hash() == script.Hash() {
			return redis.NewScript(strings.Replace(src, luaFenceCheck, "false", 1))
		}
	}
	panic("snapshot: unfenced: not a fenced script")
}

// Claim raises partition p's fence to epoch; ErrStaleEpoch if the fence is
// already higher. Equal is allowed (same owner).
func (s *Store) Claim(ctx context.Context, p int, epoch uint64) error {
	e := strconv.FormatUint(epoch, 10)
	if err := s.runFenced(ctx, claimScript, []string{s.fenceKey(p)}, e); err != nil {
		return fmt.Errorf("claim partition %d at epoch %d: %w", p, epoch, err)
	}
	return nil
}

// Save writes w atomically (one Lua script) iff w.Epoch >= the fence (and
// raises the fence to w.Epoch); else ErrStaleEpoch and nothing is written.
func (s *Store) Save(ctx context.Context, p int, w Write) error {
	if w.TrimLogBefore != "" && !validID(w.TrimLogBefore) {
		return fmt.Errorf("save snapshot %d: invalid log ID %q to trim before", p, w.TrimLogBefore)
	}
	// The blobs go to the client as they are: go-redis writes []byte
	// arguments straight to the connection, so the only copies are the ones
	// Redis makes itself.
	args := make([]any, 0, 4+2*len(w.Minutes)+2*len(w.Late)+len(w.Minutes)+2*len(w.Drop))
	args = append(args, strconv.FormatUint(w.Epoch, 10), w.Meta, w.TrimLogBefore, len(w.Minutes)+len(w.Late))
	size := int64(len(w.Meta))
	for m, v := range w.Minutes {
		if _, ok := w.Late[m]; ok {
			return fmt.Errorf("save snapshot %d: minute %d both whole and as a late part", p, m)
		}
		args = append(args, minuteField(m), v)
		size += int64(len(v))
	}
	for m, v := range w.Late {
		args = append(args, lateField(m), v)
		size += int64(len(v))
	}
	for m := range w.Minutes {
		args = append(args, lateField(m))
	}
	for _, m := range w.Drop {
		_, whole := w.Minutes[m]
		_, late := w.Late[m]
		if whole || late {
			return fmt.Errorf("save snapshot %d: minute %d both changed and dropped", p, m)
		}
		args = append(args, minuteField(m), lateField(m))
	}
	keys := []string{s.fenceKey(p), s.snapKey(p), partlog.Key(s.prefix, p)}
	if w.KeepUnarchived {
		keys = append(keys, s.archivedKey(p))
	}
	if !s.loaded.Load() {
		// A failure here only costs the resend it would have spared.
		if saveScript.Load(ctx, s.rdb).Err() == nil {
			s.loaded.Store(true)
		}
	}
	size = min(size, saveBudget)
	if err := s.inFlight.Acquire(ctx, size); err != nil {
		return fmt.Errorf("save snapshot %d at epoch %d: %w", p, w.Epoch, err)
	}
	defer s.inFlight.Release(size)
	if err := s.runFenced(ctx, saveScript, keys, args...); err != nil {
		return fmt.Errorf("save snapshot %d at epoch %d: %w", p, w.Epoch, err)
	}
	return nil
}

// SaveArchived records offset, the ID of the last log entry of partition p
// that the raw archive holds, if epoch is not older than p's fence
// (ErrStaleEpoch otherwise). The offset only moves forward: an older one is
// accepted and changes nothing. Save with KeepUnarchived trims the log no
// lower than it.
func (s *Store) SaveArchived(ctx context.Context, p int, epoch uint64, offset string) error {
	if !validID(offset) {
		return fmt.Errorf("save archived offset of %d: invalid log ID %q", p, offset)
	}
	keys := []string{s.fenceKey(p), s.archivedKey(p)}
	if err := s.runFenced(ctx, archivedScript, keys, strconv.FormatUint(epoch, 10), offset); err != nil {
		return fmt.Errorf("save archived offset of %d at epoch %d: %w", p, epoch, err)
	}
	return nil
}

// SaveHistory records that the history holds partition p's minutes before
// end (Unix minutes), from start on, if epoch is not older than p's fence
// (ErrStaleEpoch otherwise). The mark only moves forward; the start is
// recorded by the first save that gives one (start -1 gives none) and
// kept.
func (s *Store) SaveHistory(ctx context.Context, p int, epoch uint64, start, end int64) error {
	if end < 0 || start < -1 || start > end {
		return fmt.Errorf("save history mark of %d: minutes %d to %d", p, start, end)
	}
	keys := []string{s.fenceKey(p), s.historyKey(p), s.historyStartKey(p)}
	if err := s.runFenced(ctx, historyScript, keys, strconv.FormatUint(epoch, 10), strconv.FormatInt(end, 10), strconv.FormatInt(start, 10)); err != nil {
		return fmt.Errorf("save history mark of %d at epoch %d: %w", p, epoch, err)
	}
	return nil
}

// History returns the minute before which the history holds partition p,
// and false when none is recorded.
func (s *Store) History(ctx context.Context, p int) (int64, bool, error) {
	v, err := s.rdb.Get(ctx, s.historyKey(p)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("history mark of %d: %w", p, err)
	}
	h, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("history mark of %d: %q: %w", p, v, err)
	}
	return h, true, nil
}

// HistoryStart returns the first minute partition p's history holds, and
// false when none is recorded (no history yet, or one written before the
// start was recorded).
func (s *Store) HistoryStart(ctx context.Context, p int) (int64, bool, error) {
	v, err := s.rdb.Get(ctx, s.historyStartKey(p)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("history start of %d: %w", p, err)
	}
	h, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("history start of %d: %q: %w", p, v, err)
	}
	return h, true, nil
}

// Archived returns partition p's archived offset, "" if none is recorded.
func (s *Store) Archived(ctx context.Context, p int) (string, error) {
	v, err := s.rdb.Get(ctx, s.archivedKey(p)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("archived offset of %d: %w", p, err)
	}
	return v, nil
}

// validID reports whether id is a stream ID ("ms" or "ms-seq"). XTRIM would
// refuse anything else, but only after the script had written the snapshot.
func validID(id string) bool {
	ms, seq, hasSeq := strings.Cut(id, "-")
	if _, err := strconv.ParseUint(ms, 10, 64); err != nil {
		return false
	}
	if hasSeq {
		if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
			return false
		}
	}
	return true
}

// Load returns the latest snapshot of p, or ErrNotFound.
func (s *Store) Load(ctx context.Context, p int) (Loaded, error) {
	var hash *redis.MapStringStringCmd
	var fence *redis.StringCmd
	// The fence is read after the hash, in order on one connection (both
	// keys are on one node): it only grows and is raised before any save
	// of its epoch, so it is at least the epoch of whoever wrote the hash
	// read, and an owner older than that sees Epoch above its own. Not
	// MULTI: a Redis over maxmemory refuses every command queued in a
	// transaction, reads too, and a snapshot must load while Redis is full.
	_, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		hash = pipe.HGetAll(ctx, s.snapKey(p))
		fence = pipe.Get(ctx, s.fenceKey(p))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return Loaded{}, fmt.Errorf("load snapshot %d: %w", p, err)
	}
	fields, err := hash.Result()
	if err != nil {
		return Loaded{}, fmt.Errorf("load snapshot %d: %w", p, err)
	}
	meta, ok := fields[metaField]
	if !ok {
		return Loaded{}, fmt.Errorf("load snapshot %d: %w", p, ErrNotFound)
	}
	l := Loaded{Meta: replyBytes(meta), Minutes: make(map[int64][]byte, len(fields)-1), Late: map[int64][]byte{}}
	for f, v := range fields {
		if f == metaField {
			continue
		}
		into := l.Minutes
		ms, ok := strings.CutPrefix(f, "m:")
		if !ok {
			into = l.Late
			ms, ok = strings.CutPrefix(f, "l:")
		}
		if !ok {
			return Loaded{}, fmt.Errorf("load snapshot %d: unexpected field %q", p, f)
		}
		m, err := strconv.ParseInt(ms, 10, 64)
		if err != nil {
			return Loaded{}, fmt.Errorf("load snapshot %d: field %q: %w", p, f, err)
		}
		into[m] = replyBytes(v)
	}
	e, err := fence.Result()
	switch {
	case errors.Is(err, redis.Nil):
		// A snapshot without a fence was not written by Save; treat it as
		// epoch 0 rather than refusing to recover.
	case err != nil:
		return Loaded{}, fmt.Errorf("load snapshot %d: fence: %w", p, err)
	default:
		if l.Epoch, err = strconv.ParseUint(e, 10, 64); err != nil {
			return Loaded{}, fmt.Errorf("load snapshot %d: fence %q: %w", p, e, err)
		}
	}
	return l, nil
}

// replyBytes returns the bytes of s, a bulk-string reply that go-redis has
// just read, without copying them. go-redis reads every bulk string into a
// buffer of its own and makes the string from it without a copy, so the
// bytes belong to this reply alone (its StringCmd.Bytes hands them out the
// same way); a snapshot's minutes are most of what Load reads, and copying
// them would double its allocation.
func replyBytes(s string) []byte {
	if s == "" {
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
