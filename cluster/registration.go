package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrLeaseLost is returned by Registration.SetLeaving and SetUnhealthy when the
// registration's key is no longer held by its lease.
var ErrLeaseLost = errors.New("cluster: registration lease lost")

// keepAliveRetry is the pause between failed lease refreshes; several fit
// in the smallest TTL, so a short etcd hiccup does not cost the lease. It
// is fixed on purpose, not package retry's growing pauses: a pause that
// grew could outlast the lease, and each member refreshes only its own
// lease, on a schedule set by when it registered, so members do not
// refresh in step.
const keepAliveRetry = 200 * time.Millisecond

// Registration is one life of a member: its key exists while its lease does.
//
//	Register ──▶ live (keepalive refreshes the lease every TTL/3)
//	live ──lease lost (expired, revoked, client closed)──▶ Done closed
//	live ──Close──▶ Done closed, lease revoked, key deleted
//
// ValidUntil is the latest moment at which the lease is certainly still
// alive in etcd: the send time of the last successful refresh plus the TTL
// etcd granted then. etcd starts the TTL when it receives the refresh,
// which is after it was sent, so the lease cannot expire before ValidUntil.
// A process that was paused (GC, SIGSTOP) longer than its TTL finds
// ValidUntil in the past as soon as it runs again, before its keepalive
// goroutine has had a chance to notice anything: checking it before acting
// as the member closes that window.
type Registration struct {
	cli    *clientv3.Client
	key    string
	lease  clientv3.LeaseID
	ttl    time.Duration
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	m     Member
	valid time.Time // by the monotonic clock
}

// Register registers m under a new lease of ttl (whole seconds, at least
// MinLeaseTTL) and keeps the lease alive until Close or until the lease is
// lost. m.Incarnation and m.RegisteredAt are set by Register. Registering an
// ID that is already registered replaces the earlier registration's key: the
// member's incarnation changes, and closing the earlier registration no
// longer removes the member.
func (c *Client) Register(ctx context.Context, m Member, ttl time.Duration) (*Registration, error) {
	if err := validName("member id", m.ID); err != nil {
		return nil, err
	}
	if !ValidRole(m.Role) {
		return nil, fmt.Errorf("%w: role %q: want router, aggregator, coordinator or queryd", ErrInvalid, m.Role)
	}
	if err := validTTL(ttl); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	sent := time.Now()
	grant, err := c.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return nil, fmt.Errorf("grant lease for %s %s: %w", m.Role, m.ID, err)
	}
	m.Incarnation = int64(grant.ID)
	m.RegisteredAt = time.Now().UTC()
	value, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode member %s: %w", m.ID, err)
	}
	revoke := func() {
		// The lease would expire anyway; revoking just removes it sooner.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ttl)
		defer cancel()
		_, _ = c.cli.Revoke(rctx, grant.ID)
	}
	key := c.membersKey(m.Role) + m.ID
	if _, err := c.cli.Put(ctx, key, string(value), clientv3.WithLease(grant.ID)); err != nil {
		revoke()
		return nil, fmt.Errorf("put member %s %s: %w", m.Role, m.ID, err)
	}
	// The keepalive outlives ctx, which only bounds the registration call.
	kctx, cancel := context.WithCancel(context.Background())
	r := &Registration{
		cli:    c.cli,
		key:    key,
		lease:  grant.ID,
		ttl:    ttl,
		cancel: cancel,
		done:   make(chan struct{}),
		m:      m,
		valid:  sent.Add(time.Duration(grant.TTL) * time.Second),
	}
	go r.keepAlive(kctx)
	return r, nil
}

