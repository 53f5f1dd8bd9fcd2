package cluster

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/clickagg/clickagg/retry"
)

// reRegisterPause paces the registrations of a member whose lease was
// lost: all the routers and queryds of a cluster lose theirs together
// when etcd is away for longer than the TTL.
var reRegisterPause = retry.Policy{Min: 100 * time.Millisecond, Max: time.Second}

// Membership keeps a process registered for as long as it runs, for the
// roles whose registration is only a listing: routers, queryds and
// coordinators. When a registration's lease is lost (etcd was unreachable
// for longer than the TTL, or an operator revoked it) it registers again,
// as a new incarnation, retrying until it succeeds; a router would
// otherwise go on serving unlisted, its split-table acknowledgements
// refused.
// Aggregators do not use it: their lease is part of partition ownership,
// and losing it must end their ownership (package aggregator).
type Membership struct {
	c     *Client
	m     Member
	ttl   time.Duration
	onNew func(Member)
	lg    *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	cur *Registration
}

// Keep registers m (see Register) and keeps it registered until Close. It
// calls onNew (if not nil) with each incarnation, once Member returns it:
// the first before Keep returns, the next ones from one goroutine, so the
// calls never overlap and the last is the current incarnation. lg nil
// discards logs.
func (c *Client) Keep(ctx context.Context, m Member, ttl time.Duration, onNew func(Member), lg *slog.Logger) (*Membership, error) {
	r, err := c.Register(ctx, m, ttl)
	if err != nil {
		return nil, err
	}
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	kctx, cancel := context.WithCancel(context.Background())
	k := &Membership{c: c, m: m, ttl: ttl, onNew: onNew, lg: lg, cancel: cancel, done: make(chan struct{}), cur: r}
	if onNew != nil {
		onNew(r.Member())
	}
	go k.run(kctx)
	return k, nil
}

func (k *Membership) run(ctx context.Context) {
	defer close(k.done)
	for {
		k.mu.Lock()
		r := k.cur
		k.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-r.Done():
		}
		k.lg.Warn("registration lease lost; registering again", "member", k.m.ID, "role", k.m.Role, "incarnation", r.Member().Incarnation)
		var next *Registration
		err := retry.Do(ctx, reRegisterPause, func(_ int, err error, d time.Duration) {
			k.lg.Warn("register again", "member", k.m.ID, "role", k.m.Role, "err", err, "retry_in", d)
		}, func() error {
			rctx, cancel := context.WithTimeout(ctx, k.ttl)
			defer cancel()
			var err error
			next, err = k.c.Register(rctx, k.m, k.ttl)
			return err
		})
		if err != nil {
			return // ctx ended: nothing else stops Do
		}
		k.mu.Lock()
		k.cur = next
		k.mu.Unlock()
		if k.onNew != nil {
			k.onNew(next.Member())
		}
		k.lg.Info("registered again", "member", k.m.ID, "role", k.m.Role, "incarnation", next.Member().Incarnation)
	}
}

// Member returns the current incarnation of the member.
func (k *Membership) Member() Member {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur.Member()
}

// Close stops registering again and closes the current registration,
// which removes the member at once.
func (k *Membership) Close(ctx context.Context) error {
	k.cancel()
	<-k.done
	k.mu.Lock()
	r := k.cur
	k.mu.Unlock()
	return r.Close(ctx)
}
