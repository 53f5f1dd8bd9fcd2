package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/testserver"
)

const prefix = "archtest"

func TestChunkingCut(t *testing.T) {
	c := Chunking{Interval: time.Minute, MaxEvents: 10}
	id := func(sec int64, seq int) string { return fmt.Sprintf("%d-%d", (1_800_000_000+sec)*1000, seq) }
	tests := []struct {
		name   string
		ids    []string
		events []int
		n      int
		closed bool
	}{
		{"empty", nil, nil, 0, false},
		{"one interval, open", []string{id(0, 0), id(1, 0), id(59, 3)}, []int{1, 0, 2}, 3, false},
		{"next interval closes", []string{id(0, 0), id(30, 0), id(60, 0), id(61, 0)}, []int{1, 1, 1, 1}, 2, true},
		{"max events closes", []string{id(0, 0), id(1, 0), id(2, 0)}, []int{6, 4, 1}, 2, true},
		{"a first entry above max is alone", []string{id(0, 0), id(1, 0)}, []int{25, 0}, 1, true},
		{"an interval later, not just a minute later", []string{id(-1, 0), id(0, 0)}, []int{0, 0}, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, closed := c.Cut(tt.ids, tt.events)
			if n != tt.n || closed != tt.closed {
				t.Fatalf("Cut = %d, %v; want %d, %v", n, closed, tt.n, tt.closed)
			}
		})
	}
	for _, bad := range []Chunking{{Interval: 0, MaxEvents: 1}, {Interval: 7 * time.Minute, MaxEvents: 1}, {Interval: time.Minute}} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidChunking) {
			t.Errorf("Validate(%+v) = %v", bad, err)
		}
	}
}

// logEntry encodes a log entry of n events (ids prefix-i) and a tick.
func logEntry(prefix string, n int, tick int64) []byte {
	le := &clickaggv1.LogEntry{RouterId: "r1", TickMs: tick}
	for i := range n {
		le.Events = append(le.Events, &clickaggv1.LogEvent{
			EventId: fmt.Sprintf("%s-%d", prefix, i), AdId: fmt.Sprintf("ad-%d", i%7), ClickTimeMs: 1_800_000_000_000 + int64(i),
			UserId: fmt.Sprintf("u%d", i%13), Ip: "192.0.2.1", Country: []string{"US", "DE", "FR"}[i%3],
		})
	}
	b, err := proto.Marshal(le)
	if err != nil {
		panic(err)
	}
	return b
}

// TestFileRoundTrip encodes a chunk twice (same bytes), reads it back, and
// rebuilds the log entries it came from, ticks included; a file changed
// by one byte or stored under another key is refused, naming the key.
func TestFileRoundTrip(t *testing.T) {
	var entries []partlog.Entry
	var want []partlog.Entry
	for i := range 6 {
		var tick int64
		if i%2 == 1 {
			tick = int64(1_800_000_000_000 + i)
		}
		e := partlog.Entry{ID: fmt.Sprintf("1800000000%03d-%d", i, i), Data: logEntry(fmt.Sprint(i), i*3, tick)}
		entries = append(entries, e)
		if i > 0 {
			// Entry 0 has neither events nor a tick.
			want = append(want, e)
		}
	}
	a, err := EncodeEntries(17, "1799999999999-4", entries)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := EncodeEntries(17, "1799999999999-4", entries)
	if !bytes.Equal(a, b) {
		t.Fatal("the same chunk encodes to different bytes")
	}
	key := Key(17, entries[0].ID, entries[5].ID)
	if want := "raw/date=2027-01-15/hour=08/partition=017/1800000000000-0_1800000000005-5.parquet"; key != want {
		t.Fatalf("key %s, want %s", key, want)
	}
	c, err := ReadChunk(key, a)
	if err != nil {
		t.Fatal(err)
	}
	if c.Partition != 17 || c.First != entries[0].ID || c.Last != entries[5].ID || c.Previous != "1799999999999-4" || c.Entries != 6 || len(c.Rows) != 45 {
		t.Fatalf("chunk %+v", c)
	}
	got, err := c.LogEntries()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries rebuilt, want %d", len(got), len(want))
	}
	for i := range got {
		var g, w clickaggv1.LogEntry
		if err := proto.Unmarshal(got[i].Data, &g); err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(want[i].Data, &w); err != nil {
			t.Fatal(err)
		}
		w.RouterId = "" // not archived: it counts nothing
		if got[i].ID != want[i].ID || !proto.Equal(&g, &w) {
			t.Fatalf("entry %d: %s %v, want %s %v", i, got[i].ID, &g, want[i].ID, &w)
		}
	}

	for _, bad := range []struct {
		name string
		key  string
		data []byte
	}{
		{"other partition", strings.Replace(key, "partition=017", "partition=018", 1), a},
		{"other offsets", strings.Replace(key, "-5.parquet", "-6.parquet", 1), a},
		{"truncated", key, a[:len(a)/2]},
		{"not parquet", key, []byte("hello")},
	} {
		if _, err := ReadChunk(bad.key, bad.data); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad.key) {
			t.Errorf("%s: %v, want ErrCorrupt naming %s", bad.name, err, bad.key)
		}
	}
}

