package history

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/tally"
)

// Row is one row of the history: the clicks of one ad from one country in
// one minute. The schema is part of the product (README, "History").
type Row struct {
	// Minute is the minute's start (Parquet TIMESTAMP(MILLIS, UTC)).
	Minute  int64  `parquet:"minute,timestamp(millisecond)"`
	AdID    string `parquet:"ad_id,dict"`
	Country string `parquet:"country,dict"`
	Clicks  int64  `parquet:"clicks"`
	// Revision is the minute's: the events counted after it completed
	// (late clicks).
	Revision int64 `parquet:"revision"`
	// UserIDHashes and IPHashes hold, per click of the row, the 64-bit
	// xxhash of its user_id and of its ip (canonical form): filters by
	// user_id or ip compare them.
	UserIDHashes []uint64 `parquet:"user_id_hashes,list"`
	IPHashes     []uint64 `parquet:"ip_hashes,list"`
}

const (
	metaFormat    = "clickagg.history.format"
	metaPartition = "clickagg.partition"
	metaFrom      = "clickagg.from_minute"
	metaTo        = "clickagg.to_minute"
	metaRev       = "clickagg.revision"
	metaClicks    = "clickagg.clicks"
	formatVersion = "1"
	prefix        = "history/"
)

// ErrCorrupt is wrapped by the errors of a file that is not what its key
// and metadata say.
var ErrCorrupt = errors.New("history: corrupt file")

// Key is the object key of partition p's file of the minutes [from, to)
// (Unix minutes, in one UTC hour) at revision rev.
func Key(p int, from, to int64, rev int) string {
	t := time.Unix(from*60, 0).UTC()
	return fmt.Sprintf("%sdate=%s/hour=%02d/partition=%03d/%d-%d_r%d.parquet", prefix, t.Format(time.DateOnly), t.Hour(), p, from, to, rev)
}

// HourPrefix is the prefix of partition p's keys in the UTC hour of minute.
func HourPrefix(p int, minute int64) string {
	t := time.Unix(minute*60, 0).UTC()
	return fmt.Sprintf("%sdate=%s/hour=%02d/partition=%03d/", prefix, t.Format(time.DateOnly), t.Hour(), p)
}

// Name is what a key names.
type Name struct {
	Partition int
	From, To  int64 // Unix minutes, [From, To)
	Revision  int
}

// ParseKey returns what a key names; ErrCorrupt if it is not a history
// key, or its folders do not match its name.
func ParseKey(key string) (Name, error) {
	var n Name
	rest, ok := strings.CutPrefix(key, prefix)
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 4 {
		return n, fmt.Errorf("%w: key %q is not history/date=/hour=/partition=/from-to_rN.parquet", ErrCorrupt, key)
	}
	if _, err := fmt.Sscanf(parts[3], "%d-%d_r%d.parquet", &n.From, &n.To, &n.Revision); err != nil || n.From >= n.To || n.Revision < 0 {
		return n, fmt.Errorf("%w: key %q: bad file name", ErrCorrupt, key)
	}
	ps, ok := strings.CutPrefix(parts[2], "partition=")
	var err error
	if n.Partition, err = strconv.Atoi(ps); !ok || err != nil {
		return n, fmt.Errorf("%w: key %q: bad partition", ErrCorrupt, key)
	}
	if Key(n.Partition, n.From, n.To, n.Revision) != key {
		return n, fmt.Errorf("%w: key %q: folders do not match the file name", ErrCorrupt, key)
	}
	return n, nil
}

// Encode encodes partition p's rows of the minutes [from, to) at revision
// rev. The bytes depend on the rows alone.
func Encode(n Name, final []tally.FinalRow) ([]byte, error) {
	rows := make([]Row, len(final))
	var clicks int64
	for i, r := range final {
		rows[i] = Row{Minute: r.Minute * 60_000, AdID: r.AdID, Country: r.Country, Clicks: r.Clicks, Revision: r.Revision,
			UserIDHashes: r.UserHashes, IPHashes: r.IPHashes}
		clicks += r.Clicks
	}
	buf := bytes.NewBuffer(make([]byte, 0, 4096+24*len(rows)))
	w := parquet.NewGenericWriter[Row](buf,
		parquet.Compression(archive.Compression),
		parquet.CreatedBy("clickagg", "history-"+formatVersion, ""),
		parquet.KeyValueMetadata(metaFormat, formatVersion),
		parquet.KeyValueMetadata(metaPartition, strconv.Itoa(n.Partition)),
		parquet.KeyValueMetadata(metaFrom, strconv.FormatInt(n.From, 10)),
		parquet.KeyValueMetadata(metaTo, strconv.FormatInt(n.To, 10)),
		parquet.KeyValueMetadata(metaRev, strconv.Itoa(n.Revision)),
		parquet.KeyValueMetadata(metaClicks, strconv.FormatInt(clicks, 10)),
	)
	if _, err := w.Write(rows); err != nil {
		return nil, fmt.Errorf("encode history %+v: %w", n, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encode history %+v: %w", n, err)
	}
	return buf.Bytes(), nil
}

// File is a history file read back.
type File struct {
	Key string
	Name
	Rows []Row
}

// Read decodes the file stored under key and checks it against its key and
// metadata: the rows' minutes must lie in its range and add up to the
// clicks the metadata says, each with a hash of each kind per click.
// Anything else is ErrCorrupt, naming the key.
func Read(key string, b []byte) (File, error) {
	fail := func(format string, args ...any) (File, error) {
		return File{}, fmt.Errorf("%w: %s: %s", ErrCorrupt, key, fmt.Sprintf(format, args...))
	}
	n, err := ParseKey(key)
	if err != nil {
		return File{}, err
	}
	f, err := parquet.OpenFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return fail("%v", err)
	}
	meta := func(k string) string { v, _ := f.Lookup(k); return v }
	if v := meta(metaFormat); v != formatVersion {
		return fail("format %q, this build reads %q", v, formatVersion)
	}
	if meta(metaPartition) != strconv.Itoa(n.Partition) || meta(metaFrom) != strconv.FormatInt(n.From, 10) ||
		meta(metaTo) != strconv.FormatInt(n.To, 10) || meta(metaRev) != strconv.Itoa(n.Revision) {
		return fail("metadata names partition %s, minutes %s to %s, revision %s", meta(metaPartition), meta(metaFrom), meta(metaTo), meta(metaRev))
	}
	clicks, err := strconv.ParseInt(meta(metaClicks), 10, 64)
	if err != nil {
		return fail("clicks %q", meta(metaClicks))
	}
	r := parquet.NewGenericReader[Row](f)
	defer r.Close()
	rows := make([]Row, r.NumRows())
	if k, err := r.Read(rows); k != len(rows) && err != nil {
		return fail("rows: %v", err)
	}
	var sum int64
	for i, row := range rows {
		if m := row.Minute / 60_000; row.Minute%60_000 != 0 || m < n.From || m >= n.To {
			return fail("row %d is of minute %d ms, outside the file's minutes", i, row.Minute)
		}
		if row.Clicks <= 0 || int64(len(row.UserIDHashes)) != row.Clicks || int64(len(row.IPHashes)) != row.Clicks {
			return fail("row %d has %d clicks, %d user and %d ip hashes", i, row.Clicks, len(row.UserIDHashes), len(row.IPHashes))
		}
		sum += row.Clicks
	}
	if sum != clicks {
		return fail("rows add up to %d clicks, metadata says %d", sum, clicks)
	}
	return File{Key: key, Name: n, Rows: rows}, nil
}
