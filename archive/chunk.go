package archive

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/clickagg/clickagg/partlog"
)

// Chunking decides where chunks end, from the entries alone.
type Chunking struct {
	// Interval: a chunk holds entries appended in one interval of this
	// length (by entry ID time, intervals aligned to the Unix epoch).
	Interval time.Duration
	// MaxEvents bounds the events of a chunk, unless its first entry alone
	// has more.
	MaxEvents int
}

// ErrInvalidChunking is wrapped by Chunking.Validate's errors.
var ErrInvalidChunking = errors.New("archive: invalid chunking")

// Validate checks c.
func (c Chunking) Validate() error {
	switch {
	case c.Interval < time.Second:
		return fmt.Errorf("%w: interval %v is below 1s", ErrInvalidChunking, c.Interval)
	case time.Hour%c.Interval != 0:
		// A chunk must lie in one hour folder.
		return fmt.Errorf("%w: interval %v does not divide an hour", ErrInvalidChunking, c.Interval)
	case c.MaxEvents < 1:
		return fmt.Errorf("%w: max events %d is below 1", ErrInvalidChunking, c.MaxEvents)
	}
	return nil
}

// Cut returns how many of entries, which start a chunk, the chunk holds,
// and whether it is closed: whether the entry after it is among entries, so
// that no later read can change it. events[i] is the number of events of
// entries[i].
func (c Chunking) Cut(ids []string, events []int) (n int, closed bool) {
	if len(ids) == 0 {
		return 0, false
	}
	interval := c.Interval.Milliseconds()
	first := idMillis(ids[0]) / interval
	total := 0
	for i, id := range ids {
		if idMillis(id)/interval != first {
			return i, true
		}
		if i > 0 && total+events[i] > c.MaxEvents {
			return i, true
		}
		total += events[i]
	}
	return len(ids), false
}

// idMillis is the time part of a stream ID.
func idMillis(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	v, _ := strconv.ParseInt(ms, 10, 64)
	return v
}

// decodeEntry decodes log entry e of partition p as proto.Unmarshal would
// (unknown fields skipped, the last of a repeated scalar wins, strings
// must be valid UTF-8, checked if check is set), appending its events to
// rows with where they came from, and returns its tick. The rows' strings
// alias e.Data, so archiving allocates nothing per string: rows must not
// outlive the chunk's write. Checking UTF-8 is half the time of decoding:
// an entry checked when it was read is not checked again when written.
func decodeEntry(rows []Row, p int, e partlog.Entry, check bool) ([]Row, int64, error) {
	var tick int64
	b := e.Data
	events := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num > protowire.MaxValidNumber {
			return rows, 0, fmt.Errorf("entry %s: %w", e.ID, tagError(n))
		}
		b = b[n:]
		switch {
		case num == 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return rows, 0, fmt.Errorf("entry %s: event %d: %w", e.ID, events, protowire.ParseError(n))
			}
			r, err := decodeEvent(v, check)
			if err != nil {
				return rows, 0, fmt.Errorf("entry %s: event %d: %w", e.ID, events, err)
			}
			r.LogPartition, r.LogOffset, r.EntryIndex = int32(p), e.ID, int32(events)
			rows = append(rows, r)
			events++
			b = b[n:]
		case num == 3 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return rows, 0, fmt.Errorf("entry %s: tick: %w", e.ID, protowire.ParseError(n))
			}
			tick = int64(v)
			b = b[n:]
		default:
			if check && num == 1 && typ == protowire.BytesType {
				// router_id: checked like a string, not kept.
				v, _ := protowire.ConsumeBytes(b)
				if !utf8.Valid(v) {
					return rows, 0, fmt.Errorf("entry %s: router_id is not valid UTF-8", e.ID)
				}
			}
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return rows, 0, fmt.Errorf("entry %s: field %d: %w", e.ID, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return rows, tick, nil
}

// errFieldNumber is a tag's field number over protowire.MaxValidNumber:
// protowire.ConsumeTag reads numbers up to 2^31-1, proto.Unmarshal and the
// aggregators (package tally) refuse them, so the archive does too.
var errFieldNumber = errors.New("field number over 2^29-1")

// tagError is the error of a tag for which protowire.ConsumeTag returned n.
func tagError(n int) error {
	if n < 0 {
		return protowire.ParseError(n)
	}
	return errFieldNumber
}

// decodeEvent decodes a clickaggv1.LogEvent into a row.
func decodeEvent(b []byte, check bool) (Row, error) {
	var r Row
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num > protowire.MaxValidNumber {
			return Row{}, tagError(n)
		}
		b = b[n:]
		var s *string
		switch num {
		case 1:
			s = &r.EventID
		case 2:
			s = &r.AdID
		case 4:
			s = &r.UserID
		case 5:
			s = &r.IP
		case 6:
			s = &r.Country
		}
		switch {
		case s != nil && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Row{}, protowire.ParseError(n)
			}
			if check && !utf8.Valid(v) {
				return Row{}, fmt.Errorf("field %d is not valid UTF-8", num)
			}
			*s = unsafe.String(unsafe.SliceData(v), len(v))
			b = b[n:]
		case num == 3 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Row{}, protowire.ParseError(n)
			}
			r.ClickTime = int64(v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Row{}, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return r, nil
}
