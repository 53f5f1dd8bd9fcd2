package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Leadership is a won election. It ends when its session's lease is lost
// (Done closes) or on Resign; writes after that fail with ErrNotLeader.
type Leadership struct {
	c       *Client
	session *concurrency.Session
	elec    *concurrency.Election
	// key and rev identify this leader's election key; they are copied at
	// election time because Election.Resign clears its own copy.
	key  string
	rev  int64
	once sync.Once
}

// Candidate is what an election key holds: who campaigns, and where its
// gRPC API is, so that followers can forward requests to the leader.
type Candidate struct {
	ID   string `json:"id"`
	Addr string `json:"addr,omitempty"`
}

// Campaign is CampaignAt with no address.
func (c *Client) Campaign(ctx context.Context, id string, ttl time.Duration) (*Leadership, error) {
	return c.CampaignAt(ctx, Candidate{ID: id}, ttl)
}

// CampaignAt blocks until cand is elected leader or ctx ends. The election
// key lives on a session lease of ttl (whole seconds, at least
// MinLeaseTTL), so a leader that stops refreshing it is replaced after
// about ttl.
func (c *Client) CampaignAt(ctx context.Context, cand Candidate, ttl time.Duration) (*Leadership, error) {
	if err := validName("candidate id", cand.ID); err != nil {
		return nil, err
	}
	value, err := json.Marshal(cand)
	if err != nil {
		return nil, fmt.Errorf("encode candidate %s: %w", cand.ID, err)
	}
	if err := validTTL(ttl); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// The session keeps the client's context, not ctx: ctx bounds the
	// campaign, while the session must outlive it until Resign.
	s, err := concurrency.NewSession(c.cli, concurrency.WithTTL(int(ttl/time.Second)))
	if err != nil {
		return nil, fmt.Errorf("election session: %w", err)
	}
	e := concurrency.NewElection(s, c.electionPrefix())
	if err := e.Campaign(ctx, string(value)); err != nil {
		_ = s.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("campaign: %w", err)
	}
	return &Leadership{c: c, session: s, elec: e, key: e.Key(), rev: e.Rev()}, nil
}

// Done is closed when the leadership's lease is lost or after Resign.
func (l *Leadership) Done() <-chan struct{} { return l.session.Done() }

// Resign gives up leadership at once, so that another candidate is elected
// without waiting for the lease to expire.
func (l *Leadership) Resign(ctx context.Context) error {
	var err error
	l.once.Do(func() {
		select {
		case <-l.session.Done():
			// The lease is gone or expiring (or the client is closed):
			// the key goes with it, and a delete would only be retried
			// against a connection that is not there.
			return
		default:
		}
		err = l.elec.Resign(ctx)
		// Closing the session revokes its lease, which deletes the key even
		// if the resign above did not reach etcd.
		if cerr := l.session.Close(); !errors.Is(cerr, rpctypes.ErrLeaseNotFound) {
			err = errors.Join(err, cerr)
		}
		if err != nil {
			err = fmt.Errorf("resign: %w", err)
		}
	})
	return err
}

// Leader returns the ID of the current leader, "" if there is none.
func (c *Client) Leader(ctx context.Context) (string, error) {
	cand, err := c.LeaderCandidate(ctx)
	return cand.ID, err
}

// LeaderCandidate returns the current leader, a zero Candidate if there is
// none. The leader is the candidate whose key was created first, as in
// concurrency.Election.
func (c *Client) LeaderCandidate(ctx context.Context) (Candidate, error) {
	resp, err := c.cli.Get(ctx, c.electionPrefix()+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return Candidate{}, fmt.Errorf("get leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Candidate{}, nil
	}
	return decodeCandidate(resp.Kvs[0].Value), nil
}

// decodeCandidate also reads the bare IDs that earlier versions wrote.
func decodeCandidate(v []byte) Candidate {
	var cand Candidate
	if json.Unmarshal(v, &cand) != nil || cand.ID == "" {
		return Candidate{ID: string(v)}
	}
	return cand
}
