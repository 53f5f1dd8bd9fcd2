package archive

import (
	"fmt"
	"math/rand/v2"
	"testing"

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
