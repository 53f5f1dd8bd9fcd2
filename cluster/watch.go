package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/retry"
)

// state is the watched keys' current values by key.
type state map[string]*mvccpb.KeyValue

// sameAs reports whether s and o hold the same versions of the same keys.
// ModRevision identifies a key's version, so this is exact.
func (s state) sameAs(o state) bool {
	if len(s) != len(o) {
		return false
	}
	for k, kv := range s {
		if okv, ok := o[k]; !ok || okv.ModRevision != kv.ModRevision {
			return false
		}
	}
	return true
}

// getPause paces the Gets of a watch's resync while etcd is unavailable.
var getPause = retry.Policy{Min: 50 * time.Millisecond, Max: 5 * time.Second}

// watch keeps a copy of key (of every key under it when prefix is set) and
// calls emit with the full copy after the initial Get and after each change.
// When etcd ends the watch (compaction, a lost leader, a cancel) it Gets
// again and resumes from there; the resync calls emit only if something
// changed in between, so a callback sees every state at most once.
func (c *Client) watch(ctx context.Context, key string, prefix bool, emit func(state) error) error {
	var opts []clientv3.OpOption
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	var last state
	for {
		var resp *clientv3.GetResponse
		err := retry.Do(ctx, getPause, nil, func() error {
			var err error
			resp, err = c.cli.Get(ctx, key, opts...)
			if err != nil && !c.retryable(err) {
				return retry.Permanent(fmt.Errorf("get %s: %w", key, err))
			}
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		st := make(state, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			st[string(kv.Key)] = kv
		}
		if last == nil || !st.sameAs(last) {
			if err := emit(st); err != nil {
				return err
			}
		}
		last = st

		// WithRequireLeader makes etcd cancel the watch when its member loses
		// the raft leader, instead of leaving us on a partitioned member that
		// silently receives no more events.
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := c.cli.Watch(wctx, key, append(opts, clientv3.WithRev(resp.Header.Revision+1))...)
		err = follow(wch, st, emit)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return err
		}
		if c.cli.Ctx().Err() != nil {
			return fmt.Errorf("watch %s: etcd client closed", key)
		}
		// The watch ended under us; the Get at the top of the loop resyncs.
	}
}

// follow applies the watch's events to st and emits after each response. It
// returns nil when the watch ends without a callback error.
func follow(wch clientv3.WatchChan, st state, emit func(state) error) error {
	for wr := range wch {
		if wr.Err() != nil || wr.Canceled {
			// Compacted or canceled: the caller cancels the context, which
			// closes the channel, and resyncs with a Get.
			return nil
		}
		if len(wr.Events) == 0 {
			continue
		}
		for _, ev := range wr.Events {
			switch ev.Type {
			case mvccpb.Event_PUT:
				st[string(ev.Kv.Key)] = ev.Kv
			case mvccpb.Event_DELETE:
				delete(st, string(ev.Kv.Key))
			}
		}
		if err := emit(st); err != nil {
			return err
		}
	}
	return nil
}

// retryable reports whether a failed request may succeed later: etcd or the
// connection is unavailable for now. Refusals (permissions, bad requests)
// and a closed client are not.
func (c *Client) retryable(err error) bool {
	if c.cli.Ctx().Err() != nil {
		return false
	}
	code := codes.Unknown
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if s, ok := status.FromError(err); ok {
		code = s.Code()
	} else if errors.Is(err, context.DeadlineExceeded) {
		code = codes.DeadlineExceeded
	}
	switch code {
	case codes.Unavailable, codes.Internal, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}
