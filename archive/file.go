package archive

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// Row is one click of the archive, a column each field. The schema is part
// of the product: README and docs/archive.md document it.
type Row struct {
	EventID string `parquet:"event_id"`
	AdID    string `parquet:"ad_id,dict"`
	// ClickTime is in Unix milliseconds (Parquet TIMESTAMP(MILLIS, UTC)).
	ClickTime int64  `parquet:"click_time,timestamp(millisecond)"`
	UserID    string `parquet:"user_id"`
	IP        string `parquet:"ip"`
	Country   string `parquet:"country,dict"`
	// LogPartition, LogOffset and EntryIndex say where the click was in the
	// log: the partition, the stream ID of its entry and its position in
	// the entry. (Not named "partition", which the Hive path holds.)
	LogPartition int32  `parquet:"log_partition"`
	LogOffset    string `parquet:"log_offset,dict"`
	EntryIndex   int32  `parquet:"entry_index"`
}

// Key-value metadata of a file.
const (
	metaFormat      = "clickagg.archive.format"
	metaPartition   = "clickagg.partition"
	metaFirst       = "clickagg.first_offset"
	metaLast        = "clickagg.last_offset"
	metaPrevious    = "clickagg.previous_offset"
	metaEntries     = "clickagg.entries"
	metaEvents      = "clickagg.events"
	metaTicks       = "clickagg.ticks"
	formatVersion   = "1"
	rawPrefix       = "raw/"
	createdByApp    = "clickagg"
	createdByFormat = "archive-" + formatVersion
)

// LogStart is the previous offset of a chunk that starts its partition's
// log: archiving began before anything was trimmed from it.
const LogStart = "0-0"

// ErrCorrupt is wrapped by the errors of a file that is not what its key
// and metadata say.
var ErrCorrupt = errors.New("archive: corrupt file")

// Key is the object key of the chunk of partition p from entry first to
// entry last.
func Key(p int, first, last string) string {
	t := time.UnixMilli(idMillis(first)).UTC()
	return fmt.Sprintf("%sdate=%s/hour=%02d/partition=%03d/%s_%s.parquet", rawPrefix, t.Format(time.DateOnly), t.Hour(), p, first, last)
}

// PartitionPrefix is the prefix of partition p's keys in the hour of t.
func PartitionPrefix(p int, t time.Time) string {
	t = t.UTC()
	return fmt.Sprintf("%sdate=%s/hour=%02d/partition=%03d/", rawPrefix, t.Format(time.DateOnly), t.Hour(), p)
}

// ParseKey returns the partition and offsets a key names; ErrCorrupt if
// it is not an archive key.
func ParseKey(key string) (p int, first, last string, err error) {
	rest, ok := strings.CutPrefix(key, rawPrefix)
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 4 {
		return 0, "", "", fmt.Errorf("%w: key %q is not raw/date=/hour=/partition=/first_last.parquet", ErrCorrupt, key)
	}
	ps, ok := strings.CutPrefix(parts[2], "partition=")
	if p, err = strconv.Atoi(ps); !ok || err != nil {
		return 0, "", "", fmt.Errorf("%w: key %q: bad partition", ErrCorrupt, key)
	}
	name, ok := strings.CutSuffix(parts[3], ".parquet")
	first, last, ok2 := strings.Cut(name, "_")
	if !ok || !ok2 {
		return 0, "", "", fmt.Errorf("%w: key %q: bad file name", ErrCorrupt, key)
	}
	return p, first, last, nil
}

// encoder encodes chunks. It decodes a chunk's entries only as it
// encodes the chunk, a batch of rows at a time, into one buffer of rows
// that it reuses for the next batch and the next chunk: the archiver holds
// a chunk's entries as read, which rows kept until the chunk closes would
// more than double, and rows made per chunk would be as much garbage.
type encoder struct {
	rows []Row
	// batch is how many rows encode hands the Parquet writer at a time,
	// rowBatch if 0.
	batch int
}

// writeRows is how many rows parquet-go's writer takes from a Write at a
// time (its maxRowsPerWrite), checking after each whether a page is full:
// handed rows in multiples of it, the writer cuts the pages where one
// Write of all the rows would, and the file has the same bytes
// (TestEncodeBatches).
const writeRows = 64

// rowBatch is about how many rows encode hands the Parquet writer at a
// time, and so how many its buffer holds.
const rowBatch = 16 * writeRows

