package redisconf_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/redisconf"
	"github.com/clickagg/clickagg/testserver"
)

// parse returns the Config that args give, as the server's flags would.
func parse(t *testing.T, args ...string) *redisconf.Config {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c redisconf.Config
	c.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &c
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidate(t *testing.T) {
	pw := writeFile(t, "pw", "secret\n")
	empty := writeFile(t, "empty", "\n")
	notPEM := writeFile(t, "ca.pem", "not a certificate\n")
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // empty: valid
		want    string // String() of a valid one
	}{
		{name: "default", want: "127.0.0.1:6379"},
		{name: "cluster replaces the default addr", args: []string{"-redis.cluster-addrs=a:1, b:2"}, want: "cluster a:1, b:2"},
		{name: "sentinel replaces the default addr", args: []string{"-redis.sentinel-master=m", "-redis.sentinel-addrs=s:1"}, want: "sentinel master m (via s:1)"},
		{name: "empty addr", args: []string{"-redis.addr="}, wantErr: "set one"},
		{name: "addr and cluster", args: []string{"-redis.addr=r:6379", "-redis.cluster-addrs=a:1"}, wantErr: `-redis.addr "r:6379" and -redis.cluster-addrs are both set`},
		{name: "default addr given and sentinel", args: []string{"-redis.addr=127.0.0.1:6379", "-redis.sentinel-master=m", "-redis.sentinel-addrs=s:1"}, wantErr: "-redis.addr \"127.0.0.1:6379\" and -redis.sentinel-master are both set"},
		{name: "cluster and sentinel", args: []string{"-redis.cluster-addrs=a:1", "-redis.sentinel-master=m", "-redis.sentinel-addrs=s:1"}, wantErr: "-redis.cluster-addrs and -redis.sentinel-master are both set"},
		{name: "empty cluster seed", args: []string{"-redis.cluster-addrs=a:1,,b:2"}, wantErr: "-redis.cluster-addrs \"a:1,,b:2\": an empty address"},
		{name: "sentinel master without addrs", args: []string{"-redis.sentinel-master=m"}, wantErr: `-redis.sentinel-master "m": needs -redis.sentinel-addrs`},
		{name: "sentinel addrs without master", args: []string{"-redis.sentinel-addrs=s:1"}, wantErr: "-redis.sentinel-addrs: set without -redis.sentinel-master"},
		{name: "username without password", args: []string{"-redis.username=u"}, wantErr: "-redis.username \"u\": needs -redis.password-file"},
		{name: "password file", args: []string{"-redis.username=u", "-redis.password-file=" + pw}, want: "127.0.0.1:6379"},
		{name: "unreadable password file", args: []string{"-redis.password-file=" + missing}, wantErr: "-redis.password-file: open " + missing},
		{name: "empty password file", args: []string{"-redis.password-file=" + empty}, wantErr: "-redis.password-file " + empty + ": empty"},
		{name: "ca without tls", args: []string{"-redis.tls-ca-file=" + notPEM}, wantErr: "-redis.tls-ca-file: set without -redis.tls"},
		{name: "server name without tls", args: []string{"-redis.tls-server-name=r"}, wantErr: "-redis.tls-server-name: set without -redis.tls"},
		{name: "unreadable ca", args: []string{"-redis.tls", "-redis.tls-ca-file=" + missing}, wantErr: "-redis.tls-ca-file: open " + missing},
		{name: "invalid ca", args: []string{"-redis.tls", "-redis.tls-ca-file=" + notPEM}, wantErr: "-redis.tls-ca-file " + notPEM + ": no PEM certificate"},
		{name: "sentinel password without master", args: []string{"-redis.sentinel-password-file=" + pw}, wantErr: "-redis.sentinel-password-file: set without -redis.sentinel-master"},
		{name: "unreadable sentinel password", args: []string{"-redis.sentinel-master=m", "-redis.sentinel-addrs=s:1", "-redis.sentinel-password-file=" + missing}, wantErr: "-redis.sentinel-password-file: open " + missing},
		{name: "sentinel password", args: []string{"-redis.sentinel-master=m", "-redis.sentinel-addrs=s:1", "-redis.sentinel-password-file=" + pw}, want: "sentinel master m (via s:1)"},
		{name: "tls with system roots", args: []string{"-redis.tls", "-redis.tls-server-name=r"}, want: "127.0.0.1:6379"},
		{name: "wait for a replica", args: []string{"-redis.wait-replicas=1"}, want: "127.0.0.1:6379"},
		{name: "negative replicas", args: []string{"-redis.wait-replicas=-1"}, wantErr: "-redis.wait-replicas -1: must be 0"},
		{name: "wait without timeout", args: []string{"-redis.wait-replicas=1", "-redis.wait-timeout=0s"}, wantErr: "-redis.wait-timeout 0s: must be positive with -redis.wait-replicas 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parse(t, tc.args...)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.wantErr)
			case tc.wantErr == "" && c.String() != tc.want:
				t.Fatalf("String() = %q, want %q", c.String(), tc.want)
			}
		})
	}
}

