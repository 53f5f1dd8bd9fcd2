package hotkey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/tally"
)

// ErrWithdrawn: some live router did not acknowledge a change in time, so
// the change was withdrawn before any router could use it. errors.As with
// *WithdrawnError names the routers.
var ErrWithdrawn = errors.New("hotkey: change withdrawn, not acknowledged by every router in time")

// WithdrawnError is a change that was withdrawn.
type WithdrawnError struct {
	Change Change
	// Minute is the effective minute the change would have had.
	Minute int64
	// Missing are the live routers that had not acknowledged it.
	Missing []string
	// Err is why waiting ended (ErrAckTimeout or the caller's context).
	// Undo is set when the withdrawal could not be written: then the
	// change may still stand (see Publisher.Apply).
	Err, Undo error
}

func (e *WithdrawnError) Error() string {
	s := fmt.Sprintf("%s from minute %d withdrawn: routers %s did not acknowledge it: %v", e.Change, e.Minute, strings.Join(e.Missing, ", "), e.Err)
	if e.Undo != nil {
		s += fmt.Sprintf("; but the withdrawal was not written (%v), so the change may stand: that is safe, since every router that routes a click of minute %d has read the table after the change was written", e.Undo, e.Minute)
	}
	return s
}

// Is makes errors.Is(err, ErrWithdrawn) hold.
func (e *WithdrawnError) Is(target error) bool { return target == ErrWithdrawn }

func (e *WithdrawnError) Unwrap() error { return e.Err }

// ErrAckTimeout: the deadline passed before every live router acknowledged.
var ErrAckTimeout = errors.New("hotkey: routers did not acknowledge in time")

// Routers lists the live members of a role; *cluster.Client satisfies it.
type Routers interface {
	Members(ctx context.Context, role string) ([]cluster.Member, error)
}

// Publisher changes the split table as the coordinator leader, with the
// acknowledgement protocol that makes every router route each click minute
// with the same intervals:
//
//	Apply(change) ─▶ M = EffectiveMinute(now) ─▶ write version v (fenced)
//	    ─▶ wait until every live router acked ≥ v ──all acked before deadline──▶ effective from M
//	                       └──deadline = M·60s − MaxSkew − Safety passed──▶ write v+1 without the change ─▶ ErrWithdrawn
//
// One change at a time: Apply calls are serialized.
type Publisher struct {
	cfg     Config
	store   *Store
	routers Routers
	lg      *slog.Logger
	now     func() time.Time

	mu sync.Mutex
}

// NewPublisher returns a publisher over store that waits for the routers
// listed by routers. now is the clock that picks effective minutes and
// deadlines (nil: time.Now). It does no I/O.
func NewPublisher(cfg Config, store *Store, routers Routers, lg *slog.Logger, now func() time.Time) *Publisher {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Publisher{cfg: cfg, store: store, routers: routers, lg: lg, now: now}
}

// Plan returns the interval c would create (a split) or close (an unsplit)
// if applied now, without writing anything: a dry run.
func (p *Publisher) Plan(ctx context.Context, c Change) (Interval, error) {
	t, _, err := p.store.Load(ctx)
	if err != nil {
		return Interval{}, err
	}
	_, iv, err := p.next(t, c)
	return iv, err
}

// next is t with c applied at the effective minute of now.
func (p *Publisher) next(t *Table, c Change) (*Table, Interval, error) {
	now := p.now()
	m := EffectiveMinute(now, p.cfg.MaxSkew, p.cfg.LeadTime)
	gcBefore := tally.MinuteOf(now.Add(-p.cfg.Keep).UnixMilli())
	return t.apply(c, m, gcBefore, p.store.Partitions())
}

