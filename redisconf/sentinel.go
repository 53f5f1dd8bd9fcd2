package redisconf

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrSentinelsDisagree is the error of a connection to a primary that the
// sentinels do not agree on.
var ErrSentinelsDisagree = errors.New("the sentinels do not agree on the primary")

// agreement guards each new connection of a Sentinel client: go-redis
// dials the address one sentinel names, and that sentinel may lag. A
// failover is announced by its leader; the others learn of it from hello
// messages within about two seconds and name the old primary until then.
// An old primary that restarts in that window is a master again (until
// the sentinels demote it, seconds later), takes the writes, and loses
// them when it becomes a replica: the Sentinel test saw 208 appends go
// there and hundreds of counts come out short. So before dialing, every
// sentinel of -redis.sentinel-addrs is asked, and the address must be
// named by one and contradicted by none; otherwise the dial fails and the
// client retries it, asking again. Sentinels that do not answer are not
// counted: one is enough, as for go-redis itself, so that losing some of
// them does not stop clickagg while the primary is fine.
type agreement struct {
	name      string
	addrs     []string
	sentinels []*redis.SentinelClient
	timeout   time.Duration
	tls       *tls.Config
}

func newAgreement(o *redis.UniversalOptions) *agreement {
	a := &agreement{name: o.MasterName, addrs: o.Addrs, tls: o.TLSConfig, timeout: 5 * time.Second}
	for _, addr := range o.Addrs {
		a.sentinels = append(a.sentinels, redis.NewSentinelClient(&redis.Options{
			Addr: addr, Password: o.SentinelPassword, TLSConfig: o.TLSConfig,
			MaxRetries: -1, PoolSize: 2, DialTimeout: time.Second,
		}))
	}
	return a
}

// check returns nil when a sentinel names addr as the primary and none
// names another.
func (a *agreement) check(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	named := make([]string, len(a.sentinels))
	errs := make([]error, len(a.sentinels))
	var wg sync.WaitGroup
	for i, sc := range a.sentinels {
		wg.Go(func() {
			got, err := sc.GetMasterAddrByName(ctx, a.name).Result()
			if err != nil {
				errs[i] = err
				return
			}
			if len(got) == 2 {
				named[i] = net.JoinHostPort(got[0], got[1])
			}
		})
	}
	wg.Wait()
	agree, disagree := 0, 0
	var views []string
	for i, n := range named {
		if n == "" {
			continue
		}
		views = append(views, fmt.Sprintf("sentinel %s names %s", a.addrs[i], n))
		if n == addr {
			agree++
		} else {
			disagree++
		}
	}
	if disagree > 0 {
		return fmt.Errorf("%w (a failover under way?): %s", ErrSentinelsDisagree, strings.Join(views, ", "))
	}
	if agree == 0 {
		return fmt.Errorf("%w: no sentinel of -redis.sentinel-addrs names %s: %w", ErrSentinelsDisagree, addr, errors.Join(errs...))
	}
	return nil
}

// dial is the Sentinel client's dialer: go-redis calls it with the
// address a sentinel named as the primary, and with the sentinels'
// addresses. Those of -redis.sentinel-addrs are dialled as they are; any
// other address must be the agreed primary, so a sentinel that go-redis
// discovers by itself is not used (list them all in the flag). As
// go-redis's own dialer, it speaks TLS when configured.
func (a *agreement) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if !slices.Contains(a.addrs, addr) {
		if err := a.check(ctx, addr); err != nil {
			return nil, err
		}
	}
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 5 * time.Minute}
	if a.tls == nil {
		return d.DialContext(ctx, network, addr)
	}
	return (&tls.Dialer{NetDialer: d, Config: a.tls}).DialContext(ctx, network, addr)
}

func (a *agreement) Close() error {
	var errs []error
	for _, sc := range a.sentinels {
		errs = append(errs, sc.Close())
	}
	return errors.Join(errs...)
}

// failoverClient is go-redis's Sentinel client with the agreement its
// dialer asks, which it closes too.
type failoverClient struct {
	*redis.Client
	agreement *agreement
}

func (c *failoverClient) Close() error {
	return errors.Join(c.Client.Close(), c.agreement.Close())
}
