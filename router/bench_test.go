package router

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// discardLog accepts every append and counts the bytes.
type discardLog struct{ bytes, entries atomic.Int64 }

func (d *discardLog) Append(_ context.Context, items []partlog.Append) ([]string, error) {
	for _, it := range items {
		d.bytes.Add(int64(len(it.Data)))
	}
	d.entries.Add(int64(len(items)))
	return make([]string, len(items)), nil
}

// benchRequests returns n requests of size events shaped like the bench's
// workload: many ads, users and IPs, a few countries.
func benchRequests(n, size int) [][]*clickaggv1.ClickEvent {
	rng := rand.New(rand.NewPCG(1, 2))
	countries := []string{"US", "IN", "BR", "DE", "GB", "FR", "JP", "MX", "NG", "ID"}
	out := make([][]*clickaggv1.ClickEvent, n)
	seq := 0
	for i := range out {
		evs := make([]*clickaggv1.ClickEvent, size)
		for j := range evs {
			seq++
			u := rng.IntN(4_000_000)
			evs[j] = &clickaggv1.ClickEvent{
				EventId:   "ev-" + strconv.Itoa(seq),
				AdId:      "ad-" + strconv.Itoa(rng.IntN(2_000_000)),
				ClickTime: timestamppb.New(t0.Add(-time.Duration(rng.IntN(60_000)) * time.Millisecond)),
				UserId:    "user-" + strconv.Itoa(u),
				Ip:        fmt.Sprintf("10.%d.%d.%d", u>>16&255, u>>8&255, u&255),
				Country:   countries[rng.IntN(len(countries))],
			}
		}
		out[i] = evs
	}
	return out
}

// BenchmarkIngest measures the router's own work per event: validation,
// routing, grouping and encoding of log entries (the log discards them),
// with requests of 500 events from as many goroutines as GOMAXPROCS.
func BenchmarkIngest(b *testing.B) {
	reqs := benchRequests(64, 500)
	log := &discardLog{}
	parts := partitioner(b, 64)
	cfg := testConfig(b)
	r := New(cfg, testID, parts, log, nil, fixedClock(t0))
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := reqs[next.Add(1)%int64(len(reqs))]
			if n, _, err := r.Ingest(context.Background(), req); err != nil || n != int64(len(req)) {
				b.Errorf("Ingest: %d, %v", n, err)
				return
			}
		}
	})
	b.StopTimer()
	events := float64(b.N) * 500
	b.ReportMetric(b.Elapsed().Seconds()*1e9/events, "ns/event")
	b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(log.bytes.Load())/events, "logB/event")
	b.ReportMetric(events/float64(log.entries.Load()), "events/entry")
}

// BenchmarkValidate measures the validation of one event.
func BenchmarkValidate(b *testing.B) {
	evs := benchRequests(1, 4096)[0]
	cfg := testConfig(b)
	r := New(cfg, testID, partitioner(b, 64), &discardLog{}, nil, fixedClock(t0))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, reason := r.validate(evs[i%len(evs)], t0); reason != "" {
			b.Fatal(reason)
		}
		i++
	}
}
