package cli

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newFlags() (*flag.FlagSet, *ServerConfig) {
	fs := flag.NewFlagSet("clickagg", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg ServerConfig
	cfg.RegisterFlags(fs)
	return fs, &cfg
}

func TestEnvOverridesFlagsButNotTheCommandLine(t *testing.T) {
	t.Setenv("CLICKAGG_REDIS_ADDR", "redis.internal:6379")
	t.Setenv("CLICKAGG_AGGREGATOR_SNAPSHOT_INTERVAL", "7s")
	t.Setenv("CLICKAGG_TARGET", "router")
	fs, cfg := newFlags()
	if err := parse(fs, []string{"-target=queryd"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Redis.Addr != "redis.internal:6379" {
		t.Errorf("redis.addr = %q, want the environment's", cfg.Redis.Addr)
	}
	if cfg.Aggregator.SnapshotInterval != 7*time.Second {
		t.Errorf("aggregator.snapshot-interval = %v, want 7s", cfg.Aggregator.SnapshotInterval)
	}
	if cfg.Target != "queryd" {
		t.Errorf("target = %q, want the command line's queryd", cfg.Target)
	}
}

func TestBadEnvValueIsAnError(t *testing.T) {
	t.Setenv("CLICKAGG_CLUSTER_PARTITIONS", "many")
	fs, _ := newFlags()
	err := parse(fs, nil)
	if err == nil || !strings.Contains(err.Error(), "CLICKAGG_CLUSTER_PARTITIONS") {
		t.Fatalf("err = %v, want one naming CLICKAGG_CLUSTER_PARTITIONS", err)
	}
}

func TestRoles(t *testing.T) {
	for _, c := range []struct {
		target string
		want   []string
		bad    bool
	}{
		{target: "all", want: []string{"aggregator", "coordinator", "queryd", "router"}},
		{target: "router, queryd", want: []string{"queryd", "router"}},
		{target: "router,router", want: []string{"router"}},
		{target: "routr", bad: true},
		{target: "", bad: true},
	} {
		t.Run(c.target, func(t *testing.T) {
			cfg := ServerConfig{Target: c.target}
			got, err := cfg.Roles()
			if c.bad {
				if err == nil {
					t.Fatalf("Roles() = %v, want an error", got)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Fatalf("Roles() = %v, %v, want %v", got, err, c.want)
			}
		})
	}
}

func TestDefaultsValidate(t *testing.T) {
	fs, cfg := newFlags()
	if err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

// TestAdvertiseAddr: what members register is what gRPC dials, an IPv6
// address in brackets, also when a manifest wrote $(POD_IP):port on an IPv6
// cluster; what cannot be dialed is refused at start.
// TestHTTPAdvertise: the registered HTTP address is the advertised gRPC
// host with the HTTP listener's port, whatever HTTP listens on.
func TestHTTPAdvertise(t *testing.T) {
	for _, c := range []struct {
		grpc string
		port int
		want string
	}{
		{"10.0.0.7:9090", 8080, "10.0.0.7:8080"},
		{"aggregator-0.aggregator:9090", 8080, "aggregator-0.aggregator:8080"},
		{"[fd00::7]:9090", 18080, "[fd00::7]:18080"},
		{"127.0.0.1:41234", 45755, "127.0.0.1:45755"},
	} {
		if got := httpAdvertise(c.grpc, &net.TCPAddr{IP: net.IPv4zero, Port: c.port}); got != c.want {
			t.Errorf("httpAdvertise(%q, :%d) = %q, want %q", c.grpc, c.port, got, c.want)
		}
	}
}

func TestAdvertiseAddr(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{in: "10.0.0.7:9090", want: "10.0.0.7:9090"},
		{in: "aggregator-0.aggregator:9090", want: "aggregator-0.aggregator:9090"},
		{in: "[fd00::7]:9090", want: "[fd00::7]:9090"},
		{in: "fd00::7:9090", want: "[fd00::7]:9090"},
		{in: "::ffff:10.0.0.7:9090", want: "[::ffff:10.0.0.7]:9090"},
		{in: "10.0.0.7", err: "want host:port"},
		{in: "fd00::7", err: "want host:port"},
		{in: "fe80::1%eth0:9090", err: "want host:port"},
		{in: "host:http", err: `port "http" is not a number`},
		{in: "host:0", err: `port "0" is not a number`},
		{in: "host:65536", err: `port "65536" is not a number`},
		{in: ":9090", err: "no host"},
	} {
		got, err := canonicalAdvertise(c.in)
		if c.err == "" && (err != nil || got != c.want) || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("canonicalAdvertise(%q) = %q, %v; want %q, error containing %q", c.in, got, err, c.want, c.err)
		}
	}
	fs, cfg := newFlags()
	if err := parse(fs, []string{"-grpc.advertise-addr=10.0.0.7"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "-grpc.advertise-addr") {
		t.Fatalf("Validate() = %v, want an error naming -grpc.advertise-addr", err)
	}
}

func TestEmptyRedisPrefixIsRefused(t *testing.T) {
	for _, target := range []string{"all", "queryd", "aggregator", "router"} {
		fs, cfg := newFlags()
		if err := parse(fs, []string{"-target=" + target, "-redis.prefix="}); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "-redis.prefix") {
			t.Errorf("-target=%s: Validate() = %v, want an error naming -redis.prefix", target, err)
		}
	}
}

func TestEveryFlagIsExplained(t *testing.T) {
	fs, _ := newFlags()
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Usage) < 20 {
			t.Errorf("-%s: usage %q explains too little", f.Name, f.Usage)
		}
	})
}

