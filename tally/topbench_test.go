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

// topStream is the log of one of 64 partitions of the `clickagg bench`
// cluster: 2M ads ranked by a Zipf law (s = 1.1) over the whole cluster, of
// which the partition gets a random 64th, 200 countries with shares falling
// as 1/rank, 1% of clicks late by 1 to 9 minutes. load fills 60 minutes;
// live goes on from there in small batches, for benchmarks that apply
// between queries.
type topStream struct {
	// Entries are kept encoded: millions of small messages would slow
	// every collection during the benchmarks.
	load, live [][]byte
	// countries and their cumulative shares, for queries that pick a
	// country as the traffic does.
	countries []string
	cdf       []float64
}

// newTopStream draws perMinute clicks a minute, for 60 minutes of load and
// 2 live ones in batches of batch clicks.
func newTopStream(perMinute, batch int) *topStream {
	r := rand.New(rand.NewPCG(11, 64))
	zipf := rand.NewZipf(r, 1.1, 1, 2_000_000-1)
	ad := func() string {
		for {
			k := zipf.Uint64()
			// A fixed random 64th of the ranks, like a partition's share.
			if (k*0x9E3779B97F4A7C15)>>58 == 0 {
				return "ad-" + strconv.FormatUint(k, 10)
			}
		}
	}
	countries := make([]string, 200)
	cdf := make([]float64, len(countries))
	sum := 0.0
	for i := range countries {
		countries[i] = string([]byte{'A' + byte(i/26), 'A' + byte(i%26)})
		sum += 1 / float64(i+1)
		cdf[i] = sum
	}
	s := &topStream{countries: countries, cdf: cdf}
	seq := 0
	gen := func(minutes, from, batch int) [][]byte {
		var out [][]byte
		var evs []*clickaggv1.LogEvent
		for m := from; m < from+minutes; m++ {
			for i := range perMinute {
				now := at(int64(m), int64(i)*60_000/int64(perMinute))
				t := now - r.Int64N(2000)
				if r.Float64() < 0.01 {
					t = now - 60_000 - r.Int64N(8*60_000)
				}
				seq++
				c, _ := slices.BinarySearch(cdf, r.Float64()*sum)
				evs = append(evs, &clickaggv1.LogEvent{
					EventId:     "e" + strconv.Itoa(seq),
					AdId:        ad(),
					ClickTimeMs: t,
					UserId:      "u" + strconv.Itoa(r.IntN(100_000)),
					Ip:          "10.0." + strconv.Itoa(r.IntN(256)) + "." + strconv.Itoa(r.IntN(256)),
					Country:     countries[min(c, len(countries)-1)],
				})
				if len(evs) == batch {
					b, err := proto.Marshal(&clickaggv1.LogEntry{Events: evs, TickMs: now})
					if err != nil {
						panic(err)
					}
					out = append(out, b)
					evs = nil
				}
			}
		}
		return out
	}
	s.load = gen(60, 0, 500)
	s.live = gen(2, 60, batch)
	return s
}

func (s *topStream) partition() *Partition {
	p := NewPartition(0, benchOpts)
	for _, e := range s.load {
		apply1(p, e)
	}
	return p
}

func apply1(p *Partition, e []byte) {
	if _, err := p.ApplyEncoded("x", e, nil); err != nil {
		panic(err)
	}
}

// BenchmarkTopWindows queries the top 100 over the last 60 minutes and
// the last minute, unfiltered and by the commonest country, of a partition
// holding about 100k (ad, minute) keys. "static" queries a partition that
// does not change; "live" applies one batch of 100 events (new clicks, late
// ones, ticks, so minutes complete and the windows slide) before each query,
// as a serving partition does, and includes that apply ("apply" is the
// apply alone, to subtract), and reports the percentiles of the queries
// alone.
func BenchmarkTopWindows(b *testing.B) {
	s := newTopStream(70_000, 100)
	p := s.partition()
	b.Logf("%d (ad, minute) keys, %d live ads", memOf(p).keys, p.ads.live())
	cur := func(p *Partition) int64 {
		return MinuteOf(p.Watermark()+benchOpts.AllowedLateness.Milliseconds()) - m0
	}
	queries := []struct {
		name    string
		minutes int64
		f       Filter
	}{
		{"60m", 60, Filter{}},
		{"60m/country", 60, Filter{Country: "AA"}},
		{"1m", 1, Filter{}},
		{"1m/country", 1, Filter{Country: "AA"}},
	}
	for _, q := range queries {
		b.Run("static/"+q.name, func(b *testing.B) {
			to := m0 + cur(p) + 1
			for b.Loop() {
				if len(p.Top(to-q.minutes, to, 100, q.f)) == 0 {
					b.Fatal("empty answer")
				}
			}
		})
	}
	// Each query by a country drawn with the traffic's shares, as
	// `clickagg bench` asks: most find no cache entry for theirs.
	b.Run("static/60m/countries", func(b *testing.B) {
		to := m0 + cur(p) + 1
		r := rand.New(rand.NewPCG(5, 5))
		for b.Loop() {
			c, _ := slices.BinarySearch(s.cdf, r.Float64()*s.cdf[len(s.cdf)-1])
			p.Top(to-60, to, 100, Filter{Country: s.countries[min(c, len(s.countries)-1)]})
		}
	})
	// A query that finds no cache entry, and builds one.
	b.Run("static/60m/build", func(b *testing.B) {
		to := m0 + cur(p) + 1
		for b.Loop() {
			p.tops.entries = nil
			p.Top(to-60, to, 100, Filter{})
		}
	})
	// live applies a batch, then calls query, b.N times.
	live := func(b *testing.B, query func(p *Partition)) {
		p := s.partition()
		i := 0
		for b.Loop() {
			if i == len(s.live) {
				b.StopTimer()
				p, i = s.partition(), 0
				b.StartTimer()
			}
			apply1(p, s.live[i])
			i++
			query(p)
		}
	}
	for _, q := range queries {
		b.Run("live/"+q.name, func(b *testing.B) {
			var lat []time.Duration
			live(b, func(p *Partition) {
				to := m0 + cur(p) + 1
				start := time.Now()
				p.Top(to-q.minutes, to, 100, q.f)
				lat = append(lat, time.Since(start))
			})
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
			b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), "max-ns")
		})
	}
	b.Run("live/apply", func(b *testing.B) { live(b, func(*Partition) {}) })
}

// BenchmarkTopCompleteHour is BenchmarkTop60Minutes's partition (3.8M
// (ad, minute) keys) once its 60 minutes are complete, so that Top reads
// them from the cache: "hit" finds its entry, "build" adds every minute up
// to make one.
func BenchmarkTopCompleteHour(b *testing.B) {
	p := top60(b)
	p.Apply("tick", &clickaggv1.LogEntry{TickMs: at(61, 0) + benchOpts.AllowedLateness.Milliseconds()})
	for _, f := range []Filter{{}, {Country: "DE"}} {
		b.Run("hit/"+f.Country, func(b *testing.B) {
			p.Top(m0, m0+60, 100, f)
			for b.Loop() {
				p.Top(m0, m0+60, 100, f)
			}
		})
		b.Run("build/"+f.Country, func(b *testing.B) {
			for b.Loop() {
				p.tops.entries = nil
				p.Top(m0, m0+60, 100, f)
			}
		})
	}
	b.Logf("Memory().TopCacheBytes = %d", p.Memory().TopCacheBytes)
}
