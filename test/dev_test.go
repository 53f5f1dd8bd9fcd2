package test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/archive"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// TestDevKeepsCountsAcrossRestarts checks the promise of `clickagg dev`: its
// data directory keeps the counts across a graceful restart and across a
// SIGKILL of the whole process (its redis-server child included).
func TestDevKeepsCountsAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	// No archive flag but the interval, so that the test waits seconds, not
	// a minute, for the last file: dev archives under its data dir.
	dev := startProc(t, dir, "dev", "dev", "-data-dir="+filepath.Join(dir, "data"), "-view=off", "-no-loadgen", "-archive.interval=5s")
	now := time.Now().Truncate(time.Second)
	want := map[string]int64{}
	var events []*clickaggv1.ClickEvent
	for i := range 3000 {
		ad := fmt.Sprintf("dev-ad-%d", i%7)
		want[ad]++
		events = append(events, &clickaggv1.ClickEvent{
			EventId:   fmt.Sprintf("dev-%d", i),
			AdId:      ad,
			ClickTime: timestamppb.New(now.Add(-time.Duration(i%90) * time.Second)),
			UserId:    fmt.Sprintf("user-%d", i%100),
			Ip:        "198.51.100.7",
			Country:   "DE",
		})
	}
	send := func() {
		t.Helper()
		ic := clickaggv1.NewIngestServiceClient(dial(t, dev.addr))
		resp, err := ic.Ingest(context.Background(), &clickaggv1.IngestRequest{Events: events})
		if err != nil || resp.Accepted != int64(len(events)) {
			t.Fatalf("ingest: %v %v", resp, err)
		}
	}
	check := func(when string) {
		t.Helper()
		qc := clickaggv1.NewQueryServiceClient(dial(t, dev.addr))
		testserver.Eventually(t, time.Minute, func() error {
			for ad, n := range want {
				resp, err := qc.GetAggregatedCount(context.Background(), &clickaggv1.GetAggregatedCountRequest{AdId: ad, LastMinutes: 10})
				if err != nil {
					return err
				}
				if resp.Count != n {
					return fmt.Errorf("%s: count of %s = %d, want %d", when, ad, resp.Count, n)
				}
			}
			return nil
		})
	}
	send()
	check("first run")
	dev.Stop()
	dev.Restart()
	check("after a graceful restart")
	// The same events again are duplicates: the counts must not move.
	send()
	check("after re-sending every event")
	dev.Kill()
	dev.Restart()
	check("after SIGKILL and restart")
	checkDevRedisCli(t, dev)

	// Every click is in the raw archive under the data dir; counted once
	// per (ad_id, event_id), the archive gives the same counts.
	ctx := context.Background()
	bucket, err := archive.OpenBucket(ctx, filepath.Join(dir, "data", "archive"))
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	testserver.Eventually(t, time.Minute, func() error {
		keys, err := bucket.List(ctx, "raw/")
		if err != nil {
			return err
		}
		clicks := map[[2]string]bool{}
		for _, k := range keys {
			data, err := bucket.Get(ctx, k)
			if err != nil {
				return err
			}
			c, err := archive.ReadChunk(k, data)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range c.Rows {
				clicks[[2]string{r.AdID, r.EventID}] = true
			}
		}
		got := map[string]int64{}
		for c := range clicks {
			got[c[0]]++
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("archive in %d files counts %v, want %v", len(keys), got, want)
		}
		return nil
	})
}

// checkDevRedisCli runs the redis-cli command that dev printed last: it
// reaches dev's redis-server, which refuses redis-cli without the
// password.
func checkDevRedisCli(t *testing.T, dev *proc) {
	t.Helper()
	b, err := os.ReadFile(dev.log)
	if err != nil {
		t.Fatal(err)
	}
	var cmdline string
	for l := range strings.Lines(string(b)) {
		if strings.Contains(l, "redis-cli -p ") {
			cmdline = strings.TrimSpace(l)
		}
	}
	if cmdline == "" {
		t.Fatal("dev printed no redis-cli command")
	}
	out, err := exec.Command("bash", "-c", cmdline+" DBSIZE").CombinedOutput()
	if n, perr := strconv.Atoi(strings.TrimSpace(string(out))); err != nil || perr != nil || n == 0 {
		t.Fatalf("%s DBSIZE: %q, %v; want the number of keys", cmdline, out, err)
	}
	_, bare, _ := strings.Cut(cmdline, "redis-cli")
	out, _ = exec.Command("bash", "-c", "redis-cli"+bare+" DBSIZE").CombinedOutput()
	if !strings.Contains(string(out), "NOAUTH") {
		t.Fatalf("redis-cli%s DBSIZE without the password: %q, want NOAUTH", bare, out)
	}
}