// TestRedisFlagsFromEnv: every -redis.* connection flag is settable from
// the environment, and the default -redis.addr gives way to a Cluster
// named there.
func TestRedisFlagsFromEnv(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"redis.cluster-addrs":   "a:1,b:2",
		"redis.username":        "clickagg",
		"redis.password-file":   pw,
		"redis.tls":             "true",
		"redis.tls-server-name": "redis.internal",
	}
	for name, v := range env {
		t.Setenv(EnvName(name), v)
	}
	fs, cfg := newFlags()
	if err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	r := cfg.Redis
	if r.ClusterAddrs != "a:1,b:2" || r.Username != "clickagg" || r.PasswordFile != pw || !r.TLS || r.TLSServerName != "redis.internal" {
		t.Fatalf("redis config from the environment: %+v", r)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if r.String() != "cluster a:1,b:2" {
		t.Fatalf("String() = %q", r.String())
	}
	t.Setenv(EnvName("redis.addr"), "r:6379")
	fs, cfg = newFlags()
	if err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Redis.Validate(); err == nil || !strings.Contains(err.Error(), "-redis.addr") {
		t.Fatalf("Validate with CLICKAGG_REDIS_ADDR and CLICKAGG_REDIS_CLUSTER_ADDRS: %v, want an error naming -redis.addr", err)
	}
}

// TestOneIDFlag: -id names the process in every role; the roles have no
// ID flags of their own, and a router checks -id as it writes it into
// every log entry.
func TestOneIDFlag(t *testing.T) {
	fs, _ := newFlags()
	for _, name := range []string{"router.id", "aggregator.id", "coordinator.id"} {
		if fs.Lookup(name) != nil {
			t.Errorf("flag -%s exists; -id is the only ID flag", name)
		}
	}
	long := "-id=" + strings.Repeat("r", 129)
	for _, tc := range []struct {
		args []string
		want string // "" for valid
	}{
		{[]string{"-target=all", "-id=node-1"}, ""},
		{[]string{"-target=aggregator,coordinator,queryd", long}, ""},
		{[]string{"-target=router", long}, "router: -id is 129 bytes long, at most 128 allowed for a router"},
		{[]string{"-target=router", "-id=r\xff"}, "router: -id is not valid UTF-8"},
		{[]string{"-target=router", "-id="}, "-id: must not be empty"},
	} {
		fs, cfg := newFlags()
		if err := parse(fs, tc.args); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); fmt.Sprint(err) != tc.want && !(err == nil && tc.want == "") {
			t.Errorf("Validate(%q) = %v, want %q", tc.args, err, tc.want)
		}
	}
}