// TestEncodeBatches: the encoder hands the Parquet writer a chunk's rows a
// batch at a time, through one buffer it reuses for the next chunk, and
// the file is the one a single Write of all the rows makes, whatever the
// batch and whatever the encoder wrote before; the buffer keeps no row,
// nor the entries' data with it. The chunk is big enough for columns of
// several pages (256 KiB each), which the writer cuts between the rows it
// takes from a Write 64 at a time.
func TestEncodeBatches(t *testing.T) {
	var entries []partlog.Entry
	events := 0
	for i := range 2_700 {
		var tick int64
		if i%5 == 0 {
			tick = int64(1_800_000_000_000 + i)
		}
		entries = append(entries, partlog.Entry{ID: fmt.Sprintf("%d-0", 1_800_000_000_000+i), Data: logEntry(fmt.Sprint(i), i%37, tick)})
		events += i % 37
	}
	one := &encoder{batch: events + 1}
	want, err := one.encode(4, LogStart, entries, events)
	if err != nil {
		t.Fatal(err)
	}
	last := entries[len(entries)-1].ID
	c, err := ReadChunk(Key(4, entries[0].ID, last), want)
	if err != nil || len(c.Rows) != events {
		t.Fatalf("ReadChunk = %d rows, %v; want %d", len(c.Rows), err, events)
	}
	reused := &encoder{}
	if _, err := reused.encode(4, "", entries[7:], events); err != nil {
		t.Fatal(err)
	}
	if n, err := reused.count(4, entries[36]); n != 36 || err != nil {
		t.Fatalf("count = %d, %v; want 36", n, err)
	}
	for name, enc := range map[string]*encoder{"64": {batch: 64}, "100": {batch: 100}, "default": {}, "reused": reused} {
		if slices.ContainsFunc(enc.rows[:cap(enc.rows)], func(r Row) bool { return r != Row{} }) {
			t.Errorf("encoder %s: the buffer holds rows before the chunk", name)
		}
		got, err := enc.encode(4, LogStart, entries, events)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("batches of %s: the file differs from one Write's", name)
		}
		if slices.ContainsFunc(enc.rows[:cap(enc.rows)], func(r Row) bool { return r != Row{} }) {
			t.Errorf("batches of %s: the buffer still holds rows", name)
		}
	}
}

// TestArchiverStopsAtCorruptEntry: an entry that does not decode stops the
// archiver with an error naming it, before any chunk at or past it is
// written; the chunks that closed before the read that brought it are
// archived.
func TestArchiverStopsAtCorruptEntry(t *testing.T) {
	rdb := testserver.RedisClient(t)
	st := snapshot.New(rdb, prefix)
	const p, epoch, bad = 2, 1, 40
	ctx := context.Background()
	if err := st.Claim(ctx, p, epoch); err != nil {
		t.Fatal(err)
	}
	var entries []partlog.Entry
	for i := range 60 {
		ms := int64(1_800_000_000_000) + int64(i)*27_001
		e := partlog.Entry{ID: fmt.Sprintf("%d-0", ms), Data: logEntry(fmt.Sprint(i), i%9, 0)}
		if i == bad {
			e.Data = []byte{0xff}
		}
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: partlog.Key(prefix, p), ID: e.ID, Values: []any{"d", e.Data}}).Err(); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	b, err := OpenBucket(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cfg := testConfig()
	a, err := New(cfg, partlog.New(rdb, prefix), &offsets{Store: st}, b, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = a.Run(runCtx, p, epoch)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), entries[bad].ID) {
		t.Fatalf("Run = %v, want an error naming entry %s", err, entries[bad].ID)
	}

	// What is archived: every chunk that closed among the entries read
	// before the read of ReadCount entries that brought the corrupt one.
	read := bad - bad%int(cfg.ReadCount)
	var want []string
	events := make([]int, read)
	ids := make([]string, read)
	for i := range read {
		events[i], ids[i] = i%9, entries[i].ID
	}
	for {
		n, closed := cfg.Cut(ids, events)
		if !closed {
			break
		}
		want = append(want, Key(p, ids[0], ids[n-1]))
		ids, events = ids[n:], events[n:]
	}
	got, err := b.List(ctx, "raw/")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	_, _, last, _ := ParseKey(want[len(want)-1])
	if archived, err := st.Archived(ctx, p); err != nil || archived != last {
		t.Fatalf("archived offset %s, %v; want %s", archived, err, last)
	}
}

