package cli

import (
	"flag"
	"io"
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
	if cfg.RedisAddr != "redis.internal:6379" {
		t.Errorf("redis.addr = %q, want the environment's", cfg.RedisAddr)
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

func TestEveryFlagIsExplained(t *testing.T) {
	fs, _ := newFlags()
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Usage) < 20 {
			t.Errorf("-%s: usage %q explains too little", f.Name, f.Usage)
		}
	})
}
