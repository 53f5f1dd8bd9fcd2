package tally

import (
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

var benchOpts = Options{
	AllowedLateness: 10 * time.Second,
	DedupHorizon:    time.Hour,
	Retention:       2 * time.Hour,
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkApply applies a realistic log (100k Zipf ads, 5% duplicates,
// shuffled windows, ticks) and reports events per second, and the memory the
// resulting state holds per counted event and per dedup id.
func BenchmarkApply(b *testing.B) {
	entries := genLog(genConfig{seed: 99, events: 500_000, minutes: 30, ads: 100_000, dupRate: 0.05})
	log := make([]*clickaggv1.LogEntry, len(entries))
	events := 0
	for i, e := range entries {
		log[i] = e.proto()
		events += len(e.clicks)
	}
	applyAll := func() *Partition {
		p := NewPartition(0, benchOpts)
		for i, e := range log {
			p.Apply(entries[i].id, e)
		}
		return p
	}

	before := heapInUse()
	p := applyAll()
	held := heapInUse() - before
	mem := memOf(p)
	dedupBytes, ids := mem.dedupBytes, mem.dedupIDs
	st := p.Stats()
	runtime.KeepAlive(p)

	b.ResetTimer()
	start := time.Now()
	n := 0
	for b.Loop() {
		applyAll()
		n++
	}
	b.ReportMetric(float64(n*events)/time.Since(start).Seconds(), "events/s")
	b.ReportMetric(float64(held)/float64(st.EventsApplied), "heap-B/event")
	b.ReportMetric(float64(dedupBytes)/float64(ids), "dedup-B/id")
}

// top60 builds a partition with 60 full minutes: 100k events a minute over
// 100k ads (about 63k distinct ads a minute, 3.8M (ad, minute) keys).
func top60(b *testing.B) *Partition {
	r := rand.New(rand.NewPCG(1, 60))
	p := NewPartition(0, benchOpts)
	countries := []string{"US", "DE", "FR", "GB", "JP"}
	ads := make([]string, 100_000)
	for i := range ads {
		ads[i] = "ad" + strconv.Itoa(i)
	}
	users := make([]string, 20_000)
	for i := range users {
		users[i] = "u" + strconv.Itoa(i)
	}
	id := 0
	for minute := range 60 {
		for range 100 {
			e := &clickaggv1.LogEntry{Events: make([]*clickaggv1.LogEvent, 1000)}
			for j := range e.Events {
				id++
				e.Events[j] = &clickaggv1.LogEvent{
					EventId:     strconv.Itoa(id),
					AdId:        ads[r.IntN(len(ads))],
					ClickTimeMs: at(int64(minute), r.Int64N(60_000)),
					Country:     countries[r.IntN(len(countries))],
					Ip:          "10.1." + strconv.Itoa(r.IntN(256)) + "." + strconv.Itoa(r.IntN(256)),
					UserId:      users[r.IntN(len(users))],
				}
			}
			p.Apply(strconv.Itoa(id), e)
		}
	}
	if got := p.Stats().EventsApplied; got != 6_000_000 {
		b.Fatalf("applied %d events", got)
	}
	return p
}

func BenchmarkTop60Minutes(b *testing.B) {
	before := heapInUse()
	p := top60(b)
	held := heapInUse() - before
	keys := memOf(p).keys
	b.Logf("60 minutes: %d (ad, minute) keys, %d live ads, %.0f heap bytes per event", keys, p.ads.live(), float64(held)/6e6)
	for _, bc := range []struct {
		name string
		n    int
		f    Filter
	}{
		{"n=100", 100, Filter{}},
		{"n=1000", 1000, Filter{}},
		{"country/n=100", 100, Filter{Country: "DE"}},
		{"user/n=100", 100, Filter{UserID: "u77"}},
		{"country+ip/n=100", 100, Filter{Country: "US", IP: "10.1.7.7"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if len(p.Top(m0, m0+60, bc.n, bc.f)) == 0 {
					b.Fatal("empty answer")
				}
			}
		})
	}
	b.Run("count/country", func(b *testing.B) {
		for b.Loop() {
			p.Count("ad77", m0, m0+60, Filter{Country: "US"})
		}
	})
}

// BenchmarkSnapshotMinute encodes one filling minute of 60k events, what a
// snapshot re-encodes for the current minute each time.
func BenchmarkSnapshotMinute(b *testing.B) {
	entries := genLog(genConfig{seed: 3, events: 60_000, minutes: 1, ads: 20_000})
	p := NewPartition(0, benchOpts)
	for _, e := range entries {
		p.Apply(e.id, e.proto())
	}
	m := p.minutes[p.order[len(p.order)-1]]
	b.ReportAllocs()
	var size int
	for b.Loop() {
		size = len(p.encodeMinute(m))
	}
	b.ReportMetric(float64(m.rows()), "rows")
	b.ReportMetric(float64(size), "bytes")
}

// workload is a log shaped like the one `clickagg bench` sends to one
// partition: Zipf (s = 1.1) ads, 200 countries, many users and IPs, 1%
// duplicates, 1% late clicks, 60 minutes of event time with ticks.
type workload struct {
	ids     []string
	entries []*clickaggv1.LogEntry
	events  int
}

const (
	wlMinutes       = 60
	wlEventsPerMin  = 15_000
	wlAds           = 100_000
	wlUsers         = 400_000
	wlIPs           = 200_000
	wlCountries     = 200
	wlBatch         = 500
	wlDuplicateRate = 0.01
	wlLateRate      = 0.01
)

func newWorkload() *workload {
	r := rand.New(rand.NewPCG(1, 1))
	zipf := rand.NewZipf(r, 1.1, 1, wlAds-1)
	ads := make([]string, wlAds)
	for i := range ads {
		ads[i] = "ad-" + strconv.Itoa(i*7919%2_000_000)
	}
	country := countryPicker(r, wlCountries)
	w := &workload{}
	var batch []*clickaggv1.LogEvent
	var sent []*clickaggv1.LogEvent
	flush := func(tick int64) {
		w.ids = append(w.ids, strconv.Itoa(len(w.ids)+1)+"-0")
		w.entries = append(w.entries, &clickaggv1.LogEntry{Events: batch, TickMs: tick})
		batch = nil
	}
	seq := 0
	for m := range wlMinutes {
		for i := range wlEventsPerMin {
			now := at(int64(m), int64(i)*60_000/wlEventsPerMin)
			if len(sent) > 0 && r.Float64() < wlDuplicateRate {
				batch = append(batch, sent[len(sent)-1-r.IntN(min(len(sent), 5000))])
			}
			t := now - r.Int64N(2000)
			if r.Float64() < wlLateRate {
				t = now - 60_000 - r.Int64N(8*60_000)
			}
			seq++
			u := r.IntN(wlUsers)
			ip := r.IntN(wlIPs)
			ev := &clickaggv1.LogEvent{
				EventId:     "k3j9x2-" + strconv.FormatUint(uint64(seq), 36),
				AdId:        ads[zipf.Uint64()],
				ClickTimeMs: t,
				UserId:      "user-" + strconv.Itoa(u),
				Ip:          "10." + strconv.Itoa(ip>>16&255) + "." + strconv.Itoa(ip>>8&255) + "." + strconv.Itoa(ip&255),
				Country:     country(),
			}
			sent = append(sent, ev)
			batch = append(batch, ev)
			if len(batch) >= wlBatch {
				flush(now)
			}
		}
	}
	flush(at(wlMinutes, 20_000))
	for _, e := range w.entries {
		w.events += len(e.Events)
	}
	return w
}

func (w *workload) apply() *Partition {
	p := NewPartition(0, benchOpts)
	for i, e := range w.entries {
		p.Apply(w.ids[i], e)
	}
	return p
}

// BenchmarkWorkload applies the bench-shaped log and reports the apply rate,
// the memory of the state split into its budgets, the time a full snapshot
// and its Restore take per 1M (ad, minute) keys, and query latencies over
// the 60 minutes.
func BenchmarkWorkload(b *testing.B) {
	w := newWorkload()
	before := heapInUse()
	p := w.apply()
	held := heapInUse() - before
	mem := memOf(p)
	st := p.Stats()
	b.Logf("%d events, %+v, %d (ad, minute) keys, %d heap bytes", w.events, st, mem.keys, held)

	// The machine is shared, so each figure is also given in CPU time of
	// this process (GC included), which other processes do not inflate.
	b.Run("apply", func(b *testing.B) {
		start, cpu := time.Now(), cpuTime()
		n := 0
		for b.Loop() {
			w.apply()
			n++
		}
		b.ReportMetric(float64(n*w.events)/time.Since(start).Seconds(), "events/s")
		b.ReportMetric(float64(n*w.events)/(cpuTime()-cpu).Seconds(), "events/cpu-s")
		b.ReportMetric(float64(held-uint64(mem.dedupBytes))/float64(mem.keys), "state-B/key")
		b.ReportMetric(float64(held-uint64(mem.dedupBytes+mem.filterBytes))/float64(mem.keys), "rows-B/key")
		b.ReportMetric(float64(mem.filterBytes)/float64(st.EventsApplied), "filter-B/event")
		b.ReportMetric(float64(mem.dedupBytes)/float64(mem.dedupIDs), "dedup-B/id")
	})
	perMKeys := func(b *testing.B, d time.Duration) float64 {
		return float64(d.Nanoseconds()) / float64(b.N) / float64(mem.keys)
	}
	// The first snapshot of a state that has applied the log: it merges the
	// late events' deltas of the complete minutes.
	b.Run("snapshot/first", func(b *testing.B) {
		var cpu time.Duration
		for b.Loop() {
			b.StopTimer()
			q := w.apply()
			runtime.GC()
			b.StartTimer()
			c := cpuTime()
			q.Snapshot(1)
			cpu += cpuTime() - c
		}
		b.ReportMetric(perMKeys(b, b.Elapsed()), "ms/1Mkeys")
		b.ReportMetric(perMKeys(b, cpu), "cpu-ms/1Mkeys")
	})
	// The log's millions of small objects would make every collection
	// during the other benchmarks slower.
	w = nil
	runtime.GC()
	// Every minute encoded again, as a full snapshot of a running
	// partition writes them.
	b.Run("snapshot", func(b *testing.B) {
		var size int
		cpu := cpuTime()
		for b.Loop() {
			s := p.Snapshot(1)
			size = len(s.Meta)
			for _, m := range s.Minutes {
				size += len(m)
			}
		}
		b.ReportMetric(perMKeys(b, b.Elapsed()), "ms/1Mkeys")
		b.ReportMetric(perMKeys(b, cpuTime()-cpu), "cpu-ms/1Mkeys")
		b.ReportMetric(float64(size)/float64(mem.keys), "B/key")
	})
	b.Run("restore", func(b *testing.B) {
		s := p.Snapshot(1)
		cpu := cpuTime()
		for b.Loop() {
			if _, err := Restore(0, benchOpts, s.Meta, s.Minutes, s.Late); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(perMKeys(b, b.Elapsed()), "ms/1Mkeys")
		b.ReportMetric(perMKeys(b, cpuTime()-cpu), "cpu-ms/1Mkeys")
	})
	from, to := int64(m0), int64(m0+wlMinutes)
	ad := p.Top(from, to, 1, Filter{})[0].AdID
	for _, bc := range []struct {
		name string
		f    func()
	}{
		{"top100", func() { p.Top(from, to, 100, Filter{}) }},
		{"top100/country", func() { p.Top(from, to, 100, Filter{Country: "AB"}) }},
		{"top100/user", func() { p.Top(from, to, 100, Filter{UserID: "user-77"}) }},
		{"top100/ip", func() { p.Top(from, to, 100, Filter{IP: "10.0.1.7"}) }},
		// The most clicked ad: the most rows and events to go through.
		{"count", func() { p.Count(ad, from, to, Filter{}) }},
		{"count/country", func() { p.Count(ad, from, to, Filter{Country: "AA"}) }},
		{"count/user", func() { p.Count(ad, from, to, Filter{UserID: "user-77"}) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cpu := cpuTime()
			for b.Loop() {
				bc.f()
			}
			b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
	runtime.KeepAlive(p)
}
