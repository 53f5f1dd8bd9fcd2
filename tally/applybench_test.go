package tally

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// encodedLog is a partition log in wire form, shaped like what `clickagg
// bench` sends: 2M ads with Zipf (s = 1.1) popularity, 200 countries with
// shares falling as 1/rank, 2M users and 1M IPs, 1% exact duplicates of
// recent events, 1% late events, 500-event entries and a tick every 10
// entries, with the bench's spelling of every field.
type encodedLog struct {
	ids   []string
	data  [][]byte
	batch int // events per entry
}

const (
	elAds       = 2_000_000
	elMinutes   = 20
	elPerMinute = 25_000
	elBatch     = 500
)

// countryPicker returns a function that picks one of n two-letter
// countries, with shares falling as 1/rank, as in the bench.
func countryPicker(r *rand.Rand, n int) func() string {
	countries := make([]string, n)
	cdf := make([]float64, n)
	sum := 0.0
	for i := range countries {
		countries[i] = string([]byte{'A' + byte(i/26), 'A' + byte(i%26)})
		sum += 1 / float64(i+1)
		cdf[i] = sum
	}
	return func() string {
		i, _ := slices.BinarySearch(cdf, r.Float64()*sum)
		return countries[min(i, n-1)]
	}
}

func newEncodedLog(tb testing.TB, minutes, perMinute, batch int) *encodedLog {
	r := rand.New(rand.NewPCG(7, 11))
	zipf := rand.NewZipf(r, 1.1, 1, elAds-1)
	country := countryPicker(r, 200)
	l := &encodedLog{batch: batch}
	var recent []*clickaggv1.LogEvent
	e := &clickaggv1.LogEntry{RouterId: "bench"}
	seq := uint64(0)
	for m := range minutes {
		for i := range perMinute {
			now := at(int64(m), int64(i)*60_000/int64(perMinute))
			var ev *clickaggv1.LogEvent
			if len(recent) > 0 && r.IntN(100) == 0 {
				ev = recent[r.IntN(len(recent))]
			} else {
				seq++
				t := now - r.Int64N(1000)
				if r.IntN(100) == 0 {
					t = now - 2*60_000 - r.Int64N(8*60_000)
				}
				ip := uint32(r.IntN(1_000_000))*2654435761 + 0x0b000000
				ev = &clickaggv1.LogEvent{
					EventId:     "r7q2k-" + strconv.FormatUint(seq, 36),
					AdId:        "ad-r7q2k-" + strconv.FormatUint(zipf.Uint64(), 10),
					ClickTimeMs: t,
					UserId:      "user-" + strconv.Itoa(r.IntN(2_000_000)),
					Ip: strconv.Itoa(int(ip>>24)) + "." + strconv.Itoa(int(ip>>16&255)) + "." +
						strconv.Itoa(int(ip>>8&255)) + "." + strconv.Itoa(int(ip&255)),
					Country: country(),
				}
				if len(recent) < 8192 {
					recent = append(recent, ev)
				} else {
					recent[seq%8192] = ev
				}
			}
			e.Events = append(e.Events, ev)
			if len(e.Events) == batch {
				if len(l.data)%10 == 9 {
					e.TickMs = now
				}
				b, err := proto.Marshal(e)
				if err != nil {
					tb.Fatal(err)
				}
				l.ids = append(l.ids, strconv.Itoa(len(l.ids)+1)+"-0")
				l.data = append(l.data, b)
				e = &clickaggv1.LogEntry{RouterId: "bench"}
			}
		}
	}
	return l
}

func (l *encodedLog) apply(tb testing.TB, p *Partition, from, to int, ads []string) []string {
	for i := from; i < to; i++ {
		var err error
		if ads, err = p.ApplyEncoded(l.ids[i], l.data[i], ads[:0]); err != nil {
			tb.Fatal(err)
		}
	}
	return ads
}

// BenchmarkApplyEncoded applies the bench-shaped log in wire form with
// ApplyEncoded, as the aggregator does, and reports the time and
// allocations per event. ns/event is CPU time of the process (GC
// included), which other processes on a shared machine inflate less than
// the elapsed time, wall-ns/event.
//
// fresh applies the whole log to a new partition, so a quarter of the
// events bring an ad the partition has not seen; steady applies its second
// half to a partition that has applied the first half (untimed), as a
// running aggregator does; small does the same with a quarter of the log
// in entries of 8 events.
func BenchmarkApplyEncoded(b *testing.B) {
	l := newEncodedLog(b, elMinutes, elPerMinute, elBatch)
	small := newEncodedLog(b, elMinutes/4, elPerMinute, 8)
	for _, bc := range []struct {
		name     string
		l        *encodedLog
		from     int
		warmedUp bool
	}{
		{"fresh", l, 0, false},
		{"steady", l, len(l.data) / 2, true},
		// Entries of 8 events, as a partition gets from each batch of
		// a router that spreads 500 events over 64 partitions.
		{"small", small, len(small.data) / 2, true},
	} {
		l := bc.l
		b.Run(bc.name, func(b *testing.B) {
			ads := make([]string, 0, l.batch)
			b.ReportAllocs()
			var cpu, wall time.Duration
			n := 0
			for b.Loop() {
				b.StopTimer()
				p := NewPartition(0, benchOpts)
				if bc.warmedUp {
					ads = l.apply(b, p, 0, bc.from, ads)
				}
				b.StartTimer()
				start, c := time.Now(), cpuTime()
				ads = l.apply(b, p, bc.from, len(l.data), ads)
				cpu += cpuTime() - c
				wall += time.Since(start)
				n++
			}
			ev := float64(n * (len(l.data) - bc.from) * l.batch)
			b.ReportMetric(float64(cpu.Nanoseconds())/ev, "ns/event")
			b.ReportMetric(float64(wall.Nanoseconds())/ev, "wall-ns/event")
		})
	}
}
