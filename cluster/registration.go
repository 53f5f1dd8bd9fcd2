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

// Registration is one life of a member: its key exists while its lease does.
//
//	Register ──▶ live (keepalive refreshes the lease)
//	live ──lease lost (expired, revoked, client closed)──▶ Done closed
//	live ──Close──▶ Done closed, lease revoked, key deleted
type Registration struct {
	cli    *clientv3.Client
	m      Member
	lease  clientv3.LeaseID
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
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
	if _, err := c.cli.Put(ctx, c.membersKey(m.Role)+m.ID, string(value), clientv3.WithLease(grant.ID)); err != nil {
		revoke()
		return nil, fmt.Errorf("put member %s %s: %w", m.Role, m.ID, err)
	}
	// The keepalive outlives ctx, which only bounds the registration call.
	kctx, cancel := context.WithCancel(context.Background())
	ka, err := c.cli.KeepAlive(kctx, grant.ID)
	if err != nil {
		cancel()
		revoke()
		return nil, fmt.Errorf("keep lease of %s %s alive: %w", m.Role, m.ID, err)
	}
	r := &Registration{cli: c.cli, m: m, lease: grant.ID, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for range ka {
			// The client closes ka when the lease expires, is revoked, or
			// cannot be refreshed before its TTL runs out.
		}
	}()
	return r, nil
}

func validName(what, s string) error {
	if s == "" || strings.Contains(s, "/") {
		return fmt.Errorf("%w: %s %q: must be non-empty and contain no /", ErrInvalid, what, s)
	}
	return nil
}

// Member returns the registered member, with its Incarnation.
func (r *Registration) Member() Member { return r.m }

// Done is closed when the lease is lost or the registration is closed. A
// member whose Done is closed must stop acting as that incarnation: its key
// is gone, or about to go.
func (r *Registration) Done() <-chan struct{} { return r.done }

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
			err = fmt.Errorf("revoke lease of %s %s: %w", r.m.Role, r.m.ID, err)
		}
	})
	return err
}