// keepAlive refreshes the lease every TTL/3 and closes done when it is
// lost: etcd says it is gone, the client is closed, or ValidUntil passes
// without a successful refresh. It refreshes with one request at a time
// (not clientv3's KeepAlive stream) so that it knows when each refresh was
// sent, which is what ValidUntil is computed from.
func (r *Registration) keepAlive(ctx context.Context) {
	defer close(r.done)
	interval := r.ttl / 3
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		left := time.Until(r.ValidUntil())
		if left <= 0 {
			return
		}
		sent := time.Now()
		actx, cancel := context.WithTimeout(ctx, min(interval, left))
		resp, err := r.cli.KeepAliveOnce(actx, r.lease)
		cancel()
		switch {
		case err == nil && resp.TTL > 0:
			r.mu.Lock()
			r.valid = sent.Add(time.Duration(resp.TTL) * time.Second)
			r.mu.Unlock()
			timer.Reset(interval)
			continue
		case err == nil, errors.Is(err, rpctypes.ErrLeaseNotFound):
			return // expired or revoked
		case ctx.Err() != nil, r.cli.Ctx().Err() != nil:
			return // closed
		}
		left = time.Until(r.ValidUntil())
		if left <= 0 {
			return
		}
		timer.Reset(min(keepAliveRetry, left))
	}
}

func validName(what, s string) error {
	if s == "" || strings.Contains(s, "/") {
		return fmt.Errorf("%w: %s %q: must be non-empty and contain no /", ErrInvalid, what, s)
	}
	return nil
}

// Member returns the registered member, with its Incarnation.
func (r *Registration) Member() Member {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m
}

// Done is closed when the lease is lost or the registration is closed. A
// member whose Done is closed must stop acting as that incarnation: its key
// is gone, or about to go.
func (r *Registration) Done() <-chan struct{} { return r.done }

// ValidUntil returns the time before which the lease is certainly alive;
// after it, the member must act as if the lease were lost, whether or not
// Done is closed yet. It compares with time.Now (monotonic), not with an
// injected clock: the lease expires in real time.
func (r *Registration) ValidUntil() time.Time {
	select {
	case <-r.done:
		return time.Time{}
	default:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.valid
}

// SetLeaving marks the member as leaving: it is shutting down and asks the
// coordinator to move its partitions away while it can still hand them
// over. The key keeps its lease; ErrLeaseLost if the key is no longer this
// registration's.
func (r *Registration) SetLeaving(ctx context.Context) error {
	return r.update(ctx, "leaving", func(m *Member) { m.Leaving = true })
}

// SetUnhealthy sets or clears Member.Unhealthy, like SetLeaving.
func (r *Registration) SetUnhealthy(ctx context.Context, unhealthy bool) error {
	what := "healthy"
	if unhealthy {
		what = "unhealthy"
	}
	return r.update(ctx, what, func(m *Member) { m.Unhealthy = unhealthy })
}

// update rewrites the member's key with change applied, under its lease.
func (r *Registration) update(ctx context.Context, what string, change func(*Member)) error {
	r.mu.Lock()
	m := r.m
	r.mu.Unlock()
	change(&m)
	value, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode member %s: %w", m.ID, err)
	}
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(r.key), "=", r.lease)).
		Then(clientv3.OpPut(r.key, string(value), clientv3.WithLease(r.lease))).
		Commit()
	if err != nil {
		return fmt.Errorf("mark %s %s %s: %w", m.Role, m.ID, what, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("mark %s %s %s: %w", m.Role, m.ID, what, ErrLeaseLost)
	}
	r.mu.Lock()
	change(&r.m)
	r.mu.Unlock()
	return nil
}

// Close stops refreshing the lease and revokes it, which deletes the
// member's key at once instead of after the TTL. A lease that is already
// gone is not an error.
func (r *Registration) Close(ctx context.Context) error {
	var err error
	r.once.Do(func() {
		r.cancel()
		<-r.done
		_, err = r.cli.Revoke(ctx, r.lease)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			err = nil
		}
		if err != nil {
			m := r.Member()
			err = fmt.Errorf("revoke lease of %s %s: %w", m.Role, m.ID, err)
		}
	})
	return err
}
