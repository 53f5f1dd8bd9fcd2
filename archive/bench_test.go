package archive

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// benchChunk is a chunk as a partition gets it at the design's scale:
// entries of 16 events (group commit spreads a request over the
// partitions), ads Zipf-distributed over 2M, 20k users, ids like a
// client's, click times a few seconds apart.
func benchChunk(events int) []partlog.Entry {
	r := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(r, 1.1, 1, 2_000_000-1)
	countries := []string{"US", "IN", "BR", "DE", "GB", "FR", "JP", "MX", "NG", "ID"}
	var out []partlog.Entry
	ms := int64(1_800_000_000_000)
	for i := 0; i < events; i += 16 {
		le := &clickaggv1.LogEntry{RouterId: "router-1"}
		for j := range 16 {
			u := r.IntN(20_000)
			le.Events = append(le.Events, &clickaggv1.LogEvent{
				EventId:     fmt.Sprintf("%016x", r.Uint64()),
				AdId:        fmt.Sprintf("ad-%d", zipf.Uint64()),
				ClickTimeMs: ms + int64(j) - r.Int64N(3000),
				UserId:      fmt.Sprintf("user-%d", u),
				Ip:          fmt.Sprintf("198.51.%d.%d", u%256, u/256%256),
				Country:     countries[min(r.IntN(len(countries)), r.IntN(len(countries)))],
			})
		}
		if i%512 == 0 {
			le.TickMs = ms
		}
		b, _ := proto.Marshal(le)
		out = append(out, partlog.Entry{ID: fmt.Sprintf("%d-%d", ms, i%5), Data: b})
		ms += 2
	}
	return out
}

// BenchmarkEncodeChunk measures what archiving costs per event: decoding
// the log entries and encoding them as a compressed Parquet file, on one
// goroutine; it reports the file's bytes per event.
func BenchmarkEncodeChunk(b *testing.B) {
	const events = 50_000
	entries := benchChunk(events)
	b.ReportAllocs()
	var size int
	for b.Loop() {
		data, err := EncodeEntries(1, "", entries)
		if err != nil {
			b.Fatal(err)
		}
		size = len(data)
	}
	b.ReportMetric(float64(size)/events, "B/event")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/events, "ns/event")
}

// BenchmarkArchiveChunk measures the archiver's path from the log to a
// file for one chunk, as Run takes it: every entry checked and held as it
// is read, then the chunk decoded and encoded when it is written, with
// the held state and the encoder reused as from one chunk to the next.
// cpu-ns/event is the CPU time of the whole process, the collector's
// included, which a shared machine disturbs less than the elapsed time.
func BenchmarkArchiveChunk(b *testing.B) {
	const events = 50_000
	entries := benchChunk(events)
	var q pending
	var enc encoder
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		for _, e := range entries {
			n, err := enc.count(1, e)
			if err != nil {
				b.Fatal(err)
			}
			q.add(e, n)
		}
		if _, err := enc.encode(1, "", q.entries, events); err != nil {
			b.Fatal(err)
		}
		q.drop(len(q.entries))
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/events, "cpu-ns/event")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/events, "ns/event")
}

// BenchmarkHeldHeap measures the heap the archiver keeps live, for the
// collector to scan, per event of an open chunk of 200k events, beyond the
// entries the log client returned (entry-B/event): the held state, with
// an encoder that has written a chunk before (its buffer of rows,
// rowbuf-B, does not grow with the chunk).
func BenchmarkHeldHeap(b *testing.B) {
	const events = 200_000
	entries := benchChunk(events)
	var held float64
	var enc encoder
	if _, err := EncodeEntries(1, "", entries); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := enc.encode(1, "", entries, events); err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		// Twice: the pools the Parquet writer used are emptied by the
		// second collection after it.
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&before)
		var q pending
		for _, e := range entries {
			n, err := enc.count(1, e)
			if err != nil {
				b.Fatal(err)
			}
			q.add(e, n)
		}
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(&q)
		held = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / events
	}
	data := 0
	for _, e := range entries {
		data += len(e.ID) + len(e.Data)
	}
	b.ReportMetric(held, "held-B/event")
	b.ReportMetric(float64(data)/events, "entry-B/event")
	b.ReportMetric(float64(cap(enc.rows))*float64(unsafe.Sizeof(Row{})), "rowbuf-B")
}