// encode encodes the entries of partition p that follow the entry prev
// ("" at the start of the archive) as a file; events, the number of events
// the entries hold, sizes its buffer. Every entry must have been checked
// by count. The bytes depend on the entries and prev alone: prev is the
// archived offset the chunk was cut after, which every writer of the
// chunk reads the same.
func (c *encoder) encode(p int, prev string, entries []partlog.Entry, events int) ([]byte, error) {
	batch := c.batch
	if batch == 0 {
		batch = rowBatch
	}
	rows := c.rows[:0]
	defer func() {
		// The rows alias the entries' data: cleared, the buffer keeps
		// none of it from being collected once the chunk is written.
		clear(rows)
		c.rows = rows[:0]
	}()
	buf := bytes.NewBuffer(make([]byte, 0, 4096+32*events))
	// The number of events and the ticks are known once every entry is
	// decoded; they are set before Close writes the footer, in the places
	// these empty values hold in the sorted metadata.
	w := parquet.NewGenericWriter[Row](buf,
		parquet.Compression(Compression),
		parquet.CreatedBy(createdByApp, createdByFormat, ""),
		parquet.KeyValueMetadata(metaFormat, formatVersion),
		parquet.KeyValueMetadata(metaPartition, strconv.Itoa(p)),
		parquet.KeyValueMetadata(metaFirst, entries[0].ID),
		parquet.KeyValueMetadata(metaLast, entries[len(entries)-1].ID),
		parquet.KeyValueMetadata(metaPrevious, prev),
		parquet.KeyValueMetadata(metaEntries, strconv.Itoa(len(entries))),
		parquet.KeyValueMetadata(metaEvents, ""),
		parquet.KeyValueMetadata(metaTicks, ""),
	)
	written := 0
	// flush writes the rows decoded so far, all of them or a multiple of
	// writeRows, and keeps the rest for the next.
	flush := func(all bool) error {
		k := len(rows)
		if !all {
			k -= k % writeRows
		}
		if _, err := w.Write(rows[:k]); err != nil {
			return fmt.Errorf("encode chunk of partition %d: %w", p, err)
		}
		written += k
		m := copy(rows, rows[k:])
		clear(rows[m:])
		rows = rows[:m]
		return nil
	}
	var ticks strings.Builder
	for _, e := range entries {
		var tick int64
		var err error
		if rows, tick, err = decodeEntry(rows, p, e, false); err != nil {
			return nil, fmt.Errorf("encode chunk of partition %d: %w", p, err)
		}
		if tick != 0 {
			if ticks.Len() > 0 {
				ticks.WriteByte(',')
			}
			ticks.WriteString(e.ID)
			ticks.WriteByte(':')
			ticks.WriteString(strconv.FormatInt(tick, 10))
		}
		if len(rows) >= batch {
			if err := flush(false); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(true); err != nil {
		return nil, err
	}
	w.SetKeyValueMetadata(metaEvents, strconv.Itoa(written))
	w.SetKeyValueMetadata(metaTicks, ticks.String())
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encode chunk of partition %d: %w", p, err)
	}
	return buf.Bytes(), nil
}

// count checks that log entry e of partition p decodes, and returns its
// number of events: the archiver checks an entry when it reads it, so that
// it stops at a corrupt entry before archiving anything past it. It
// decodes into the buffer of rows, which it leaves empty.
func (c *encoder) count(p int, e partlog.Entry) (int, error) {
	rows, _, err := decodeEntry(c.rows[:0], p, e, true)
	clear(rows)
	c.rows = rows[:0]
	if err != nil {
		return 0, err
	}
	return len(rows), nil
}

// Chunk is a file read back.
type Chunk struct {
	Key       string
	Partition int
	// First and Last are the IDs of the chunk's first and last entries;
	// Entries is how many entries it covers, Events how many events.
	First, Last string
	// Previous is the last entry of the chunk before this one; for the
	// first chunk of the archive, LogStart if it starts the log, "" if
	// entries before it were trimmed unarchived. The files of a
	// partition form a chain, so a missing file is seen where it breaks.
	Previous string
	Entries  int
	Rows     []Row
	// Ticks maps an entry ID to the tick it carried.
	Ticks map[string]int64
}

// ReadChunk decodes the file stored under key and checks it against its
// key and metadata. A file that does not match them, or that Parquet cannot
// read, is ErrCorrupt, naming the key.
func ReadChunk(key string, b []byte) (Chunk, error) {
	c := Chunk{Key: key}
	fail := func(format string, args ...any) (Chunk, error) {
		return Chunk{}, fmt.Errorf("%w: %s: %s", ErrCorrupt, key, fmt.Sprintf(format, args...))
	}
	p, first, last, err := ParseKey(key)
	if err != nil {
		return Chunk{}, err
	}
	f, err := parquet.OpenFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return fail("%v", err)
	}
	meta := func(k string) string { v, _ := f.Lookup(k); return v }
	if v := meta(metaFormat); v != formatVersion {
		return fail("format %q, this build reads %q", v, formatVersion)
	}
	c.Partition, c.First, c.Last = p, first, last
	if meta(metaPartition) != strconv.Itoa(p) || meta(metaFirst) != first || meta(metaLast) != last {
		return fail("metadata names partition %s, offsets %s to %s", meta(metaPartition), meta(metaFirst), meta(metaLast))
	}
	c.Previous = meta(metaPrevious)
	if c.Previous != "" && partlog.CompareIDs(c.Previous, first) >= 0 {
		return fail("previous offset %s is not before the first, %s", c.Previous, first)
	}
	if c.Entries, err = strconv.Atoi(meta(metaEntries)); err != nil || c.Entries < 1 {
		return fail("entries %q", meta(metaEntries))
	}
	events, err := strconv.Atoi(meta(metaEvents))
	if err != nil {
		return fail("events %q", meta(metaEvents))
	}
	c.Ticks = map[string]int64{}
	if t := meta(metaTicks); t != "" {
		for _, kv := range strings.Split(t, ",") {
			id, ms, ok := strings.Cut(kv, ":")
			v, err := strconv.ParseInt(ms, 10, 64)
			if !ok || err != nil {
				return fail("tick %q", kv)
			}
			c.Ticks[id] = v
		}
	}
	r := parquet.NewGenericReader[Row](f)
	defer r.Close()
	c.Rows = make([]Row, r.NumRows())
	if n, err := r.Read(c.Rows); n != len(c.Rows) && err != nil {
		return fail("rows: %v", err)
	}
	if len(c.Rows) != events {
		return fail("%d rows, metadata says %d events", len(c.Rows), events)
	}
	for i, row := range c.Rows {
		if int(row.LogPartition) != p {
			return fail("row %d is of partition %d", i, row.LogPartition)
		}
	}
	return c, nil
}

