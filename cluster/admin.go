package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxTxnOps bounds the operations of one transaction; etcd refuses more
// than 128 by default (--max-txn-ops).
const maxTxnOps = 100

// Draining returns the members an operator is draining and since when.
// Only the leader writes these keys (Leadership.Commit).
func (c *Client) Draining(ctx context.Context) (map[string]time.Time, error) {
	resp, err := c.cli.Get(ctx, c.drainingPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("get draining members: %w", err)
	}
	out := make(map[string]time.Time, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), c.drainingPrefix())
		var d drainValue
		if err := json.Unmarshal(kv.Value, &d); err != nil {
			return nil, fmt.Errorf("%w: draining %s: %v", ErrMalformed, id, err)
		}
		out[id] = d.Since
	}
	return out, nil
}

type drainValue struct {
	Since time.Time `json:"since"`
}

// Pins returns the partitions pinned to a member, by partition. Only the
// leader writes these keys (Leadership.Commit).
func (c *Client) Pins(ctx context.Context) (map[int]string, error) {
	resp, err := c.cli.Get(ctx, c.pinsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("get pins: %w", err)
	}
	out := make(map[int]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		s := strings.TrimPrefix(string(kv.Key), c.pinsPrefix())
		p, err := strconv.Atoi(s)
		if err != nil || p < 0 {
			return nil, fmt.Errorf("%w: pin key %q", ErrMalformed, kv.Key)
		}
		out[p] = string(kv.Value)
	}
	return out, nil
}

// Update is one atomic change of the state the leader owns in etcd.
type Update struct {
	// Assignment, when set, replaces the assignment.
	Assignment *Assignment
	// Drain marks members as draining (since Now); Undrain ends drains.
	Drain, Undrain []string
	Now            time.Time
	// Pin pins partitions to members; ClearPins deletes every pin. The two
	// cannot be combined (etcd refuses a put inside a deleted range).
	Pin       map[int]string
	ClearPins bool
}

// Commit applies u in one transaction if this leadership still holds its
// election key with the revision it won with; otherwise it returns
// ErrNotLeader and changes nothing.
func (l *Leadership) Commit(ctx context.Context, u Update) error {
	if u.ClearPins && len(u.Pin) > 0 {
		return fmt.Errorf("%w: an update cannot both clear and set pins", ErrInvalid)
	}
	c := l.c
	var ops []clientv3.Op
	if u.Assignment != nil {
		value, err := json.Marshal(u.Assignment)
		if err != nil {
			return fmt.Errorf("encode assignment %d: %w", u.Assignment.Version, err)
		}
		ops = append(ops, clientv3.OpPut(c.assignmentKey(), string(value)))
	}
	for _, id := range u.Drain {
		if err := validName("member id", id); err != nil {
			return err
		}
		value, err := json.Marshal(drainValue{Since: u.Now.UTC()})
		if err != nil {
			return fmt.Errorf("encode drain of %s: %w", id, err)
		}
		ops = append(ops, clientv3.OpPut(c.drainingPrefix()+id, string(value)))
	}
	for _, id := range u.Undrain {
		if err := validName("member id", id); err != nil {
			return err
		}
		ops = append(ops, clientv3.OpDelete(c.drainingPrefix()+id))
	}
	if u.ClearPins {
		ops = append(ops, clientv3.OpDelete(c.pinsPrefix(), clientv3.WithPrefix()))
	}
	for _, p := range slices.Sorted(maps.Keys(u.Pin)) {
		if err := validName("member id", u.Pin[p]); err != nil || p < 0 {
			return fmt.Errorf("%w: pin of partition %d to %q", ErrInvalid, p, u.Pin[p])
		}
		ops = append(ops, clientv3.OpPut(c.pinsPrefix()+strconv.Itoa(p), u.Pin[p]))
	}
	if len(ops) == 0 {
		return nil
	}
	if len(ops) > maxTxnOps {
		return fmt.Errorf("%w: update of %d operations", ErrInvalid, len(ops))
	}
	return l.txn(ctx, ops, "commit")
}