// TestPasswordNeverInString: the description that logs and errors carry
// has no secret in it.
func TestPasswordNeverInString(t *testing.T) {
	c := parse(t, "-redis.password-file="+writeFile(t, "pw", "hunter2\n"), "-redis.username=u")
	if s := fmt.Sprintf("%v %s", c, c.String()); strings.Contains(s, "hunter2") {
		t.Fatalf("description %q holds the password", s)
	}
}

// TestPasswordFile: a spawned redis-server refuses a client without its
// password and accepts one configured with -redis.password-file, and an
// ACL user with -redis.username.
func TestPasswordFile(t *testing.T) {
	ctx := context.Background()
	srv := testserver.Redis(t)
	bare := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer bare.Close()
	if err := bare.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("PING without a password: %v, want NOAUTH", err)
	}

	rdb := newClient(t, "-redis.addr="+srv.Addr, "-redis.password-file="+srv.PasswordFile)
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET with -redis.password-file: %v", err)
	}

	// An ACL user of its own, with a password file without a newline.
	if err := rdb.Do(ctx, "ACL", "SETUSER", "clickagg", "on", ">other pass", "~*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	user := newClient(t, "-redis.addr="+srv.Addr, "-redis.username=clickagg", "-redis.password-file="+writeFile(t, "pw", "other pass"))
	if got, err := user.Do(ctx, "ACL", "WHOAMI").Text(); err != nil || got != "clickagg" {
		t.Fatalf("ACL WHOAMI = %q, %v; want clickagg", got, err)
	}
	wrong := newClient(t, "-redis.addr="+srv.Addr, "-redis.username=clickagg", "-redis.password-file="+srv.PasswordFile)
	if err := wrong.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("PING with the wrong password: %v, want WRONGPASS", err)
	}
}