// LogEntries rebuilds, in log order, the log entries of the chunk that hold
// events or a tick (the others change no count), encoded as the log holds
// them.
func (c Chunk) LogEntries() ([]partlog.Entry, error) {
	var out []partlog.Entry
	for id, e := range c.Decoded() {
		b, err := proto.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("%s: entry %s: %w", c.Key, id, err)
		}
		out = append(out, partlog.Entry{ID: id, Data: b})
	}
	return out, nil
}

// Decoded yields, in log order, the log entries of the chunk that hold
// events or a tick, decoded: what a recount applies.
func (c Chunk) Decoded() iter.Seq2[string, *clickaggv1.LogEntry] {
	return func(yield func(string, *clickaggv1.LogEntry) bool) {
		byID := map[string]*clickaggv1.LogEntry{}
		var ids []string
		get := func(id string) *clickaggv1.LogEntry {
			e, ok := byID[id]
			if !ok {
				e = &clickaggv1.LogEntry{}
				byID[id] = e
				ids = append(ids, id)
			}
			return e
		}
		for _, row := range c.Rows {
			e := get(row.LogOffset)
			e.Events = append(e.Events, &clickaggv1.LogEvent{
				EventId: row.EventID, AdId: row.AdID, ClickTimeMs: row.ClickTime,
				UserId: row.UserID, Ip: row.IP, Country: row.Country,
			})
		}
		for id, tick := range c.Ticks {
			get(id).TickMs = tick
		}
		slices.SortFunc(ids, partlog.CompareIDs)
		for _, id := range ids {
			if !yield(id, byID[id]) {
				return
			}
		}
	}
}

// EncodeEntries checks and encodes partition p's log entries as one
// archive file's bytes, the work the archiver does per chunk (prev is the
// log ID before the first entry, empty from the log's start): for
// measuring what archiving costs per event.
func EncodeEntries(p int, prev string, entries []partlog.Entry) ([]byte, error) {
	var c encoder
	events := 0
	for _, e := range entries {
		n, err := c.count(p, e)
		if err != nil {
			return nil, err
		}
		events += n
	}
	return c.encode(p, prev, entries, events)
}
