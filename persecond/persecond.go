package persecond

import (
	"sync"
	"time"
)

// Window is the span, in seconds, Rate averages over.
const Window = 60

// Counter counts events per second of the last Window seconds. It is safe
// for concurrent use: the hot path adds, status reads.
type Counter struct {
	mu    sync.Mutex
	since int64 // Unix second counting started
	// secs[i] is the Unix second whose events counts[i] holds,
	// i = secs[i] mod Window.
	secs   [Window]int64
	counts [Window]int64
}

// New returns a Counter that starts counting at now.
func New(now time.Time) *Counter { return &Counter{since: now.Unix()} }

// Add counts n events at now.
func (c *Counter) Add(now time.Time, n int64) {
	if n == 0 {
		return
	}
	s := now.Unix()
	i := ((s % Window) + Window) % Window
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.secs[i] != s {
		c.secs[i], c.counts[i] = s, 0
	}
	c.counts[i] += n
}

// Rate returns the events of the last Window seconds (the current one
// included) divided by the seconds covered: the window, or the seconds
// since counting started when fewer, so that a counter that just started
// (a partition that just moved, a router that just started) shows its
// rate rather than a fraction of it.
func (c *Counter) Rate(now time.Time) float64 {
	s := now.Unix()
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum int64
	for i, sec := range c.secs {
		if sec > s-Window && sec <= s {
			sum += c.counts[i]
		}
	}
	span := min(Window, max(1, s-c.since+1))
	return float64(sum) / float64(span)
}
