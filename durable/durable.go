package durable

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/retry"
)

// ErrNotReplicated is in the error of a Do whose writes did not reach the
// replicas asked for in time. They may have been applied on the primary;
// they are not acknowledged, and the caller does them again.
var ErrNotReplicated = errors.New("write not replicated")

// ErrTooFewReplicas is in Check's error when a primary has fewer replicas
// connected than every write must reach: until more connect, every write
// fails.
var ErrTooFewReplicas = errors.New("too few replicas")

// Options say what a write must reach before Do acknowledges it.
type Options struct {
	// Replicas is how many replicas of its primary each write must
	// reach; 0 acknowledges a write once the primary applied it.
	Replicas int
	// Timeout bounds the wait for the replicas; it must be positive
	// when Replicas is (WAIT's timeout 0 would wait forever).
	Timeout time.Duration
}

// Validate checks the options, naming the flags that set them.
func (o Options) Validate() error {
	switch {
	case o.Replicas < 0:
		return fmt.Errorf("-redis.wait-replicas %d: must be 0 (don't wait) or more", o.Replicas)
	case o.Replicas > 0 && o.Timeout <= 0:
		return fmt.Errorf("-redis.wait-timeout %v: must be positive with -redis.wait-replicas %d", o.Timeout, o.Replicas)
	case o.Replicas > 0 && o.Timeout < time.Millisecond:
		return fmt.Errorf("-redis.wait-timeout %v: WAIT counts in milliseconds, give at least 1ms", o.Timeout)
	}
	return nil
}

// Writer runs writes as Options say. It is safe for concurrent use.
type Writer struct {
	rdb redis.UniversalClient
	opt Options
}

// New returns a Writer over rdb. It does no I/O; options that do not
// validate fail every Do and Check with Validate's error.
func New(rdb redis.UniversalClient, opt Options) *Writer {
	return &Writer{rdb: rdb, opt: opt}
}

// Write is one write of a Do. Make it with Command or Script.
type Write struct {
	key string
	// cmd holds the write's reply for the caller.
	cmd redis.Cmder
	// A script write is sent as a new EVALSHA (or EVAL) command each
	// time, and its reply copied into cmd.
	script *redis.Script
	keys   []string
	args   []any
}

// Command is a write of cmd, whose keys are all in key's hash slot; key
// routes it on Redis Cluster. cmd holds the reply once Do returns.
func Command(key string, cmd redis.Cmder) Write {
	return Write{key: key, cmd: cmd}
}

// Script is a write that runs s over keys (all in one hash slot, which
// the first routes) with args, and the command that holds its reply once
// Do returns.
func Script(ctx context.Context, s *redis.Script, keys []string, args ...any) (Write, *redis.Cmd) {
	cmd := redis.NewCmd(ctx, "evalsha", s.Hash())
	return Write{key: keys[0], cmd: cmd, script: s, keys: keys, args: args}, cmd
}

// maxRedirects bounds how many times Do follows MOVED, ASK and TRYAGAIN
// for one write, as go-redis's own ClusterOptions.MaxRedirects does.
const maxRedirects = 5

// redirectPause is the pause before writes are sent again after a
// redirection: long enough for the slot map to reload (go-redis reloads
// it in the background), short beside a caller's deadline.
var redirectPause = retry.Policy{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}

// Do runs writes and returns nil once every one succeeded and reached
// Options.Replicas replicas. Otherwise it returns an error (wrapping
// ErrNotReplicated when the replicas fell short) and the caller must take
// none of the writes as done; each command holds its own reply. The
// writes are pipelined, not a transaction: writes to different slots may
// go to different primaries.
func (w *Writer) Do(ctx context.Context, writes ...Write) error {
	if err := w.opt.Validate(); err != nil {
		return err
	}
	if len(writes) == 0 {
		return nil
	}
	cc, ok := w.rdb.(*redis.ClusterClient)
	if !ok || w.opt.Replicas == 0 {
		// Without a wait, the ClusterClient may route and redirect the
		// pipeline itself.
		if err := w.run(ctx, w.rdb, writes, false); err != nil {
			return err
		}
		return firstErr(writes)
	}
	return w.cluster(ctx, cc, writes)
}

// pipeliner is a client that pipelines: *redis.Client keeps a pipeline on
// one connection.
type pipeliner interface {
	Pipeline() redis.Pipeliner
}

// run sends writes in one pipeline of c, with a WAIT after them when
// Replicas is set, then the scripts c did not have by EVAL in a second
// one. asking puts ASKING before each write (they follow an ASK
// redirection to c). It returns an error when a write failed for another
// reason than a redirection, or the WAIT fell short; each write's own
// reply is on its command.
func (w *Writer) run(ctx context.Context, c pipeliner, writes []Write, asking bool) error {
	sent, err := w.exec(ctx, c, writes, func(pipe redis.Pipeliner, wr Write) redis.Cmder {
		if wr.script != nil {
			return wr.script.EvalSha(ctx, pipe, wr.keys, wr.args...)
		}
		return wr.cmd
	}, asking)
	var again []Write
	for i, wr := range writes {
		if wr.script != nil {
			copyReply(wr.cmd, sent[i])
			if noScript(sent[i].Err()) {
				again = append(again, wr)
			}
		}
	}
	if err != nil || len(again) == 0 {
		return err
	}
	sent, err = w.exec(ctx, c, again, func(pipe redis.Pipeliner, wr Write) redis.Cmder {
		return wr.script.Eval(ctx, pipe, wr.keys, wr.args...)
	}, asking)
	for i, wr := range again {
		copyReply(wr.cmd, sent[i])
	}
	return err
}

