package cluster

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const ttl = 2 * time.Second

func TestConfigValidate(t *testing.T) {
	good := Config{Endpoints: []string{"http://127.0.0.1:2379"}, Prefix: "/clickagg", DialTimeout: time.Second, LeaseTTL: 10 * time.Second}
	tests := []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"default", func(*Config) {}, true},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }, false},
		{"empty endpoint", func(c *Config) { c.Endpoints = []string{"a", " "} }, false},
		{"prefix without slash", func(c *Config) { c.Prefix = "clickagg" }, false},
		{"prefix with trailing slash", func(c *Config) { c.Prefix = "/clickagg/" }, false},
		{"zero dial timeout", func(c *Config) { c.DialTimeout = 0 }, false},
		{"ttl 1s", func(c *Config) { c.LeaseTTL = time.Second }, false},
		{"ttl 2s", func(c *Config) { c.LeaseTTL = 2 * time.Second }, true},
		{"fractional ttl", func(c *Config) { c.LeaseTTL = 2500 * time.Millisecond }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			c.Endpoints = slices.Clone(good.Endpoints)
			tt.change(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestConfigFlags(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	err := fs.Parse([]string{"-etcd.endpoints", "https://127.0.0.1:1, https://127.0.0.1:2", "-etcd.prefix", "/other", "-etcd.lease-ttl", "3s", "-etcd.dial-timeout", "1s",
		"-etcd.cert-file", "c.pem", "-etcd.key-file", "k.pem", "-etcd.ca-file", "ca.pem", "-etcd.username", "u", "-etcd.password-file", "pw"})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Endpoints: []string{"https://127.0.0.1:1", "https://127.0.0.1:2"}, Prefix: "/other", DialTimeout: time.Second, LeaseTTL: 3 * time.Second,
		CertFile: "c.pem", KeyFile: "k.pem", CAFile: "ca.pem", Username: "u", PasswordFile: "pw"}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("parsed %+v, want %+v", c, want)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Usage == "" {
			t.Errorf("flag -%s has no help text", f.Name)
		}
	})
}

func TestDial(t *testing.T) {
	e := testserver.Etcd(t)
	cli, err := Dial(ctxT(t), Config{Endpoints: []string{e.Endpoint}, Prefix: DefaultPrefix, DialTimeout: 5 * time.Second, LeaseTTL: ttl}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	c := NewClient(cli, "")
	if n, err := c.EnsurePartitions(ctxT(t), 4); err != nil || n != 4 {
		t.Fatalf("EnsurePartitions through Dial = %d, %v", n, err)
	}
}

func register(t *testing.T, c *Client, id, role, addr string) *Registration {
	t.Helper()
	r, err := c.Register(ctxT(t), Member{ID: id, Role: role, Addr: addr}, ttl)
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

// TestPrefixIsACluster: members under another prefix are another
// cluster's. (What a registration lists is in the contract suite,
// package clustertest.)
func TestPrefixIsACluster(t *testing.T) {
	c := NewClient(testserver.EtcdClient(t), "/t")
	register(t, c, "a", RoleAggregator, "127.0.0.1:1")
	other, err := NewClient(c.cli, "/other").Members(ctxT(t), "")
	if err != nil || len(other) != 0 {
		t.Fatalf("members under another prefix = %v, %v", other, err)
	}
}

func equalMembers(a, b []Member) bool {
	return slices.EqualFunc(a, b, func(x, y Member) bool {
		return x.ID == y.ID && x.Role == y.Role && x.Addr == y.Addr && x.Incarnation == y.Incarnation && x.RegisteredAt.Equal(y.RegisteredAt)
	})
}

func ids(ms []Member) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, fmt.Sprintf("%s@%d", m.ID, m.Incarnation))
	}
	return out
}

