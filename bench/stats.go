package bench

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Latencies collects durations and answers percentiles. It is safe for
// concurrent use.
type Latencies struct {
	mu     sync.Mutex
	d      []time.Duration
	sorted bool
}

// Add records one duration.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.sorted = false
	l.mu.Unlock()
}

// N is the number of durations recorded.
func (l *Latencies) N() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// Percentile returns the nearest-rank p-th percentile (0 < p ≤ 100): the
// smallest recorded duration that at least p% of them do not exceed. With
// no durations it returns -1.
func (l *Latencies) Percentile(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return -1
	}
	if !l.sorted {
		slices.Sort(l.d)
		l.sorted = true
	}
	rank := int(math.Ceil(p / 100 * float64(len(l.d))))
	rank = min(max(rank, 1), len(l.d))
	return l.d[rank-1]
}

// Seconds returns the p-th percentile in seconds, NaN with no durations.
func (l *Latencies) Seconds(p float64) float64 {
	d := l.Percentile(p)
	if d < 0 {
		return math.NaN()
	}
	return d.Seconds()
}

// Point is one second of a run, for the chart.
type Point struct {
	T       float64 // seconds since the run started
	Acked   float64 // events acknowledged per second
	Applied float64 // events applied by the aggregators per second (NaN unknown)
	Lag     int64   // largest partition lag, log entries
}

// Sample is one freshness probe.
type Sample struct {
	T       float64 // seconds since the run started, at acknowledgement
	Latency time.Duration
}

// Span is a named stretch of the run, shaded in the chart.
type Span struct {
	Name     string
	From, To float64 // seconds since the run started
}

// Timeline is what the chart draws.
type Timeline struct {
	Points    []Point
	Freshness []Sample
	Spans     []Span
}
