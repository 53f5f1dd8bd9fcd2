package bench

import (
	"math"
	"testing"
)

// TestTrendOf checks the least-squares slope of memory samples: a line's
// slope exactly, a sawtooth (the log filling at 100 kB/s and being
// trimmed) at a small fraction of its fill rate, and too few samples
// unknown.
func TestTrendOf(t *testing.T) {
	var line, saw []memSample
	for i := range 120 {
		line = append(line, memSample{at: float64(i), bytes: 1e6 + 2500*float64(i)})
		saw = append(saw, memSample{at: float64(i), bytes: 1e6 + 1e5*float64(i%30)})
	}
	if tr := trendOf(line); math.Abs(tr.slope-2500) > 1e-6 || tr.min != 1e6 || tr.max != 1e6+2500*119 || tr.seconds != 119 {
		t.Fatalf("line: %+v", tr)
	}
	if tr := trendOf(saw); len(tr.perMinute) != 2 || tr.perMinute[0] != 1e6+29e5 || tr.perMinute[1] != 1e6+29e5 {
		t.Fatalf("sawtooth peaks per minute %v, want 2 of %v", tr.perMinute, 1e6+29e5)
	}
	if tr := trendOf(saw); math.Abs(tr.slope) > 1e4 {
		t.Fatalf("sawtooth slope %.0f B/s, want under a tenth of its 100 kB/s fill rate", tr.slope)
	}
	if tr := trendOf(line[:1]); !math.IsNaN(tr.slope) {
		t.Fatalf("one sample: %+v", tr)
	}
}
