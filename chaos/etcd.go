package chaos

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/localserver"
)

// EtcdMemberSynopsis is the help of `clickagg chaos etcd-member`.
const EtcdMemberSynopsis = `clickagg chaos etcd-member runs one member of an etcd cluster (embedded
etcd) until it is signalled: the chaos harness starts three of them as
child processes so that it can SIGKILL one, or the leader, and restart it
from its data dir.

Usage:
  clickagg chaos etcd-member -name=etcd-1 -dir=DIR -listen-client=http://127.0.0.1:P
    -listen-peer=http://127.0.0.1:Q -initial-cluster=etcd-1=http://127.0.0.1:Q,...`

// EtcdMemberConfig is one etcd member's configuration: the flags of
// `clickagg chaos etcd-member`, as RegisterFlags describes them.
type EtcdMemberConfig struct {
	// Name is the member's name in InitialCluster; Dir its data.
	Name, Dir string
	// ListenClient and ListenPeer are URLs, listened on and advertised.
	ListenClient, ListenPeer string
	// InitialCluster is every member's name=peer URL, comma-separated.
	InitialCluster string
	// HeartbeatInterval and Election are raft's timing.
	HeartbeatInterval, Election time.Duration
	// LogLevel is etcd's zap level.
	LogLevel string
}

// RegisterFlags registers the flags of `clickagg chaos etcd-member`.
func (c *EtcdMemberConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Name, "name", "", "member name, one of -initial-cluster's")
	fs.StringVar(&c.Dir, "dir", "", "data dir; a member restarted on it rejoins with its data")
	fs.StringVar(&c.ListenClient, "listen-client", "", "client URL, listened on and advertised (http://127.0.0.1:PORT)")
	fs.StringVar(&c.ListenPeer, "listen-peer", "", "peer URL, listened on and advertised (http://127.0.0.1:PORT)")
	fs.StringVar(&c.InitialCluster, "initial-cluster", "", "every member's name=peer URL, comma-separated, as etcd's --initial-cluster")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", 150*time.Millisecond, "raft heartbeat interval; more than etcd's 100ms default because the harness shares a few cores with the whole cluster")
	fs.DurationVar(&c.Election, "election-timeout", 1500*time.Millisecond, "raft election timeout (10 heartbeats)")
	fs.StringVar(&c.LogLevel, "log-level", "warn", "etcd's log level: debug, info, warn, error")
}

// Validate checks that every flag is set.
func (c *EtcdMemberConfig) Validate() error {
	for _, f := range []struct{ name, v string }{{"-name", c.Name}, {"-dir", c.Dir}, {"-listen-client", c.ListenClient}, {"-listen-peer", c.ListenPeer}, {"-initial-cluster", c.InitialCluster}} {
		if f.v == "" {
			return fmt.Errorf("%s is required", f.name)
		}
	}
	if !strings.Contains(c.InitialCluster, c.Name+"=") {
		return fmt.Errorf("-initial-cluster %q does not name -name %q", c.InitialCluster, c.Name)
	}
	return nil
}

// RunEtcdMember runs the member until ctx ends. A member whose Dir holds
// data rejoins the cluster with it: etcd ignores -initial-cluster then.
func RunEtcdMember(ctx context.Context, cfg EtcdMemberConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cu, err := url.Parse(cfg.ListenClient)
	if err != nil {
		return fmt.Errorf("-listen-client: %w", err)
	}
	pu, err := url.Parse(cfg.ListenPeer)
	if err != nil {
		return fmt.Errorf("-listen-peer: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name, ec.Dir, ec.LogLevel = cfg.Name, cfg.Dir, cfg.LogLevel
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	ec.InitialCluster = cfg.InitialCluster
	ec.InitialClusterToken = "clickagg-chaos"
	ec.TickMs = uint(cfg.HeartbeatInterval.Milliseconds())
	ec.ElectionMs = uint(cfg.Election.Milliseconds())
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("start etcd member %s: %w", cfg.Name, err)
	}
	defer e.Close()
	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd member %s: %w", cfg.Name, err)
	}
}

// etcdMember is one member as the cluster runs it.
type etcdMember struct {
	*Process
	// client is the member's client URL, direct; proxy its proxy's
	// host:port, which every clickagg process dials.
	client, proxy string
}

// startEtcd starts c.cfg.EtcdMembers members, a proxy in front of each,
// and waits until they have a leader.
func (c *Cluster) startEtcd(ctx context.Context) error {
	n := c.cfg.EtcdMembers
	type ports struct{ client, peer int }
	var ps []ports
	var initial []string
	for i := range n {
		cp, err := localserver.FreePort()
		if err != nil {
			return err
		}
		pp, err := localserver.FreePort()
		if err != nil {
			return err
		}
		ps = append(ps, ports{cp, pp})
		initial = append(initial, fmt.Sprintf("etcd-%d=http://127.0.0.1:%d", i+1, pp))
	}
	for i := range n {
		name := fmt.Sprintf("etcd-%d", i+1)
		client := fmt.Sprintf("http://127.0.0.1:%d", ps[i].client)
		hostport := strings.TrimPrefix(client, "http://")
		proxy, err := c.proxies.add(name, hostport)
		if err != nil {
			return err
		}
		m := &etcdMember{client: client, proxy: proxy}
		m.Process = &Process{
			Name: name, Role: "etcd", Addr: hostport, Advertise: proxy,
			Log: filepath.Join(c.cfg.Dir, name+".log"),
			bin: c.cfg.Binary,
			args: []string{"chaos", "etcd-member", "-name=" + name, "-dir=" + filepath.Join(c.cfg.Dir, name),
				"-listen-client=" + client, fmt.Sprintf("-listen-peer=http://127.0.0.1:%d", ps[i].peer),
				"-initial-cluster=" + strings.Join(initial, ",")},
			ready: func(ctx context.Context) error { _, err := memberStatus(ctx, client); return err },
		}
		c.etcd = append(c.etcd, m)
		if err := m.start(); err != nil {
			return err
		}
	}
	// The first member serves only once a quorum has started: wait for
	// all together.
	g, gctx := errgroup.WithContext(ctx)
	for _, m := range c.etcd {
		g.Go(func() error { return m.waitReady(gctx) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	_, err := c.etcdLeader(ctx)
	return err
}

// memberStatus asks the member at client URL for its status.
func memberStatus(ctx context.Context, client string) (*clientv3.StatusResponse, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return cli.Status(cctx, client)
}

// errNoLeader is etcdLeader's error while members disagree or have none.
var errNoLeader = errors.New("etcd has no leader every running member agrees on")

// etcdLeader returns the member every running member names its leader,
// asking each directly (maintenance Status).
func (c *Cluster) etcdLeader(ctx context.Context) (*etcdMember, error) {
	var leader uint64
	byID := map[uint64]*etcdMember{}
	for _, m := range c.etcd {
		if !m.Running() || m.Paused() {
			continue
		}
		st, err := memberStatus(ctx, m.client)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Name, err)
		}
		byID[st.Header.MemberId] = m
		if st.Leader == 0 || (leader != 0 && st.Leader != leader) {
			return nil, errNoLeader
		}
		leader = st.Leader
	}
	m, ok := byID[leader]
	if !ok {
		return nil, errNoLeader
	}
	return m, nil
}
