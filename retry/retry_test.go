package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDo(t *testing.T) {
	p := Policy{Min: time.Millisecond, Max: 4 * time.Millisecond}
	calls, notified := 0, 0
	err := Do(context.Background(), p, func(n int, err error, _ time.Duration) { notified = n }, func() error {
		if calls++; calls < 5 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 5 || notified != 4 {
		t.Fatalf("Do = %v after %d calls, %d notified; want nil after 5, 4", err, calls, notified)
	}

	stop := errors.New("stop")
	calls = 0
	if err := Do(context.Background(), p, nil, func() error { calls++; return Permanent(stop) }); err != stop || calls != 1 {
		t.Fatalf("Do with a permanent error = %v after %d calls", err, calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = Do(ctx, p, nil, func() error {
		if calls++; calls == 3 {
			cancel()
		}
		return errors.New("failing")
	})
	if !errors.Is(err, context.Canceled) || calls != 3 {
		t.Fatalf("Do after cancel = %v after %d calls", err, calls)
	}
}

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		name     string
		p        Policy
		schedule []time.Duration // the d of each pause, drawn from [d/2, d]
	}{
		{"doubles up to max", Policy{Min: 100 * time.Millisecond, Max: time.Second},
			[]time.Duration{100, 200, 400, 800, 1000, 1000}},
		{"fixed", Policy{Min: time.Second, Max: time.Second},
			[]time.Duration{1000, 1000, 1000}},
		{"min above max", Policy{Min: 2 * time.Second, Max: time.Second},
			[]time.Duration{1000, 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.p.Backoff()
			for round := range 2 {
				for i, ms := range tc.schedule {
					d := ms * time.Millisecond
					if got := b.Next(); got < d/2 || got > d {
						t.Fatalf("round %d pause %d = %v, want in [%v, %v]", round, i+1, got, d/2, d)
					}
				}
				b.Reset()
			}
		})
	}
}

// TestBackoffSpreads checks the point of the jitter: callers that fail
// together do not all pause for the same time.
func TestBackoffSpreads(t *testing.T) {
	p := Policy{Min: time.Second, Max: time.Second}
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[p.Backoff().Next()] = true
	}
	if len(seen) < 50 {
		t.Fatalf("100 first pauses took %d distinct values", len(seen))
	}
}

func TestDoNotifiesThePause(t *testing.T) {
	p := Policy{Min: 2 * time.Millisecond, Max: 8 * time.Millisecond}
	var pauses []time.Duration
	calls := 0
	err := Do(context.Background(), p, func(_ int, _ error, next time.Duration) { pauses = append(pauses, next) }, func() error {
		if calls++; calls < 5 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || len(pauses) != 4 {
		t.Fatalf("Do = %v with %d pauses notified, want nil and 4", err, len(pauses))
	}
	for i, d := range []time.Duration{2, 4, 8, 8} {
		d *= time.Millisecond
		if pauses[i] < d/2 || pauses[i] > d {
			t.Fatalf("pause %d = %v, want in [%v, %v]", i+1, pauses[i], d/2, d)
		}
	}
}