func newClient(t *testing.T, args ...string) redis.UniversalClient {
	t.Helper()
	c := parse(t, args...)
	c.CheckTimeout = 5 * time.Second
	rdb, err := c.NewClient(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// TestWrongPassword: a single server is not contacted by NewClient (it
// may still be starting), so the error of its first command is what
// tells a wrong password; CredentialsError turns it into an
// ErrCredentials naming the flag to fix, and leaves other errors alone.
func TestWrongPassword(t *testing.T) {
	ctx := context.Background()
	srv := testserver.Redis(t)
	admin := redis.NewClient(testserver.RedisOptions(srv))
	defer admin.Close()
	if err := admin.Do(ctx, "ACL", "SETUSER", "pinger", "on", ">pinger pass", "~*", "+ping").Err(); err != nil {
		t.Fatal(err)
	}
	wrong := writeFile(t, "wrong", "not the password\n")
	for _, tc := range []struct {
		name string
		args []string
		want string // empty: no credentials error
	}{
		{"wrong password", []string{"-redis.addr=" + srv.Addr, "-redis.password-file=" + wrong},
			"-redis.password-file " + wrong + ": Redis refused this password for the default user"},
		{"wrong password of a user", []string{"-redis.addr=" + srv.Addr, "-redis.username=pinger", "-redis.password-file=" + wrong},
			"-redis.password-file " + wrong + `: Redis refused this password for user "pinger" (-redis.username)`},
		{"no password", []string{"-redis.addr=" + srv.Addr},
			"-redis.password-file: empty, and Redis requires a password for the default user"},
		{"a user without the permissions", []string{"-redis.addr=" + srv.Addr, "-redis.username=pinger", "-redis.password-file=" + writeFile(t, "pinger", "pinger pass")},
			`-redis.username "pinger": the user may not run a command clickagg needs`},
		{"right password", []string{"-redis.addr=" + srv.Addr, "-redis.password-file=" + srv.PasswordFile}, ""},
		{"nobody listening", []string{"-redis.addr=" + testserver.DeadAddr(t), "-redis.password-file=" + wrong}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parse(t, tc.args...)
			rdb := newClient(t, tc.args...)
			err := rdb.Set(ctx, "k", "v", 0).Err()
			cerr := c.CredentialsError(err)
			t.Log(cerr)
			switch {
			case tc.want == "" && cerr != nil:
				t.Fatalf("CredentialsError(%v) = %v, want nil", err, cerr)
			case tc.want != "" && (cerr == nil || !strings.Contains(cerr.Error(), tc.want) || !errors.Is(cerr, redisconf.ErrCredentials)):
				t.Fatalf("CredentialsError(%v) = %v, want an ErrCredentials containing %q", err, cerr, tc.want)
			}
		})
	}
}

// newClientErr returns NewClient's error for args, failing the test if
// there is none.
func newClientErr(t *testing.T, args ...string) error {
	t.Helper()
	c := parse(t, args...)
	c.CheckTimeout = 5 * time.Second
	rdb, err := c.NewClient(context.Background(), 0)
	if err == nil {
		rdb.Close()
		t.Fatal("NewClient succeeded")
	}
	t.Log(err)
	return err
}

// TestClusterSeeds: a start against seeds nobody listens on, one that is
// no cluster node, a wrong password, or a cluster that leaves hash slots
// unassigned fails naming the flag to fix; a dead seed beside a live one
// does not matter; a seed of a real (one-node) Redis Cluster gives a
// client that works.
func TestClusterSeeds(t *testing.T) {
	ctx := context.Background()
	dead := []string{testserver.DeadAddr(t), testserver.DeadAddr(t)}
	plain := testserver.Redis(t)
	node := testserver.RedisClusterNode(t, 0, 16383)
	half := testserver.RedisClusterNode(t, 0, 8191)
	wrong := writeFile(t, "wrong", "not the password\n")
	for _, tc := range []struct{ name, seeds, pwFile, want string }{
		{"unreachable", dead[0], "", "-redis.cluster-addrs " + dead[0] + ": no seed answered as a Redis Cluster node"},
		{"all unreachable", dead[0] + "," + dead[1], "", "-redis.cluster-addrs " + dead[0] + "," + dead[1] + ": no seed answered as a Redis Cluster node"},
		{"not a cluster node", plain.Addr, plain.PasswordFile, "-redis.cluster-addrs " + plain.Addr + ": no seed answered as a Redis Cluster node"},
		{"wrong password", node.Addr, wrong, "-redis.cluster-addrs " + node.Addr + ": -redis.password-file " + wrong + ": Redis refused this password"},
		{"uncovered slots", half.Addr, half.PasswordFile, "-redis.cluster-addrs " + half.Addr + ": the Redis Cluster assigns hash slots 8192-16383 (8192 of 16384) to no node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-redis.cluster-addrs=" + tc.seeds}
			if tc.pwFile != "" {
				args = append(args, "-redis.password-file="+tc.pwFile)
			}
			err := newClientErr(t, args...)
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewClient: %v, want an error containing %q", err, tc.want)
			}
		})
	}

	for _, seeds := range []string{node.Addr, dead[0] + "," + node.Addr, node.Addr + "," + dead[1]} {
		rdb := newClient(t, "-redis.cluster-addrs="+seeds, "-redis.password-file="+node.PasswordFile)
		if _, ok := rdb.(*redis.ClusterClient); !ok {
			t.Fatalf("client is a %T, want a *redis.ClusterClient", rdb)
		}
		for i := range 10 {
			if err := rdb.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err(); err != nil {
				t.Fatalf("seeds %s: %v", seeds, err)
			}
		}
	}
}

func TestUncoveredRanges(t *testing.T) {
	for _, tc := range []struct {
		slots []redis.ClusterSlot
		want  string
		n     int
	}{
		{nil, "0-16383", 16384},
		{[]redis.ClusterSlot{{Start: 0, End: 16383}}, "", 0},
		{[]redis.ClusterSlot{{Start: 0, End: 5460}, {Start: 10923, End: 16383}}, "5461-10922", 5462},
		{[]redis.ClusterSlot{{Start: 1, End: 99}, {Start: 101, End: 16382}}, "0,100,16383", 3},
	} {
		if got, n := redisconf.Uncovered(tc.slots); got != tc.want || n != tc.n {
			t.Errorf("uncovered(%v) = %q, %d; want %q, %d", tc.slots, got, n, tc.want, tc.n)
		}
	}
}

