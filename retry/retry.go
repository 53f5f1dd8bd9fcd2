// Package retry runs a step against an external system (Redis, the object
// store) until it succeeds: exponential pauses between failures, capped,
// and jittered so that the many goroutines that hit one recovering system
// do not retry it in step. It is cenkalti/backoff with the policy every
// caller shares.
package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Policy bounds the pauses: the first is about Min, each next one about
// doubles, none is above Max; each is drawn within ±50% of that.
type Policy struct {
	Min, Max time.Duration
}

// Permanent marks an error that Do must return at once, not retry.
func Permanent(err error) error { return backoff.Permanent(err) }

// Do runs f until it returns nil, an error marked Permanent (returned
// without the mark), or ctx ends (ctx's cause). notify, if not nil, is
// called after each failure that will be retried, with the number of
// failures so far.
func Do(ctx context.Context, p Policy, notify func(failures int, err error), f func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = p.Min, p.Max
	failures := 0
	_, err := backoff.Retry(ctx, func() (struct{}, error) { return struct{}{}, f() },
		backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, _ time.Duration) {
			failures++
			if notify != nil {
				notify(failures, err)
			}
		}))
	return err
}

// Sleep waits d, or until ctx ends (ctx's error): the pause of a loop
// that retries on its own schedule, such as a poll.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