// offsets adapts snapshot.Store to Offsets and can fail on purpose: after
// failAfter successful saves it records the next offset, fails, and calls
// crash, as a process killed between the write and its answer would.
type offsets struct {
	*snapshot.Store
	mu        sync.Mutex
	saves     int
	failAfter int
	crash     func()
}

func (o *offsets) SaveArchived(ctx context.Context, p int, epoch uint64, offset string) error {
	o.mu.Lock()
	o.saves++
	fail := o.crash != nil && o.saves == o.failAfter+1
	o.mu.Unlock()
	if fail {
		o.crash()
		return errors.New("crashed")
	}
	err := o.Store.SaveArchived(ctx, p, epoch, offset)
	if errors.Is(err, snapshot.ErrStaleEpoch) {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return err
}

// recorder records every Put, to check that a chunk written again is the
// same object.
type recorder struct {
	Store
	mu   sync.Mutex
	puts map[string][][]byte
}

func (r *recorder) Put(ctx context.Context, key string, data []byte) error {
	r.mu.Lock()
	r.puts[key] = append(r.puts[key], slices.Clone(data))
	r.mu.Unlock()
	return r.Store.Put(ctx, key, data)
}

func testConfig() Config {
	return Config{Chunking: Chunking{Interval: time.Minute, MaxEvents: 40}, ReadCount: 7, Poll: 10 * time.Millisecond, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond}
}

// fill appends entries with explicit IDs spread over three hours to
// partition p's stream, and returns them.
func fill(t *testing.T, rdb redis.UniversalClient, p int) []partlog.Entry {
	t.Helper()
	ctx := context.Background()
	var out []partlog.Entry
	base := int64(1_800_000_000_000)
	for i := range 400 {
		ms := base + int64(i)*27_001 // about two entries a minute
		id := fmt.Sprintf("%d-%d", ms, i%3)
		var tick int64
		if i%4 == 0 {
			tick = ms
		}
		data := logEntry(fmt.Sprintf("e%d", i), i%9, tick)
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: partlog.Key(prefix, p), ID: id, Values: []any{"d", data}}).Err(); err != nil {
			t.Fatal(err)
		}
		out = append(out, partlog.Entry{ID: id, Data: data})
	}
	return out
}

// checkArchive reads every file of partition p back and checks that the
// files tile entries with no gap and no overlap, hold every event once,
// and end at the archived offset.
func checkArchive(t *testing.T, b *Bucket, st *snapshot.Store, p int, entries []partlog.Entry) {
	t.Helper()
	ctx := context.Background()
	keys, err := b.List(ctx, "raw/")
	if err != nil {
		t.Fatal(err)
	}
	var chunks []Chunk
	for _, k := range keys {
		data, err := b.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ReadChunk(k, data)
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, c)
	}
	slices.SortFunc(chunks, func(a, b Chunk) int { return partlog.CompareIDs(a.First, b.First) })
	i := 0
	prev := LogStart
	for _, c := range chunks {
		if c.Previous != prev {
			t.Fatalf("%s follows entry %q, want %q: the chain is broken", c.Key, c.Previous, prev)
		}
		prev = c.Last
		if c.First != entries[i].ID {
			t.Fatalf("%s starts at %s, want %s (gap or overlap)", c.Key, c.First, entries[i].ID)
		}
		got, err := c.LogEntries()
		if err != nil {
			t.Fatal(err)
		}
		j := 0
		for n := range c.Entries {
			e := entries[i+n]
			var le clickaggv1.LogEntry
			if err := proto.Unmarshal(e.Data, &le); err != nil {
				t.Fatal(err)
			}
			if len(le.Events) == 0 && le.TickMs == 0 {
				continue
			}
			var g clickaggv1.LogEntry
			if err := proto.Unmarshal(got[j].Data, &g); err != nil {
				t.Fatal(err)
			}
			le.RouterId = ""
			if got[j].ID != e.ID || !proto.Equal(&g, &le) {
				t.Fatalf("%s: entry %s differs from the log's", c.Key, e.ID)
			}
			j++
		}
		if j != len(got) {
			t.Fatalf("%s holds %d entries more than the log", c.Key, len(got)-j)
		}
		i += c.Entries
		if c.Last != entries[i-1].ID {
			t.Fatalf("%s ends at %s, its %d entries at %s", c.Key, c.Last, c.Entries, entries[i-1].ID)
		}
	}
	archived, err := st.Archived(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if i == 0 || archived != entries[i-1].ID {
		t.Fatalf("archived offset %s, files end at entry %d", archived, i)
	}
	// Only the last interval's entries may be left: its chunk is not
	// closed until an entry of the next interval exists.
	if rest := entries[i:]; len(rest) > 0 && idMillis(rest[0].ID)/60_000 != idMillis(entries[len(entries)-1].ID)/60_000 {
		t.Fatalf("%d entries from %s not archived", len(rest), rest[0].ID)
	}
}

