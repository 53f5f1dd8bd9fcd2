package chaos

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// toxicSeq numbers the toxics: two faults on one link at once need
// names of their own.
var toxicSeq atomic.Int64

// links resolves a fault's targets to proxy names: LinkRedis is the
// current primary's proxy, LinkEtcd every member's.
func (c *Cluster) links(ctx context.Context, targets []string) ([]string, error) {
	var out []string
	for _, t := range targets {
		switch t {
		case LinkRedis:
			p, err := c.redis.primary(ctx)
			if err != nil {
				return nil, err
			}
			out = append(out, p.name)
		case LinkEtcd:
			for _, m := range c.etcd {
				out = append(out, m.Name)
			}
		default:
			if _, err := c.proxies.get(t); err != nil {
				return nil, err
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// netToxic puts the toxic of f's kind on every link of its targets;
// heal takes it off. Latency is Param (default 100ms) each way, with a
// tenth of it as jitter; a reset closes every connection with a TCP RST
// as soon as data flows on it; one-way stops the data of one direction
// (Param: upstream, towards the proxied server, the default, or
// downstream) and keeps the connections open, as a one-way partition
// does.
func (c *Cluster) netToxic(ctx context.Context, f Fault, targets []string) (func(context.Context) error, error) {
	links, err := c.links(ctx, targets)
	if err != nil {
		return nil, err
	}
	var toxics []toxic
	name := fmt.Sprintf("%s-%d", f.Kind, toxicSeq.Add(1))
	switch f.Kind {
	case NetLatency:
		d := 100 * time.Millisecond
		if f.Param != "" {
			if d, err = time.ParseDuration(f.Param); err != nil || d <= 0 {
				return nil, fmt.Errorf("latency %q: want a positive duration", f.Param)
			}
		}
		attrs := map[string]any{"latency": d.Milliseconds(), "jitter": d.Milliseconds() / 10}
		toxics = []toxic{
			{Name: name + "-up", Type: "latency", Stream: "upstream", Attributes: attrs},
			{Name: name + "-down", Type: "latency", Stream: "downstream", Attributes: attrs},
		}
	case NetReset:
		// Both directions: a server that only sends (an etcd watch,
		// a blocked XREAD answering) is reset too.
		attrs := map[string]any{"timeout": 0}
		toxics = []toxic{
			{Name: name + "-up", Type: "reset_peer", Stream: "upstream", Attributes: attrs},
			{Name: name + "-down", Type: "reset_peer", Stream: "downstream", Attributes: attrs},
		}
	case NetOneWay:
		stream := "upstream"
		if f.Param != "" {
			stream = f.Param
		}
		if stream != "upstream" && stream != "downstream" {
			return nil, fmt.Errorf("one-way %q: want upstream or downstream", f.Param)
		}
		// timeout 0: the data is held forever and the connection never
		// closed by the proxy.
		toxics = []toxic{{Name: name, Type: "timeout", Stream: stream, Attributes: map[string]any{"timeout": 0}}}
	}
	type added struct{ link, toxic string }
	var done []added
	heal := func(ctx context.Context) error {
		var errs []error
		for _, a := range done {
			errs = append(errs, c.proxies.removeToxic(ctx, a.link, a.toxic))
		}
		return errors.Join(errs...)
	}
	for _, l := range links {
		for _, t := range toxics {
			if err := c.proxies.addToxic(l, t); err != nil {
				_ = heal(ctx)
				return nil, err
			}
			done = append(done, added{l, t.Name})
		}
	}
	return heal, nil
}
