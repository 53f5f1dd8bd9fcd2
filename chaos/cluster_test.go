package chaos

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/testserver"
)

// binary is the clickagg binary under test: $CLICKAGG_BIN, else built
// once by TestMain.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	binary = os.Getenv("CLICKAGG_BIN")
	var dir string
	if binary == "" && !testing.Short() {
		var err error
		if dir, err = os.MkdirTemp("", "clickagg-chaos-bin"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		binary = filepath.Join(dir, "clickagg")
		cmd := exec.Command("go", "build", "-o", binary, "../cmd/clickagg")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build clickagg:", err)
			os.Exit(1)
		}
	}
	code := testserver.Run(m)
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// startCluster starts the default cluster in the test's temp dir and
// closes it at the end of the test, printing the tail of every log when
// the test failed.
func startCluster(t *testing.T) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a whole cluster of processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := StartCluster(ctx, ClusterConfig{Binary: binary, Dir: t.TempDir(), Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster started and healthy in %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range c.Processes() {
				dumpLog(t, p, 15)
			}
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// testWriter writes to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

// dumpLog logs the last n lines of p's log.
func dumpLog(t *testing.T, p *Process, n int) {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("--- %s (%s), last %d lines:", p.Name, p.Log, len(lines))
	for _, l := range lines {
		t.Log(l)
	}
}

func TestClusterStarts(t *testing.T) {
	c := startCluster(t)
	want := map[string]int{"etcd": 3, "coordinator": 2, "aggregator": 3, "router": 2, "queryd": 2}
	got := map[string]int{}
	for _, p := range c.Processes() {
		got[p.Role]++
		if p.Pid() == 0 {
			t.Errorf("%s does not run", p.Name)
		}
	}
	for r, n := range want {
		if got[r] != n {
			t.Errorf("%d %s processes, want %d", got[r], r, n)
		}
	}
	if len(c.RouterAddrs()) != 2 || len(c.QuerydHTTP()) != 2 || len(c.EtcdEndpoints()) != 3 {
		t.Fatalf("routers %v, queryd http %v, etcd %v", c.RouterAddrs(), c.QuerydHTTP(), c.EtcdEndpoints())
	}
	rdb := c.RedisClient()
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}

	// The shipper joins the processes, serves, and is a kill target.
	log := filepath.Join(t.TempDir(), "clicks.log")
	if err := os.WriteFile(log, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sh, err := c.StartShipper(ctx, []string{log})
	if err != nil {
		t.Fatal(err)
	}
	if sh.Name != "shipper-1" || sh.Role != "shipper" || !slices.Contains(c.Targets(KillOne), "shipper-1") {
		t.Fatalf("shipper %s (%s); kill targets %v", sh.Name, sh.Role, c.Targets(KillOne))
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
}