// TestArchiverExactlyOnce archives a log of three hours in 1-minute chunks
// of at most 40 events, into each kind of bucket, killing the archiver
// twice between a file and its offset: the files tile the log exactly,
// every event once, and a chunk written again is the same object.
func TestArchiverExactlyOnce(t *testing.T) {
	forEachBucket(t, testArchiverExactlyOnce)
}

func testArchiverExactlyOnce(t *testing.T, b *Bucket) {
	rdb := testserver.RedisClient(t)
	st := snapshot.New(rdb, prefix)
	const p, epoch = 3, 7
	ctx := context.Background()
	if err := st.Claim(ctx, p, epoch); err != nil {
		t.Fatal(err)
	}
	entries := fill(t, rdb, p)
	rec := &recorder{Store: b, puts: map[string][][]byte{}}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, failAfter := range []int{25, 60, -1} {
		runCtx, cancel := context.WithCancel(ctx)
		off := &offsets{Store: st, failAfter: failAfter}
		if failAfter >= 0 {
			off.crash = cancel
		}
		a, err := New(testConfig(), partlog.New(rdb, prefix), off, rec, nil, logger)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- a.Run(runCtx, p, epoch) }()
		if failAfter < 0 {
			// The last run goes on until the last closed chunk is in.
			last := entries[len(entries)-1].ID
			testserver.Eventually(t, 30*time.Second, func() error {
				got, err := st.Archived(ctx, p)
				if err != nil {
					return err
				}
				if idMillis(got)/60_000 == idMillis(last)/60_000-1 || got == last {
					return nil
				}
				return fmt.Errorf("archived to %s", got)
			})
			time.Sleep(50 * time.Millisecond)
			cancel()
		}
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v, want context.Canceled", err)
		}
		cancel()
	}
	checkArchive(t, b, st, p, entries)
	again := 0
	for k, puts := range rec.puts {
		for _, d := range puts[1:] {
			if !bytes.Equal(d, puts[0]) {
				t.Fatalf("%s written again with other bytes", k)
			}
			again++
		}
	}
	if again < 2 {
		t.Fatalf("%d chunks written again after the two crashes, want 2", again)
	}
	t.Logf("%d files, %d written again after a crash", len(rec.puts), again)

	// A newer owner fences the archiver out.
	if err := st.Claim(ctx, p, epoch+1); err != nil {
		t.Fatal(err)
	}
	fill2 := func() {
		id := fmt.Sprintf("%d-0", idMillis(entries[len(entries)-1].ID)+3_600_000)
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: partlog.Key(prefix, p), ID: id, Values: []any{"d", logEntry("x", 1, 0)}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	fill2()
	a, _ := New(testConfig(), partlog.New(rdb, prefix), &offsets{Store: st}, b, nil, logger)
	if err := a.Run(ctx, p, epoch); !errors.Is(err, ErrFenced) {
		t.Fatalf("Run of a deposed owner = %v, want ErrFenced", err)
	}
}

// bucketKinds are the kinds of bucket the archive runs on, each as a
// function returning a new, empty bucket's URL: a directory and S3 (a real
// SeaweedFS server on loopback).
var bucketKinds = []struct {
	name string
	url  func(t *testing.T) string
}{
	{"dir", func(t *testing.T) string { return t.TempDir() }},
	{"s3", func(t *testing.T) string { return testserver.S3Bucket(t) }},
}

// forEachBucket runs test on a new bucket of each kind.
func forEachBucket(t *testing.T, test func(t *testing.T, b *Bucket)) {
	for _, kind := range bucketKinds {
		t.Run(kind.name, func(t *testing.T) {
			b, err := OpenBucket(context.Background(), kind.url(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			test(t, b)
		})
	}
}

func TestMain(m *testing.M) { os.Exit(testserver.Run(m)) }
