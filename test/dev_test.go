package test

import (
	"context"
	"errors"
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
	"github.com/clickagg/clickagg/localserver"
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

// TestDevViewShowsOutsideClicks: clicks other clients send to dev (over
// gRPC, then with clickagg ship), with no load generator running, show
// with their exact total in the info
// lines of -view=off and in the live view, whose every frame starts with
// the banner and the console's URL. Before, the view showed the load
// generator's counters only and -view=off printed nothing of the cluster.
func TestDevViewShowsOutsideClicks(t *testing.T) {
	const n = 2400
	now := time.Now()
	events := make([]*clickaggv1.ClickEvent, n)
	for i := range events {
		events[i] = &clickaggv1.ClickEvent{
			EventId: fmt.Sprintf("outside-%d", i), AdId: fmt.Sprintf("outside-ad-%d", i%3), ClickTime: timestamppb.New(now),
			UserId: fmt.Sprintf("user-%d", i%40), Ip: "203.0.113.9", Country: "NL",
		}
	}
	send := func(dev *proc) {
		t.Helper()
		resp, err := clickaggv1.NewIngestServiceClient(dial(t, dev.addr)).Ingest(context.Background(), &clickaggv1.IngestRequest{Events: events})
		if err != nil || resp.Accepted != n {
			t.Fatalf("ingest: %v %v", resp, err)
		}
	}
	// lastLine returns the last line of dev's log that holds s.
	lastLine := func(dev *proc, s string) string {
		b, err := os.ReadFile(dev.log)
		if err != nil {
			t.Fatal(err)
		}
		var last string
		for l := range strings.Lines(string(b)) {
			if strings.Contains(l, s) {
				last = l
			}
		}
		return last
	}

	t.Run("view=off", func(t *testing.T) {
		dir := t.TempDir()
		dev := startProc(t, dir, "dev", "dev", "-data-dir="+filepath.Join(dir, "data"), "-view=off", "-no-loadgen", "-view.interval=1s", "-redis.appendfsync=no")
		send(dev)
		wantLine := func(applied, topCount int) {
			t.Helper()
			// Every click is new: the routers accepted exactly what the
			// aggregators applied.
			want := fmt.Sprintf("msg=cluster ingested=%d ingested_per_second=", applied)
			wantApplied := fmt.Sprintf(" applied=%d ", applied)
			top := fmt.Sprintf(" top_ad_clicks_5m=%d", topCount)
			testserver.Eventually(t, time.Minute, func() error {
				l := lastLine(dev, "msg=cluster ")
				if !strings.Contains(l, want) || !strings.Contains(l, wantApplied) || !strings.Contains(l, " routers_unavailable=0 ") ||
					!strings.Contains(l, " duplicates=0 ") || !strings.Contains(l, " serving=64 ") || !strings.Contains(l, top) {
					return fmt.Errorf("last cluster line %q, want %q,%s routers_unavailable=0, duplicates=0, serving=64 and%s", l, want, wantApplied, top)
				}
				return nil
			})
		}
		wantLine(n, n/3)

		// clickagg ship's clicks count too: 900 more lines, a third of
		// them for outside-ad-0, which stays the top ad.
		const shipped = 900
		var lines strings.Builder
		for i := range shipped {
			fmt.Fprintf(&lines, `{"ad_id":"outside-ad-%d","click_time":%d,"user_id":"user-%d","ip":"203.0.113.10","country":"NL"}`+"\n", i%3, now.UnixMilli(), i%40)
		}
		logFile := filepath.Join(dir, "clicks.log")
		if err := os.WriteFile(logFile, []byte(lines.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		startProc(t, dir, "ship", "ship", "-ship.files="+logFile, "-ship.routers="+dev.addr, "-ship.progress=off")
		wantLine(n+shipped, (n+shipped)/3)
	})

	t.Run("view=on", func(t *testing.T) {
		dir := t.TempDir()
		port, err := localserver.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		httpAddr := fmt.Sprintf("127.0.0.1:%d", port)
		dev := startProc(t, dir, "dev", "dev", "-data-dir="+filepath.Join(dir, "data"), "-view=on", "-no-loadgen", "-view.interval=1s", "-redis.appendfsync=no", "-http.addr="+httpAddr)
		send(dev)
		console := "console:                                   http://" + httpAddr + "/\n"
		testserver.Eventually(t, time.Minute, func() error {
			b, err := os.ReadFile(dev.log)
			if err != nil {
				return err
			}
			frames := strings.Split(string(b), "\033[H\033[2J")
			if len(frames) < 2 {
				return errors.New("the live view has drawn no frame yet")
			}
			last := frames[len(frames)-1]
			if !strings.HasPrefix(last, "clickagg dev is running") || !strings.Contains(last, console) {
				return fmt.Errorf("last frame does not start with the banner and %q:\n%s", console, last)
			}
			if want := fmt.Sprintf("ingested %d clicks (", n); !strings.Contains(last, want) {
				return fmt.Errorf("last frame does not say %q:\n%s", want, last)
			}
			if want := fmt.Sprintf("applied %d clicks (", n); !strings.Contains(last, want) {
				return fmt.Errorf("last frame does not say %q:\n%s", want, last)
			}
			return nil
		})
	})
}
