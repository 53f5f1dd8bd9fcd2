package coordinator

import (
	"context"
	"errors"
	"fmt"

	"github.com/clickagg/clickagg/cluster"
)

// Refusals of the admin mutations; the gRPC adapter maps them to codes.
var (
	// ErrNotLeading: this coordinator does not lead now; only the leader
	// executes mutations.
	ErrNotLeading = errors.New("coordinator: not the leader")
	// ErrInvalid: the request is malformed (a partition out of range, an
	// empty member).
	ErrInvalid = errors.New("coordinator: invalid argument")
	// ErrUnknownMember: no live aggregator has that ID.
	ErrUnknownMember = errors.New("coordinator: unknown member")
	// ErrLastMember: draining it would leave no aggregator to own the
	// partitions.
	ErrLastMember = errors.New("coordinator: last member that can own partitions")
	// ErrDraining: the target of a move is draining or leaving.
	ErrDraining = errors.New("coordinator: member is draining")
	// ErrAlreadyOwner: the target of a move already owns the partition.
	ErrAlreadyOwner = errors.New("coordinator: member already owns the partition")
)

type opKind int

const (
	opMove opKind = iota
	opDrain
	opRebalance
)

// request is one admin mutation for the term's loop.
type request struct {
	op        opKind
	partition int
	member    string
	cancel    bool
	dryRun    bool
	reply     chan response // buffered: the loop never waits
}

type response struct {
	moves []Move
	err   error
}

// MovePartition hands partition p over live to member to and pins it there:
// later plans keep it on to while to is alive and not draining, until a
// Rebalance. It returns the moves made (or, with dryRun, the moves it would
// make, changing nothing): p's, plus those of a membership change the
// leader had not acted on yet.
func (c *Coordinator) MovePartition(ctx context.Context, p int, to string, dryRun bool) ([]Move, error) {
	return c.submit(ctx, &request{op: opMove, partition: p, member: to, dryRun: dryRun})
}

// DrainMember moves every partition off member and gives it none until the
// drain is cancelled (cancel = true, which may move partitions back).
func (c *Coordinator) DrainMember(ctx context.Context, member string, cancel, dryRun bool) ([]Move, error) {
	return c.submit(ctx, &request{op: opDrain, member: member, cancel: cancel, dryRun: dryRun})
}

// Rebalance drops every pin and places every partition by the ring again.
func (c *Coordinator) Rebalance(ctx context.Context, dryRun bool) ([]Move, error) {
	return c.submit(ctx, &request{op: opRebalance, dryRun: dryRun})
}

// submit hands req to the running term; ErrNotLeading when there is none.
func (c *Coordinator) submit(ctx context.Context, req *request) ([]Move, error) {
	h := c.term.Load()
	if h == nil {
		return nil, ErrNotLeading
	}
	req.reply = make(chan response, 1)
	select {
	case h.reqs <- req:
	case <-h.done:
		return nil, ErrNotLeading
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Once taken, the request runs to its end even if the caller leaves:
	// wait for the answer or the term's end.
	select {
	case r := <-req.reply:
		return r.moves, r.err
	case <-h.done:
		select {
		case r := <-req.reply:
			return r.moves, r.err
		default:
			return nil, ErrNotLeading
		}
	}
}

// handle validates req against the term's state, then plans it, and
// executes the plan unless it is a dry run. The plan of a dry run is the
// exact plan the same request would execute now.
func (t *term) handle(ctx context.Context, req *request) ([]Move, error) {
	if t.stale {
		if err := t.load(ctx); err != nil {
			return nil, err
		}
	}
	cons, u, err := t.intent(req)
	if err != nil {
		return nil, err
	}
	if req.dryRun {
		next, moved, _, err := planWith(t.cur, t.members, cons, t.c.partitions, t.c.cfg.Load)
		if err != nil {
			return nil, &fatalError{err}
		}
		return movesOf(t.cur, next, moved), nil
	}
	moves, err := t.apply(ctx, cons, u)
	if err != nil {
		return nil, err
	}
	t.c.log.Info("admin request done", "op", req.op.String(), "partition", req.partition, "member", req.member, "cancel", req.cancel, "moves", len(moves))
	return moves, nil
}

func (o opKind) String() string {
	switch o {
	case opMove:
		return "move"
	case opDrain:
		return "drain"
	default:
		return "rebalance"
	}
}

// intent checks req and returns the constraints it asks for and the etcd
// update that stores them.
func (t *term) intent(req *request) (constraints, cluster.Update, error) {
	cons := t.cons.clone()
	var u cluster.Update
	live := map[string]cluster.Member{}
	for _, m := range t.members {
		live[m.ID] = m
	}
	switch req.op {
	case opMove:
		p, to := req.partition, req.member
		if p < 0 || p >= t.c.partitions {
			return cons, u, fmt.Errorf("%w: partition %d: the cluster has partitions 0 to %d", ErrInvalid, p, t.c.partitions-1)
		}
		if to == "" {
			return cons, u, fmt.Errorf("%w: to_member is empty", ErrInvalid)
		}
		m, ok := live[to]
		switch {
		case !ok:
			return cons, u, fmt.Errorf("%w: %q is not a live aggregator", ErrUnknownMember, to)
		case cons.draining[to]:
			return cons, u, fmt.Errorf("%w: %s is draining; cancel the drain first", ErrDraining, to)
		case m.Leaving:
			return cons, u, fmt.Errorf("%w: %s is shutting down", ErrDraining, to)
		}
		if p < len(t.cur.Owners) && t.cur.Owners[p].Member == to && t.cur.Owners[p].Incarnation == m.Incarnation {
			return cons, u, fmt.Errorf("%w: %s already owns partition %d", ErrAlreadyOwner, to, p)
		}
		cons.pins[p] = to
		u.Pin = map[int]string{p: to}
	case opDrain:
		id := req.member
		if id == "" {
			return cons, u, fmt.Errorf("%w: member is empty", ErrInvalid)
		}
		_, ok := live[id]
		if req.cancel {
			if !cons.draining[id] {
				if !ok {
					return cons, u, fmt.Errorf("%w: %q is neither a live aggregator nor draining", ErrUnknownMember, id)
				}
				return cons, u, nil // not draining: nothing to cancel
			}
			delete(cons.draining, id)
			u.Undrain = []string{id}
			break
		}
		if cons.draining[id] {
			return cons, u, nil // already draining
		}
		if !ok {
			return cons, u, fmt.Errorf("%w: %q is not a live aggregator", ErrUnknownMember, id)
		}
		others := 0
		for _, m := range t.members {
			if m.ID != id && !m.Leaving && !cons.draining[m.ID] {
				others++
			}
		}
		if others == 0 {
			return cons, u, fmt.Errorf("%w: %s is the only aggregator that is neither draining nor leaving", ErrLastMember, id)
		}
		cons.draining[id] = true
		u.Drain = []string{id}
	case opRebalance:
		if len(cons.pins) > 0 {
			u.ClearPins = true
		}
		cons.pins = map[int]string{}
	}
	return cons, u, nil
}
