package redisconf_test

import (
	"context"
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
	rdb, err := c.NewClient(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// TestClusterSeeds: a start against a seed nobody listens on, or one that
// is no cluster node, fails naming -redis.cluster-addrs; a seed of a real
// (one-node) Redis Cluster gives a client that works.
func TestClusterSeeds(t *testing.T) {
	ctx := context.Background()
	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	plain := testserver.Redis(t)
	for _, tc := range []struct{ name, seed, pwFile string }{
		{"unreachable", fmt.Sprintf("127.0.0.1:%d", port), ""},
		{"not a cluster node", plain.Addr, plain.PasswordFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-redis.cluster-addrs=" + tc.seed}
			if tc.pwFile != "" {
				args = append(args, "-redis.password-file="+tc.pwFile)
			}
			c := parse(t, args...)
			c.CheckTimeout = 5 * time.Second
			rdb, err := c.NewClient(ctx)
			if err == nil {
				rdb.Close()
				t.Fatal("NewClient succeeded")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), "-redis.cluster-addrs "+tc.seed) {
				t.Fatalf("NewClient: %v, want an error naming -redis.cluster-addrs", err)
			}
		})
	}

	dir := t.TempDir()
	node, err := localserver.StartRedis(ctx, localserver.RedisConfig{Dir: dir, AppendFsync: "no",
		Args: []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Stop() })
	admin := redis.NewClient(testserver.RedisOptions(node))
	defer admin.Close()
	if err := admin.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 30*time.Second, func() error {
		info, err := admin.ClusterInfo(ctx).Result()
		if err != nil || !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("cluster not ok: %v %q", err, info)
		}
		return nil
	})
	rdb := newClient(t, "-redis.cluster-addrs="+node.Addr, "-redis.password-file="+node.PasswordFile)
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		t.Fatalf("client is a %T, want a *redis.ClusterClient", rdb)
	}
	for i := range 10 {
		if err := rdb.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err(); err != nil {
			t.Fatal(err)
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
	if rdb, err := c.NewClient(ctx); err == nil {
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
	if rdb, err := c.NewClient(ctx); err == nil {
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
