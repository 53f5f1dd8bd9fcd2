package bench

import (
	"math"
	"testing"
	"time"
)

// sawtooth is a steady run's samples: rate events/s, each holding
// perEvent bytes in the logs, which are trimmed every period seconds down
// to what arrived in the last keep seconds; with grow, the trim leaves a
// little more each time, as a log whose archiver falls behind does.
func sawtooth(seconds int, rate, perEvent, period, keep, grow float64) *SteadyResult {
	res := &SteadyResult{Rate: rate, Duration: time.Duration(seconds) * time.Second, Warmup: 2 * time.Minute}
	held := 0.0
	for s := range seconds {
		if s > 0 && math.Mod(float64(s), period) == 0 {
			held = keep*rate + grow*float64(s)*rate
		}
		held += rate
		res.Samples = append(res.Samples, SteadySample{
			At: float64(s), Acked: int64(float64(s) * rate),
			Logs: held * perEvent, Used: held*perEvent + 1e8,
			Entries: int64(held / 10), Added: int64(float64(s) * rate / 10),
			OldestAge: held / rate,
		})
	}
	return res
}

// TestSteadyVerdict checks the figures of a steady run on logs whose
// truth is known: a sawtooth whose peaks stay level is flat; one whose
// trims leave more each time, by a fifth of what arrives, is not.
func TestSteadyVerdict(t *testing.T) {
	flat := sawtooth(480, 1000, 100, 60, 10, 0)
	if got := flat.BytesPerEvent(); math.Abs(got-100) > 1 {
		t.Errorf("bytes per event %.2f, want 100", got)
	}
	if got := flat.UntrimmedPerMinute(); math.Abs(got-6e6) > 6e4 {
		t.Errorf("untrimmed growth %.0f B/min, want 6e6", got)
	}
	ms := flat.Minutes()
	if len(ms) != 8 {
		t.Fatalf("%d minutes, want 8", len(ms))
	}
	for i, m := range ms[1:] {
		if math.Abs(m.Rate-1000) > 1 || math.Abs(m.LogsPeak-7e6) > 1 {
			t.Errorf("minute %d: rate %.1f, peak %.0f; want 1000 and 7e6", i+2, m.Rate, m.LogsPeak)
		}
	}
	if s := flat.PeakSlope(); math.Abs(s) > 1 || !flat.Flat() {
		t.Errorf("level peaks: slope %.1f B/min, flat %v", s, flat.Flat())
	}
	growing := sawtooth(480, 1000, 100, 60, 10, 0.2)
	if s := growing.PeakSlope(); s < 1e6 || growing.Flat() {
		t.Errorf("climbing peaks: slope %.0f B/min, flat %v", s, growing.Flat())
	}
	short := sawtooth(150, 1000, 100, 60, 10, 0)
	if !math.IsNaN(short.PeakSlope()) || short.Flat() {
		t.Errorf("a run without two minutes after warm-up has no trend: slope %v", short.PeakSlope())
	}
}
