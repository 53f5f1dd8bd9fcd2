package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The history's revisions (package history, clickagg recalc) are recorded
// here: etcd's transactions make allocating a revision and applying one
// atomic, and its watch tells every aggregator at once.

func (c *Client) revisionCounterKey() string  { return c.prefix + "/history/next-revision" }
func (c *Client) appliedRevisionsKey() string { return c.prefix + "/history/applied" }

// ErrConflict is returned by PutAppliedRevisions when the applied
// revisions changed since they were read.
var ErrConflict = errors.New("cluster: changed concurrently")

// NextRevision allocates a history revision number: 1, then 2, and so on,
// each returned once across the cluster.
func (c *Client) NextRevision(ctx context.Context) (int, error) {
	key := c.revisionCounterKey()
	for {
		resp, err := c.cli.Get(ctx, key)
		if err != nil {
			return 0, fmt.Errorf("get history revision counter: %w", err)
		}
		next, mod := 1, int64(0)
		if len(resp.Kvs) > 0 {
			n, err := strconv.Atoi(string(resp.Kvs[0].Value))
			if err != nil || n < 1 {
				return 0, fmt.Errorf("%w: history revision counter %q", ErrMalformed, resp.Kvs[0].Value)
			}
			next, mod = n, resp.Kvs[0].ModRevision
		}
		txn, err := c.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", mod)).
			Then(clientv3.OpPut(key, strconv.Itoa(next+1))).
			Commit()
		if err != nil {
			return 0, fmt.Errorf("allocate history revision: %w", err)
		}
		if txn.Succeeded {
			return next, nil
		}
	}
}

// AppliedRevisions returns the encoded applied revisions (nil when none)
// and the etcd revision they were written at, for PutAppliedRevisions.
func (c *Client) AppliedRevisions(ctx context.Context) ([]byte, int64, error) {
	resp, err := c.cli.Get(ctx, c.appliedRevisionsKey())
	if err != nil {
		return nil, 0, fmt.Errorf("get applied history revisions: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

// PutAppliedRevisions replaces the applied revisions with data if they
// were not written since mod (AppliedRevisions' second result), and fails
// with ErrConflict otherwise.
func (c *Client) PutAppliedRevisions(ctx context.Context, data []byte, mod int64) error {
	key := c.appliedRevisionsKey()
	txn, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", mod)).
		Then(clientv3.OpPut(key, string(data))).
		Commit()
	if err != nil {
		return fmt.Errorf("apply history revision: %w", err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("%w: applied history revisions", ErrConflict)
	}
	return nil
}

// WatchAppliedRevisions calls fn with the encoded applied revisions (nil
// when none) at start and after every change, until ctx ends, the way
// WatchMembers does.
func (c *Client) WatchAppliedRevisions(ctx context.Context, fn func([]byte) error) error {
	key := c.appliedRevisionsKey()
	return c.watch(ctx, key, false, func(st state) error {
		var v []byte
		if kv, ok := st[key]; ok {
			v = kv.Value
		}
		return fn(v)
	})
}