func TestLeaseLoss(t *testing.T) {
	tests := []struct {
		name string
		// lose makes the registration lose its lease without Close.
		lose func(t *testing.T, own *clientv3.Client, other *Client, r *Registration)
	}{
		{"process dies: lease expires", func(t *testing.T, own *clientv3.Client, _ *Client, _ *Registration) {
			// Closing the client stops the keepalive without revoking.
			_ = own.Close()
		}},
		{"lease revoked by someone else", func(t *testing.T, _ *clientv3.Client, other *Client, r *Registration) {
			if _, err := other.cli.Revoke(ctxT(t), clientv3.LeaseID(r.Member().Incarnation)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testserver.Etcd(t)
			own := testserver.NewEtcdClient(t, e.Endpoint)
			other := NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/t")
			r, err := NewClient(own, "/t").Register(ctxT(t), Member{ID: "a", Role: RoleAggregator}, ttl)
			if err != nil {
				t.Fatal(err)
			}
			ms, err := other.Members(ctxT(t), "")
			if err != nil || !equalMembers(ms, []Member{r.Member()}) {
				t.Fatalf("members = %v, %v; want a", ms, err)
			}
			tt.lose(t, own, other, r)
			testserver.Eventually(t, 15*time.Second, func() error {
				ms, err := other.Members(ctxT(t), "")
				if err != nil {
					return err
				}
				if len(ms) != 0 {
					return fmt.Errorf("members %v still registered", ids(ms))
				}
				return nil
			})
			select {
			case <-r.Done():
			case <-time.After(15 * time.Second):
				t.Fatal("Done not closed after the lease was lost")
			}
			if err := r.Close(ctxT(t)); err != nil && tt.name != "process dies: lease expires" {
				t.Fatalf("Close after lease loss = %v", err)
			}
		})
	}
}

func TestEnsurePartitions(t *testing.T) {
	c := NewClient(testserver.EtcdClient(t), "/t")
	// Steps run in order against one cluster.
	steps := []struct {
		name    string
		n       int
		want    int
		wantErr error
	}{
		{"read before any is stored", 0, 0, ErrNoPartitions},
		{"negative", -1, 0, ErrInvalid},
		{"too many", 5000, 0, ErrInvalid},
		{"create", 16, 16, nil},
		{"same again", 16, 16, nil},
		{"read stored", 0, 16, nil},
		{"different", 32, 16, ErrPartitionsMismatch},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			got, err := c.EnsurePartitions(ctxT(t), s.n)
			if !errors.Is(err, s.wantErr) || (s.wantErr == nil && err != nil) {
				t.Fatalf("EnsurePartitions(%d) error = %v, want %v", s.n, err, s.wantErr)
			}
			if got != s.want {
				t.Fatalf("EnsurePartitions(%d) = %d, want %d", s.n, got, s.want)
			}
		})
	}
	// Concurrent creators agree on one count.
	c2 := NewClient(c.cli, "/t2")
	results := make(chan int, 2)
	for _, n := range []int{8, 12} {
		go func() {
			got, _ := c2.EnsurePartitions(context.Background(), n)
			results <- got
		}()
	}
	r1, r2 := <-results, <-results
	stored, err := c2.EnsurePartitions(ctxT(t), 0)
	if err != nil || r1 != stored || r2 != stored {
		t.Fatalf("concurrent creators saw %d and %d, stored %d (%v)", r1, r2, stored, err)
	}
}

func campaign(t *testing.T, c *Client, id string) *Leadership {
	t.Helper()
	l, err := c.Campaign(ctxT(t), id, ttl)
	if err != nil {
		t.Fatalf("campaign %s: %v", id, err)
	}
	t.Cleanup(func() { _ = l.Resign(context.Background()) })
	return l
}