// TestSentinel runs a real sentinel watching a spawned redis-server: a
// wrong master name and an unreachable sentinel fail at NewClient naming
// the flag; the right name gives a client of the master.
func TestSentinel(t *testing.T) {
	ctx := context.Background()
	master := testserver.Redis(t)
	sentinel := testserver.Sentinel(t, "mymaster", master)

	c := parse(t, "-redis.sentinel-master=nosuchmaster", "-redis.sentinel-addrs="+sentinel, "-redis.password-file="+master.PasswordFile)
	if rdb, err := c.NewClient(ctx, 0); err == nil {
		rdb.Close()
		t.Fatal("NewClient with a wrong master name succeeded")
	} else if !strings.Contains(err.Error(), `-redis.sentinel-master "nosuchmaster": sentinel `+sentinel+" knows no master by that name") {
		t.Fatalf("NewClient with a wrong master name: %v, want an error naming -redis.sentinel-master", err)
	}

	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	nobody := fmt.Sprintf("127.0.0.1:%d", port)
	c = parse(t, "-redis.sentinel-master=mymaster", "-redis.sentinel-addrs="+nobody, "-redis.password-file="+master.PasswordFile)
	c.CheckTimeout = 5 * time.Second
	if rdb, err := c.NewClient(ctx, 0); err == nil {
		rdb.Close()
		t.Fatal("NewClient with an unreachable sentinel succeeded")
	} else if !strings.Contains(err.Error(), "-redis.sentinel-addrs "+nobody+": no sentinel answered") {
		t.Fatalf("NewClient with an unreachable sentinel: %v, want an error naming -redis.sentinel-addrs", err)
	}

	// An unreachable sentinel listed first does not hide a good one.
	rdb := newClient(t, "-redis.sentinel-master=mymaster", "-redis.sentinel-addrs="+nobody+","+sentinel, "-redis.password-file="+master.PasswordFile)
	if err := rdb.Set(ctx, "through-sentinel", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	direct := redis.NewClient(testserver.RedisOptions(master))
	defer direct.Close()
	if got, err := direct.Get(ctx, "through-sentinel").Result(); err != nil || got != "1" {
		t.Fatalf("master holds %q, %v; want the value written through the sentinel's client", got, err)
	}
}

// TestSentinelPassword: sentinels with a password of their own refuse a
// client without it or with the wrong one, naming
// -redis.sentinel-password-file; the data nodes' password is told apart
// (-redis.password-file); with both right the client writes to the
// primary.
func TestSentinelPassword(t *testing.T) {
	ctx := context.Background()
	rs := testserver.RedisSentinel(t, localserver.RedisSentinelConfig{Sentinels: 1, SentinelPassword: true})
	sentinel := rs.Sentinels[0].Addr
	wrong := writeFile(t, "wrong", "not the password\n")
	base := []string{"-redis.sentinel-master=" + rs.MasterName, "-redis.sentinel-addrs=" + sentinel}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no sentinel password", []string{"-redis.password-file=" + rs.Nodes[0].PasswordFile},
			"-redis.sentinel-password-file: empty, and sentinel " + sentinel + " requires a password"},
		{"wrong sentinel password", []string{"-redis.password-file=" + rs.Nodes[0].PasswordFile, "-redis.sentinel-password-file=" + wrong},
			"-redis.sentinel-password-file " + wrong + ": sentinel " + sentinel + " refused it"},
		{"the servers' password for the sentinels", []string{"-redis.password-file=" + rs.Nodes[0].PasswordFile, "-redis.sentinel-password-file=" + rs.Nodes[0].PasswordFile},
			"-redis.sentinel-password-file " + rs.Nodes[0].PasswordFile + ": sentinel " + sentinel + " refused it"},
		{"wrong server password", []string{"-redis.password-file=" + wrong, "-redis.sentinel-password-file=" + rs.SentinelPasswordFile},
			"-redis.sentinel-master " + rs.MasterName + ": -redis.password-file " + wrong + ": Redis refused this password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := newClientErr(t, append(base, tc.args...)...)
			if !strings.Contains(err.Error(), tc.want) || !errors.Is(err, redisconf.ErrCredentials) {
				t.Fatalf("NewClient: %v, want an ErrCredentials containing %q", err, tc.want)
			}
		})
	}
	rdb := newClient(t, append(base, "-redis.password-file="+rs.Nodes[0].PasswordFile, "-redis.sentinel-password-file="+rs.SentinelPasswordFile)...)
	if err := rdb.Set(ctx, "through-sentinel", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestSentinelsDisagree: two sentinels name two different primaries for
// one name, as a sentinel that has not yet heard of a failover does. A
// client dials neither (either could be an old primary that came back),
// and NewClient says so naming -redis.sentinel-addrs; with one of the
// sentinels only, the client works.
func TestSentinelsDisagree(t *testing.T) {
	ctx := context.Background()
	a, b := testserver.Redis(t), testserver.Redis(t)
	sa, sb := testserver.Sentinel(t, "m", a), testserver.Sentinel(t, "m", b)
	err := newClientErr(t, "-redis.sentinel-master=m", "-redis.sentinel-addrs="+sa+","+sb, "-redis.password-file="+a.PasswordFile)
	if !errors.Is(err, redisconf.ErrSentinelsDisagree) || !strings.Contains(err.Error(), "-redis.sentinel-addrs "+sa+","+sb+": ") {
		t.Fatalf("NewClient: %v, want an ErrSentinelsDisagree naming -redis.sentinel-addrs", err)
	}
	rdb := newClient(t, "-redis.sentinel-master=m", "-redis.sentinel-addrs="+sa, "-redis.password-file="+a.PasswordFile)
	if err := rdb.Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
}