// Check returns ErrNotLeader unless this leadership still holds its
// election key. A leader checks before it acts on other processes (asks an
// aggregator to release a partition), so that one that was paused past its
// session and has not noticed yet does not release partitions that its
// refused write would leave without an owner. It is a check, not a fence:
// the writes themselves are fenced (Commit).
func (l *Leadership) Check(ctx context.Context) error {
	select {
	case <-l.Done():
		return ErrNotLeader
	default:
	}
	resp, err := l.c.cli.Get(ctx, l.key)
	if err != nil {
		return fmt.Errorf("check leadership: %w", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != l.rev {
		return ErrNotLeader
	}
	return nil
}

// Fence is the condition that this leadership still holds its election
// key with the revision it won with: every leader write is a transaction
// conditioned on it, so that a deposed leader cannot slip a write in after
// its successor was elected. Writers outside this package (the split table,
// hotkey.Store.Write) put it in their own transactions.
func (l *Leadership) Fence() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)
}

// txn runs ops if the election key is still this leadership's.
func (l *Leadership) txn(ctx context.Context, ops []clientv3.Op, what string) error {
	resp, err := l.c.cli.Txn(ctx).
		If(l.Fence()).
		Then(ops...).
		Commit()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !resp.Succeeded {
		return ErrNotLeader
	}
	return nil
}

// Handoff is one change of a partition's owner, as the leader recorded it.
type Handoff struct {
	Partition int    `json:"partition"`
	From      string `json:"from"`
	To        string `json:"to"`
	// Epoch is the new owner's epoch, the version of the assignment that
	// made the move.
	Epoch uint64 `json:"epoch"`
	// Planned: the old owner released the partition (a live handoff);
	// otherwise it was lost, or did not answer the release.
	Planned bool `json:"planned"`
	// Stopped is when the old owner stopped serving (planned), or when the
	// leader noticed its loss (unplanned).
	Stopped time.Time `json:"stopped"`
	// Serving is when the new owner started serving; zero until it
	// reported so.
	Serving time.Time `json:"serving,omitzero"`
}

// Pause is how long the partition had no serving owner; 0 while unknown,
// and never negative (the two times come from different clocks).
func (h Handoff) Pause() time.Duration {
	if h.Serving.IsZero() || h.Stopped.IsZero() {
		return 0
	}
	return max(h.Serving.Sub(h.Stopped), 0)
}

// handoffKey orders records by epoch, then partition.
func (c *Client) handoffKey(h Handoff) string {
	return fmt.Sprintf("%s%020d-%05d", c.handoffsPrefix(), h.Epoch, h.Partition)
}

// Handoffs returns the recorded handoffs, oldest first.
func (c *Client) Handoffs(ctx context.Context) ([]Handoff, error) {
	resp, err := c.cli.Get(ctx, c.handoffsPrefix(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("get handoffs: %w", err)
	}
	out := make([]Handoff, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var h Handoff
		if err := json.Unmarshal(kv.Value, &h); err != nil {
			return nil, fmt.Errorf("%w: handoff %s: %v", ErrMalformed, kv.Key, err)
		}
		out = append(out, h)
	}
	return out, nil
}

// RecordHandoffs stores put (a record with the same epoch and partition
// is replaced), deletes the records drop (by epoch and partition), and then
// deletes the oldest records beyond keep. Like every leader write it is
// refused with ErrNotLeader after the leadership ended.
func (l *Leadership) RecordHandoffs(ctx context.Context, put, drop []Handoff, keep int) error {
	c := l.c
	var ops []clientv3.Op
	for _, h := range put {
		value, err := json.Marshal(h)
		if err != nil {
			return fmt.Errorf("encode handoff: %w", err)
		}
		ops = append(ops, clientv3.OpPut(c.handoffKey(h), string(value)))
	}
	for _, h := range drop {
		ops = append(ops, clientv3.OpDelete(c.handoffKey(h)))
	}
	for chunk := range slices.Chunk(ops, maxTxnOps) {
		if err := l.txn(ctx, chunk, "record handoffs"); err != nil {
			return err
		}
	}
	resp, err := c.cli.Get(ctx, c.handoffsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("count handoffs: %w", err)
	}
	extra := resp.Count - int64(keep)
	if extra <= 0 {
		return nil
	}
	old, err := c.cli.Get(ctx, c.handoffsPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(extra))
	if err != nil {
		return fmt.Errorf("list old handoffs: %w", err)
	}
	if len(old.Kvs) == 0 {
		return nil
	}
	last := string(old.Kvs[len(old.Kvs)-1].Key)
	return l.txn(ctx, []clientv3.Op{clientv3.OpDelete(c.handoffsPrefix(), clientv3.WithRange(last+"\x00"))}, "trim handoffs")
}
