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
	err := Do(context.Background(), p, func(n int, err error) { notified = n }, func() error {
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