// Apply makes c effective from the minute EffectiveMinute(now) through the
// protocol above and returns the interval it created or closed.
//
// fence is the caller's leadership, checked by etcd with every write (see
// Store.Write): ErrFenced means this process no longer leads and wrote
// nothing. A change that some live router did not acknowledge by its
// deadline is withdrawn: *WithdrawnError (ErrWithdrawn). If the withdrawal
// cannot be written either, the change stays in the table; that is still
// safe, because a router routes only with a copy confirmed within
// MaxStaleness < Safety, so every router that routes a click of minute M
// has read the table after the change was written (see the package
// documentation); the error says so.
func (p *Publisher) Apply(ctx context.Context, fence clientv3.Cmp, c Change) (Interval, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, rev, err := p.store.Load(ctx)
	if err != nil {
		return Interval{}, err
	}
	next, iv, err := p.next(t, c)
	if err != nil {
		return Interval{}, err
	}
	m := iv.FromMinute
	if c.Unsplit {
		m = iv.ToMinute
	}
	newRev, err := p.store.Write(ctx, fence, rev, next)
	if err != nil {
		if !errors.Is(err, ErrFenced) && !errors.Is(err, ErrConflict) {
			// The write may have landed; if so, it is safe anyway (see
			// above), and the next change starts from what is stored.
			err = fmt.Errorf("%w (outcome unknown)", err)
		}
		return Interval{}, err
	}
	deadline := p.cfg.ackDeadline(m)
	p.lg.Info("split table written, waiting for router acks", "change", c.String(), "version", next.Version(), "minute", m, "deadline", deadline)
	missing, err := p.WaitAcks(ctx, next.Version(), deadline)
	if err == nil {
		p.lg.Info("split table change effective", "change", c.String(), "version", next.Version(), "minute", m)
		return iv, nil
	}
	werr := &WithdrawnError{Change: c, Minute: m, Missing: missing, Err: err}
	// Withdraw even when ctx ended: an unconfirmed change must not stay.
	// The new version has the old intervals (and the garbage collection
	// already done, which changes nothing routable).
	undo, err := NewTable(next.Version()+1, t.Splits(), p.store.Partitions())
	if err == nil {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(deadline.Sub(p.now()), p.cfg.Safety))
		_, err = p.store.Write(wctx, fence, newRev, undo)
		cancel()
	}
	if err != nil {
		werr.Undo = err
		p.lg.Error("withdraw split table change", "change", c.String(), "version", next.Version(), "err", err)
	} else {
		p.lg.Warn("split table change withdrawn", "change", c.String(), "version", undo.Version(), "minute", m, "missing", missing)
	}
	return Interval{}, werr
}

// WaitAcks waits until every live router (a member of role router whose
// ack was written on its current membership lease) has acknowledged
// version or a newer one, re-reading both every AckPollInterval, and
// returns nil then. Routers that register while it waits are waited for
// too; routers that leave are not. When the clock passes deadline first it
// returns the routers still missing and ErrAckTimeout; when ctx ends, the
// missing routers and ctx's error.
func (p *Publisher) WaitAcks(ctx context.Context, version uint64, deadline time.Time) ([]string, error) {
	t := time.NewTicker(p.cfg.AckPollInterval)
	defer t.Stop()
	var missing []string
	for {
		// The deadline is checked before reading the acks: a router that
		// acks after it must not make the change effective, since the
		// withdrawal may then be too late to reach the others.
		if !p.now().Before(deadline) {
			return missing, fmt.Errorf("%w: deadline %v passed", ErrAckTimeout, deadline.UTC())
		}
		var err error
		missing, err = p.missing(ctx, version)
		switch {
		case ctx.Err() != nil:
			return missing, ctx.Err()
		case err != nil:
			p.lg.Warn("read router acks", "version", version, "err", err)
		case len(missing) == 0:
			if !p.now().Before(deadline) {
				return nil, fmt.Errorf("%w: deadline %v passed", ErrAckTimeout, deadline.UTC())
			}
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return missing, ctx.Err()
		case <-t.C:
		}
	}
}

// missing returns the live routers whose current incarnation has not
// acknowledged version; a failed read returns an error and no list.
func (p *Publisher) missing(ctx context.Context, version uint64) ([]string, error) {
	ms, err := p.routers.Members(ctx, cluster.RoleRouter)
	if err != nil {
		return nil, err
	}
	acks, err := p.store.Acks(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		a, ok := acks[m.ID]
		// An ack on another lease is a previous life's: the restarted
		// router may not have loaded the table yet.
		if !ok || a.Lease != m.Incarnation || a.Version < version {
			out = append(out, m.ID)
		}
	}
	slices.Sort(out)
	return out, nil
}
