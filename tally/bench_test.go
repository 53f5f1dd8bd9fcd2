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
	var dedupBytes, ids int
	for _, m := range p.minutes {
		if m.seen != nil {
			dedupBytes += m.seen.memBytes()
			ids += m.seen.len()
		}
	}
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
	var keys int
	for _, m := range p.minutes {
		keys += len(m.ads.keys)
	}
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
	b.ReportMetric(float64(len(m.cells.keys)), "cells")
	b.ReportMetric(float64(size), "bytes")
}