func TestDeposedLeaderIsRefused(t *testing.T) {
	tests := []struct {
		name   string
		depose func(t *testing.T, c *Client, l *Leadership)
	}{
		{"resigned", func(t *testing.T, _ *Client, l *Leadership) {
			if err := l.Resign(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		}},
		{"session lease revoked behind its back", func(t *testing.T, c *Client, _ *Leadership) {
			// What a leader paused for longer than its TTL experiences: its
			// lease is gone while it still believes it leads.
			resp, err := c.cli.Get(ctxT(t), c.electionPrefix()+"/", clientv3.WithFirstCreate()...)
			if err != nil || len(resp.Kvs) != 1 || decodeCandidate(resp.Kvs[0].Value).ID != "first" {
				t.Fatalf("leader key = %v, %v", resp, err)
			}
			if _, err := c.cli.Revoke(ctxT(t), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testserver.Etcd(t)
			c1 := NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/t")
			c2 := NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/t")
			if id, err := c1.Leader(ctxT(t)); err != nil || id != "" {
				t.Fatalf("Leader() before any campaign = %q, %v", id, err)
			}
			first := campaign(t, c1, "first")
			v1 := Assignment{Version: 1, Owners: []Owner{{Member: "a", Incarnation: 1, Epoch: 1}}}
			if err := first.Commit(ctxT(t), Update{Assignment: &v1}); err != nil {
				t.Fatal(err)
			}
			second := make(chan *Leadership, 1)
			go func() {
				l, err := c2.Campaign(context.Background(), "second", ttl)
				if err != nil {
					t.Errorf("second campaign: %v", err)
				}
				second <- l
			}()
			if id, err := c2.Leader(ctxT(t)); err != nil || id != "first" {
				t.Fatalf("Leader() = %q, %v; want first", id, err)
			}
			tt.depose(t, c1, first)
			l2 := <-second
			if l2 == nil {
				t.FailNow()
			}
			t.Cleanup(func() { _ = l2.Resign(context.Background()) })
			if id, err := c1.Leader(ctxT(t)); err != nil || id != "second" {
				t.Fatalf("Leader() = %q, %v; want second", id, err)
			}
			if err := first.Check(ctxT(t)); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("deposed leader's Check = %v, want ErrNotLeader", err)
			}
			if err := first.Commit(ctxT(t), Update{Assignment: &Assignment{Version: 99}}); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("deposed leader's write = %v, want ErrNotLeader", err)
			}
			if got, err := c1.Assignment(ctxT(t)); err != nil || !reflect.DeepEqual(got, v1) {
				t.Fatalf("assignment after refused write = %+v, %v; want %+v", got, err, v1)
			}
			select {
			case <-first.Done():
			case <-time.After(15 * time.Second):
				t.Fatal("deposed leadership's Done not closed")
			}
			v2 := Assignment{Version: 2, Owners: []Owner{{Member: "b", Incarnation: 2, Epoch: 2}}}
			if err := l2.Commit(ctxT(t), Update{Assignment: &v2}); err != nil {
				t.Fatalf("new leader's write: %v", err)
			}
			if got, err := c1.Assignment(ctxT(t)); err != nil || !reflect.DeepEqual(got, v2) {
				t.Fatalf("assignment = %+v, %v; want %+v", got, err, v2)
			}
		})
	}
}

func TestCampaignGivesUpWhenContextEnds(t *testing.T) {
	e := testserver.Etcd(t)
	c1 := NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/t")
	c2 := NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/t")
	campaign(t, c1, "first")
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := c2.Campaign(ctx, "second", ttl)
		res <- err
	}()
	// The second candidate's key appears, then disappears when it gives up.
	candidates := func() int {
		resp, err := c1.cli.Get(ctxT(t), c1.electionPrefix()+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return int(resp.Count)
	}
	testserver.Eventually(t, 10*time.Second, func() error {
		if n := candidates(); n != 2 {
			return fmt.Errorf("%d candidates, want 2", n)
		}
		return nil
	})
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("Campaign after cancel = %v, want context.Canceled", err)
	}
	if n := candidates(); n != 1 {
		t.Fatalf("%d candidates after the second gave up, want 1", n)
	}
	if id, err := c1.Leader(ctxT(t)); err != nil || id != "first" {
		t.Fatalf("Leader() = %q, %v", id, err)
	}
}

// TestMembershipRegistersAgain revokes a kept member's lease: it comes
// back as a new incarnation, announced to onNew, until Close removes it
// for good.
func TestMembershipRegistersAgain(t *testing.T) {
	e := testserver.Etcd(t)
	c := NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/t")
	other := NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/t")
	news := make(chan Member, 4)
	k, err := c.Keep(ctxT(t), Member{ID: "r", Role: RoleRouter, Addr: "127.0.0.1:1"}, ttl, func(m Member) { news <- m }, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := k.Member()
	if m := <-news; m.Incarnation != first.Incarnation {
		t.Fatalf("onNew got %+v first, want the first incarnation %+v", m, first)
	}
	for range 2 {
		prev := k.Member()
		if _, err := other.cli.Revoke(ctxT(t), clientv3.LeaseID(prev.Incarnation)); err != nil {
			t.Fatal(err)
		}
		var m Member
		select {
		case m = <-news:
		case <-time.After(15 * time.Second):
			t.Fatal("not registered again after the lease was revoked")
		}
		if m.Incarnation == prev.Incarnation || m.ID != "r" || m.Addr != first.Addr || k.Member().Incarnation != m.Incarnation {
			t.Fatalf("registered again as %+v (Member() %+v), previously %+v", m, k.Member(), prev)
		}
		ms, err := other.Members(ctxT(t), RoleRouter)
		if err != nil || !equalMembers(ms, []Member{m}) {
			t.Fatalf("members = %+v, %v; want %+v", ms, err, m)
		}
	}
	if err := k.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if ms, err := other.Members(ctxT(t), ""); err != nil || len(ms) != 0 {
		t.Fatalf("members after Close = %+v, %v", ms, err)
	}
	select {
	case m := <-news:
		t.Fatalf("registered again after Close: %+v", m)
	default:
	}
}