// exec queues the command cmd gives for each write, then WAIT when
// Replicas is set, and sends them in one pipeline.
func (w *Writer) exec(ctx context.Context, c pipeliner, writes []Write, cmd func(redis.Pipeliner, Write) redis.Cmder, asking bool) ([]redis.Cmder, error) {
	pipe := c.Pipeline()
	sent := make([]redis.Cmder, len(writes))
	for i, wr := range writes {
		if asking {
			pipe.Do(ctx, "asking")
		}
		sent[i] = cmd(pipe, wr)
		if sent[i] == wr.cmd {
			wr.cmd.SetErr(nil)
			_ = pipe.Process(ctx, wr.cmd)
		}
	}
	var wait *redis.IntCmd
	if w.opt.Replicas > 0 {
		// A pipeline reads WAIT's reply within the client's read timeout,
		// not the longer one a lone Wait gets: redisconf sets the read
		// timeout above -redis.wait-timeout.
		wait = redis.NewIntCmd(ctx, "wait", w.opt.Replicas, w.opt.Timeout.Milliseconds())
		_ = pipe.Process(ctx, wait)
	}
	// Each command's error is on it; Exec's is the first of them.
	_, _ = pipe.Exec(ctx)
	wrote := false
	for _, c := range sent {
		switch err := c.Err(); {
		case err == nil:
			wrote = true
		case redirected(err) || noScript(err):
			// Refused before it ran: sent again by the caller.
		default:
			// Failed, or its connection did (and WAIT's with it).
			return sent, err
		}
	}
	if wait == nil || !wrote {
		return sent, nil
	}
	n, err := wait.Result()
	if err != nil {
		return sent, fmt.Errorf("wait for %d replicas (-redis.wait-replicas): %w", w.opt.Replicas, err)
	}
	if int(n) < w.opt.Replicas {
		return sent, fmt.Errorf("write reached %d of %d replicas within %v (-redis.wait-replicas, -redis.wait-timeout): %w", n, w.opt.Replicas, w.opt.Timeout, ErrNotReplicated)
	}
	return sent, nil
}

// noScript reports whether err is a server's NOSCRIPT: the script did
// not run.
func noScript(err error) bool {
	return errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")
}

// cluster runs writes on a Redis Cluster: grouped by the primary of
// their slot, each group with its WAIT on that primary's client.
// Redirected writes are sent again where the redirection says.
func (w *Writer) cluster(ctx context.Context, cc *redis.ClusterClient, writes []Write) error {
	type target struct {
		node   *redis.Client
		asking bool
	}
	pending := make([]int, len(writes))
	for i := range writes {
		pending[i] = i
	}
	// via holds the node an ASK or MOVED named for a write, for its next
	// attempt; writes without one go to MasterForKey.
	via := map[int]target{}
	redirects := 0
	err := retry.Do(ctx, redirectPause, nil, func() error {
		groups := map[target][]int{}
		for _, i := range pending {
			t, ok := via[i]
			if !ok {
				node, err := cc.MasterForKey(ctx, writes[i].key)
				if err != nil {
					return retry.Permanent(fmt.Errorf("primary of %s: %w", writes[i].key, err))
				}
				t = target{node: node}
			}
			groups[t] = append(groups[t], i)
		}
		var mu sync.Mutex
		var again []int
		via = map[int]target{}
		var g errgroup.Group
		for t, idx := range groups {
			g.Go(func() error {
				ws := make([]Write, len(idx))
				for j, i := range idx {
					ws[j] = writes[i]
				}
				err := w.run(ctx, t.node, ws, t.asking)
				mu.Lock()
				defer mu.Unlock()
				for j, i := range idx {
					addr, ask, ok := redirection(ws[j].cmd.Err())
					if !ok {
						continue
					}
					again = append(again, i)
					if addr == "" {
						continue
					}
					if n := nodeAt(ctx, cc, addr); n != nil {
						via[i] = target{node: n, asking: ask}
					}
				}
				return err
			})
		}
		if err := g.Wait(); err != nil {
			// A group's writes are not acknowledged, so neither is Do,
			// whatever the other groups did. The failure may be the
			// primary's death: the next Do should find its successor.
			cc.ReloadState(ctx)
			return retry.Permanent(err)
		}
		if len(again) == 0 {
			return nil
		}
		cc.ReloadState(ctx)
		redirects++
		pending = again
		if redirects > maxRedirects {
			return retry.Permanent(fmt.Errorf("%d writes still redirected after %d attempts: %w", len(again), redirects, writes[again[0]].cmd.Err()))
		}
		return fmt.Errorf("%d writes redirected", len(again))
	})
	if err != nil {
		return err
	}
	return firstErr(writes)
}

