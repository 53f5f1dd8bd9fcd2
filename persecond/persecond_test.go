package persecond

import (
	"slices"
	"testing"
	"time"
)

func TestCounter(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	c := New(t0)
	steps := []struct {
		at   int64 // seconds after t0
		add  int64
		want float64
	}{
		{0, 0, 0},
		{0, 10, 10},
		{0, 5, 15},
		{1, 3, 18.0 / 2},
		{59, 0, 18.0 / 60},
		{60, 6, 9.0 / 60}, // t0's bucket left the window, and is reused
		{61, 0, 6.0 / 60},
		{119, 0, 6.0 / 60},
		{120, 0, 0},
		{200, 1, 1.0 / 60}, // stale buckets are ignored, not reused blindly
	}
	for _, s := range steps {
		now := t0.Add(time.Duration(s.at) * time.Second)
		c.Add(now, s.add)
		if got := c.Rate(now); got != s.want {
			t.Errorf("at +%ds: Rate = %v, want %v", s.at, got, s.want)
		}
	}
	if got := slices.Max(c.counts[:]); got != 6 {
		t.Errorf("largest bucket %d, want 6", got)
	}
}

// TestCounterBeforeStart: seconds before the counter started (a clock set
// back) never make the span zero or negative.
func TestCounterBeforeStart(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	c := New(t0)
	c.Add(t0.Add(-5*time.Second), 4)
	if got := c.Rate(t0.Add(-5 * time.Second)); got != 4 {
		t.Fatalf("Rate = %v, want 4 (over one second)", got)
	}
}
