package chaos

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// etcdKill SIGKILLs an etcd member: target names one ("etcd-2"), a
// running follower (TargetFollower) or the leader (TargetLeader). After
// killing the leader it returns once the others have elected a new one.
// heal restarts the member from its data dir.
func (c *Cluster) etcdKill(ctx context.Context, k Kind, target string) (func(context.Context) error, error) {
	leader, err := c.etcdLeader(ctx)
	if err != nil {
		return nil, err
	}
	var m *etcdMember
	switch target {
	case TargetLeader:
		m = leader
	case TargetFollower:
		for _, o := range c.etcd {
			if o != leader && o.Running() {
				m = o
				break
			}
		}
	default:
		for _, o := range c.etcd {
			if o.Name == target {
				m = o
			}
		}
	}
	if m == nil {
		return nil, fmt.Errorf("no etcd member %q", target)
	}
	if k == EtcdMemberKill && m == leader {
		return nil, fmt.Errorf("%s leads: %s kills a follower", m.Name, k)
	}
	if err := m.Kill(); err != nil {
		return nil, err
	}
	heal := func(ctx context.Context) error { return m.Start(ctx) }
	if m == leader {
		err := waitFor(ctx, time.Minute, func() error {
			l, err := c.etcdLeader(ctx)
			if err != nil {
				return err
			}
			if l == m {
				return errors.New("no new leader yet")
			}
			return nil
		})
		if err != nil {
			return heal, err
		}
	}
	return heal, nil
}

// etcdUnreachable takes every etcd proxy down: every clickagg process's
// connection to etcd is closed and new ones are refused, while the
// members themselves stay up. heal brings the proxies back.
func (c *Cluster) etcdUnreachable() (func(context.Context) error, error) {
	for _, m := range c.etcd {
		if err := c.proxies.down(m.Name); err != nil {
			return nil, err
		}
	}
	return func(context.Context) error {
		var errs []error
		for _, m := range c.etcd {
			errs = append(errs, c.proxies.up(m.Name))
		}
		return errors.Join(errs...)
	}, nil
}