// nodeAt returns the cluster's client for the node at addr, nil if the
// slot map does not know it (yet).
func nodeAt(ctx context.Context, cc *redis.ClusterClient, addr string) *redis.Client {
	var mu sync.Mutex
	var found *redis.Client
	_ = cc.ForEachShard(ctx, func(_ context.Context, c *redis.Client) error {
		if c.Options().Addr == addr {
			mu.Lock()
			found = c
			mu.Unlock()
		}
		return nil
	})
	return found
}

// redirection reports whether err sends the write elsewhere (MOVED, ASK)
// or asks for it again later (TRYAGAIN), and where.
func redirection(err error) (addr string, ask, ok bool) {
	if err == nil {
		return "", false, false
	}
	if addr, ok := redis.IsMovedError(err); ok {
		return addr, false, true
	}
	if addr, ok := redis.IsAskError(err); ok {
		return addr, true, true
	}
	return "", false, redis.IsTryAgainError(err)
}

func redirected(err error) bool {
	_, _, ok := redirection(err)
	return ok
}

// copyReply gives to, the caller's command, the reply of from, the
// command that was sent.
func copyReply(to, from redis.Cmder) {
	if c, ok := to.(*redis.Cmd); ok {
		if f, ok := from.(*redis.Cmd); ok {
			c.SetVal(f.Val())
		}
	}
	to.SetErr(from.Err())
}

// firstErr returns the first write's error.
func firstErr(writes []Write) error {
	for _, wr := range writes {
		if err := wr.cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

// Check returns an error wrapping ErrTooFewReplicas, naming
// -redis.wait-replicas, when a primary has fewer replicas than
// Options.Replicas: every write to it would fail.
//
// On Redis Cluster it counts the replicas the cluster knows for each
// primary that holds slots (CLUSTER NODES), up or down: one that is down
// may come back, a count that the cluster's shape cannot meet is a
// configuration error. A process must not refuse to start because one
// replica is restarting, which would take all its partitions down for
// the sake of a third of them. One server, or the primary Sentinel
// names, is asked how many replicas are connected (INFO replication,
// connected_slaves): it knows of no other.
func (w *Writer) Check(ctx context.Context) error {
	if err := w.opt.Validate(); err != nil {
		return err
	}
	if w.opt.Replicas == 0 {
		return nil
	}
	check := func(ctx context.Context, c redis.Cmdable, who string) error {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: replication info: %w", who, err)
		}
		n := -1
		for line := range strings.Lines(info) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
				n, _ = strconv.Atoi(v)
			}
		}
		if n < 0 {
			return fmt.Errorf("%s: no connected_slaves in INFO replication", who)
		}
		if n < w.opt.Replicas {
			return fmt.Errorf("%s has %d replicas connected, -redis.wait-replicas asks every write to reach %d: %w", who, n, w.opt.Replicas, ErrTooFewReplicas)
		}
		return nil
	}
	if cc, ok := w.rdb.(*redis.ClusterClient); ok {
		return w.checkCluster(ctx, cc)
	}
	who := "the redis primary"
	// A Sentinel's client is a *redis.Client too, whose Addr is a
	// placeholder: the primary's address is its own business.
	if c, ok := w.rdb.(*redis.Client); ok && c.Options().Addr != "FailoverClient" {
		who = "redis " + c.Options().Addr
	}
	return check(ctx, w.rdb, who)
}

// checkCluster is Check on Redis Cluster.
func (w *Writer) checkCluster(ctx context.Context, cc *redis.ClusterClient) error {
	nodes, err := cc.ClusterNodes(ctx).Result()
	if err != nil {
		return fmt.Errorf("redis cluster nodes: %w", err)
	}
	// A line is: id addr flags master-id ping pong epoch link slot...
	addrs := map[string]string{}
	replicas := map[string]int{}
	for line := range strings.Lines(nodes) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		flags := strings.Split(f[2], ",")
		switch {
		case slices.Contains(flags, "master") && len(f) > 8:
			addr, _, _ := strings.Cut(f[1], "@")
			addrs[f[0]] = addr
		case slices.Contains(flags, "slave"):
			replicas[f[3]]++
		}
	}
	if len(addrs) == 0 {
		return fmt.Errorf("redis cluster nodes: no primary holds slots: %q", nodes)
	}
	for _, id := range slices.Sorted(maps.Keys(addrs)) {
		if n := replicas[id]; n < w.opt.Replicas {
			return fmt.Errorf("redis primary %s has %d replicas in the cluster, -redis.wait-replicas asks every write to reach %d: %w", addrs[id], n, w.opt.Replicas, ErrTooFewReplicas)
		}
	}
	return nil
}
