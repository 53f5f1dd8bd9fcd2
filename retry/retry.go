// Package retry runs a step against an external system (etcd, Redis, the
// object store, another member) until it succeeds: exponential pauses
// between failures, capped, and jittered so that the many processes and
// goroutines that hit one recovering system do not retry it in step. It is
// cenkalti/backoff with the policy every caller shares.
//
// Do is for a step that is retried until it succeeds. A loop that cannot
// hand its step to Do (an event loop that must keep serving other work
// between attempts, or a supervisor that restarts a step that never ends
// well for good) takes its pauses one at a time from a Backoff of the same
// Policy. Sleep is the pause of a loop on its own fixed schedule, a poll.
package retry

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Policy bounds the pauses: the n-th pause after failures in a row is
// drawn from the upper half of Min·2ⁿ⁻¹ capped at Max, that is from
// [d/2, d] with d = min(Min·2ⁿ⁻¹, Max). None is above Max, and two callers
// that failed together pause for different times.
type Policy struct {
	Min, Max time.Duration
}

// Permanent marks an error that Do must return at once, not retry.
func Permanent(err error) error { return backoff.Permanent(err) }

// Do runs f until it returns nil, an error marked Permanent (returned
// without the mark), or ctx ends (ctx's cause; f's error is then
// dropped). notify, if not nil, is called after each failure that will be
// retried, with the number of failures so far and the pause before the
// next attempt.
func Do(ctx context.Context, p Policy, notify func(failures int, err error, next time.Duration), f func() error) error {
	failures := 0
	_, err := backoff.Retry(ctx, func() (struct{}, error) { return struct{}{}, f() },
		backoff.WithBackOff(libBackOff{p.Backoff()}), backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			failures++
			if notify != nil {
				notify(failures, err, next)
			}
		}))
	return err
}

// Backoff hands out the pauses of a Policy one failure at a time. It is
// not safe for concurrent use.
type Backoff struct {
	max time.Duration
	exp backoff.ExponentialBackOff // the schedule, without its jitter
}

// Backoff returns the policy's pauses, starting from the first.
func (p Policy) Backoff() *Backoff {
	b := &Backoff{max: p.Max, exp: backoff.ExponentialBackOff{
		InitialInterval:     min(p.Min, p.Max),
		RandomizationFactor: 0,
		Multiplier:          2,
		MaxInterval:         p.Max,
	}}
	b.exp.Reset()
	return b
}

// Next returns the pause after one more failure in a row.
func (b *Backoff) Next() time.Duration {
	d := min(b.exp.NextBackOff(), b.max)
	if d <= 0 {
		return 0
	}
	// The upper half rather than the library's ±50%: a pause stays
	// within Max, as the flags that set Max promise.
	return d/2 + rand.N(d/2+1)
}

// Reset makes the next pause the first one again, after a success.
func (b *Backoff) Reset() { b.exp.Reset() }

// libBackOff is a Backoff as backoff.Retry wants it.
type libBackOff struct{ b *Backoff }

func (l libBackOff) NextBackOff() time.Duration { return l.b.Next() }
func (l libBackOff) Reset()                     { l.b.Reset() }

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
