package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// consoleScreenshotEnv names the file the console test writes its
// screenshot to (docs/console.png: `make console-screenshot`); then the
// test also sends background traffic and moves a partition for a minute
// first, so that the charts, hot keys and handoffs have something to show.
const consoleScreenshotEnv = "CLICKAGG_CONSOLE_SCREENSHOT"

// chromium finds the browser: $CLICKAGG_CHROMIUM, else Debian's chromium
// (scripts/deps.sh installs it).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CLICKAGG_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium: run make deps (scripts/deps.sh installs Debian's chromium) or set CLICKAGG_CHROMIUM")
	return ""
}

// browser starts a headless Chromium for the test and returns a tab.
func browser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // the tests may run as root, which Chromium's sandbox refuses
		chromedp.DisableGPU,
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1500, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// evalJS evaluates expr in the page, bounded in time.
func evalJS[T any](ctx context.Context, expr string) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(cctx, chromedp.Evaluate[T](expr))
}

// waitMembers waits until the page lists exactly the members want.
func waitMembers(t *testing.T, ctx context.Context, want ...string) {
	t.Helper()
	testserver.Eventually(t, 60*time.Second, func() error {
		ids, err := evalJS[[]string](ctx, `[...document.querySelectorAll("#members tbody tr[data-member-id]")].map(r => r.dataset.memberId)`)
		if err != nil {
			return err
		}
		slices.Sort(ids)
		if !slices.Equal(ids, want) {
			return fmt.Errorf("members on the page %v, want %v", ids, want)
		}
		// Every member says its version: the build the harness stamped.
		versions, err := evalJS[[]string](ctx, `[...document.querySelectorAll("#members tbody tr[data-member-id] .member-version")].map(c => c.textContent)`)
		if err != nil {
			return err
		}
		for i, v := range versions {
			if v != e2eVersion {
				return fmt.Errorf("member %d of the page says version %q, want %q", i, v, e2eVersion)
			}
		}
		return nil
	})
}

// banner returns the page's error banner, "" when hidden.
func banner(ctx context.Context) (string, error) {
	return evalJS[string](ctx, `(b => b.classList.contains("hidden") ? "" : b.textContent)(document.getElementById("banner"))`)
}

// TestConsoleAuth opens the console of a cluster with authorization on,
// in a browser without a client certificate: the page loads and says why
// it shows no data (401), and once a token with the query permission is
// pasted in, it lists the members.
func TestConsoleAuth(t *testing.T) {
	c := newTestCluster(t, clusterSpec{partitions: 4, coordinators: 1, aggregators: 1, tls: true, auth: true})
	// The cluster's CA is the test's own: the browser is told not to check.
	ctx := browser(t, chromedp.Flag("ignore-certificate-errors", true))
	if err := chromedp.Do(ctx, chromedp.Navigate(c.httpBase()+"/"), chromedp.WaitVisible("#members")); err != nil {
		t.Fatalf("open the console: %v", err)
	}
	testserver.Eventually(t, 30*time.Second, func() error {
		b, err := banner(ctx)
		if err == nil && !strings.HasPrefix(b, "401 Unauthorized") {
			err = fmt.Errorf("banner %q, want the 401 explained", b)
		}
		return err
	})
	if err := chromedp.Do(ctx, chromedp.Click("#token-button"), chromedp.WaitVisible("#token-input"),
		chromedp.SetValue("#token-input", authTokens["billing"]), chromedp.Click("#token-save")); err != nil {
		t.Fatalf("paste the token: %v", err)
	}
	waitMembers(t, ctx, "aggregator-1", "coordinator-1", "queryd-1")
	if b, err := banner(ctx); err != nil || b != "" {
		t.Fatalf("banner %q (%v) with a token holding query, want none", b, err)
	}
	stored, err := evalJS[string](ctx, `sessionStorage.getItem("clickagg.console.token")`)
	if err != nil || stored != authTokens["billing"] {
		t.Fatalf("session storage holds %q (%v), want the pasted token", stored, err)
	}
}

// TestConsole opens queryd's web console in Chromium over a running
// cluster: the page lists exactly the cluster's members and partitions,
// and the count of an ad it watches, and the clicks the routers ingested,
// reach exactly the number of clicks sent to a router while the page is
// open (nothing else sends any).
func TestConsole(t *testing.T) {
	const partitions, clicks = 8, 137
	const ad = "console-e2e-ad"
	screenshot := os.Getenv(consoleScreenshotEnv)
	c := newTestCluster(t, clusterSpec{partitions: partitions, coordinators: 1, routers: 1, aggregators: 2,
		aggregatorFlags: []string{"-aggregator.snapshot-interval=2s"}})
	ctx := browser(t)
	url := c.httpBase() + "/?ad=" + ad
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible("#members")); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}

	waitMembers(t, ctx, "aggregator-1", "aggregator-2", "coordinator-1", "queryd-1", "router-1")
	// Every partition is drawn on the ring and listed, with an owner
	// among the aggregators, serving.
	testserver.Eventually(t, 60*time.Second, func() error {
		got, err := evalJS[struct {
			Count   string   `json:"count"`
			Ring    []string `json:"ring"`
			Rows    int      `json:"rows"`
			Banner  string   `json:"banner"`
			Serving int      `json:"serving"`
		}](ctx, `({
			count: document.getElementById("partition-count").textContent,
			ring: [...document.querySelectorAll("#ring [data-partition]")].map(g => g.dataset.member),
			rows: document.querySelectorAll("#partitions tbody tr[data-partition]").length,
			serving: document.querySelectorAll("#ring [data-state=serving]").length,
			banner: document.getElementById("banner").classList.contains("hidden") ? "" : document.getElementById("banner").textContent,
		})`)
		switch {
		case err != nil:
			return err
		case got.Banner != "":
			return fmt.Errorf("the page shows an error: %s", got.Banner)
		case got.Count != strconv.Itoa(partitions) || len(got.Ring) != partitions || got.Rows != partitions:
			return fmt.Errorf("partition count %q, %d on the ring, %d rows; want %d", got.Count, len(got.Ring), got.Rows, partitions)
		case got.Serving != partitions:
			return fmt.Errorf("%d of %d partitions serving on the ring", got.Serving, partitions)
		}
		for i, m := range got.Ring {
			if m != "aggregator-1" && m != "aggregator-2" {
				return fmt.Errorf("partition %d owned by %q on the ring", i, m)
			}
		}
		return nil
	})
	countOnPage := func() (string, error) {
		return evalJS[string](ctx, `document.getElementById("count-value").textContent`)
	}
	// The ingest tile's total and router-1's row in the members table.
	ingestOnPage := func() (tile, row string, err error) {
		got, err := evalJS[struct {
			Tile string `json:"tile"`
			Row  string `json:"row"`
		}](ctx, `({
			tile: document.getElementById("tile-ingest-total").dataset.total || "",
			row: (document.querySelector('#members tr[data-member-id="router-1"] td[data-ingest]') || {dataset: {}}).dataset.ingest || "",
		})`)
		return got.Tile, got.Row, err
	}
	waitIngested := func(want int) {
		t.Helper()
		testserver.Eventually(t, 60*time.Second, func() error {
			if tile, row, err := ingestOnPage(); err != nil || tile != strconv.Itoa(want) || row != strconv.Itoa(want) {
				return fmt.Errorf("ingested on the page: tile %q, router-1's row %q (%v); want %d", tile, row, err, want)
			}
			return nil
		})
	}
	// The page counts the ad before any click: 0, not an error.
	testserver.Eventually(t, 30*time.Second, func() error {
		if v, err := countOnPage(); err != nil || v != "0" {
			return fmt.Errorf("count on the page %q (%v), want 0 before any click", v, err)
		}
		return nil
	})
	waitIngested(0)

	ic := c.ingestClients()[0]
	now := time.Now()
	events := make([]*clickaggv1.ClickEvent, clicks)
	for i := range events {
		events[i] = &clickaggv1.ClickEvent{EventId: fmt.Sprintf("console-e2e-%d", i), AdId: ad, ClickTime: timestamppb.New(now),
			UserId: fmt.Sprintf("user-%d", i%9), Ip: "198.51.100.20", Country: "DE"}
	}
	// Two requests, the second after the page showed the first: its
	// numbers change as the clicks arrive.
	send := func(evs []*clickaggv1.ClickEvent) {
		t.Helper()
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := ic.Ingest(cctx, &clickaggv1.IngestRequest{Events: evs})
		if err != nil || resp.Accepted != int64(len(evs)) {
			t.Fatalf("ingest %d clicks: %v %v", len(evs), resp, err)
		}
	}
	waitCount := func(want int) {
		t.Helper()
		testserver.Eventually(t, 60*time.Second, func() error {
			if v, err := countOnPage(); err != nil || v != strconv.Itoa(want) {
				return fmt.Errorf("count on the page %q (%v), want %d", v, err, want)
			}
			return nil
		})
	}
	first := 50
	send(events[:first])
	waitIngested(first)
	waitCount(first)
	send(events[first:])
	waitIngested(clicks)
	waitCount(clicks)
	// The top list shows the same count for the ad.
	testserver.Eventually(t, 30*time.Second, func() error {
		v, err := evalJS[string](ctx, `(document.querySelector('#top tbody tr[data-ad="`+ad+`"] .c') || {}).textContent || ""`)
		if err != nil {
			return err
		}
		if v != strconv.Itoa(clicks) {
			return fmt.Errorf("top ads show %q for %s, want %d", v, ad, clicks)
		}
		return nil
	})

	path := filepath.Join(t.TempDir(), "console.png")
	if screenshot != "" {
		path = screenshot
		defer showcase(t, c)()
	}
	selectPartition(t, ctx, 3)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("console screenshot: %s (%d bytes)", path, len(png))
}

// showcase gives the console of TestConsole something to show in the
// screenshot: clicks over 40 ads (one hot) for 2.5 minutes, and a
// partition moved live to the other aggregator a minute in. The clicks go
// on until the returned stop is called, after the screenshot.
func showcase(t *testing.T, c *testCluster) (stop func()) {
	t.Helper()
	ic := c.ingestClients()[0]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(1, 2))
		countries := []string{"DE", "US", "FR", "GB", "JP", "BR"}
		for i := 0; ctx.Err() == nil; i++ {
			now := time.Now()
			evs := make([]*clickaggv1.ClickEvent, 0, 200)
			for j := range cap(evs) {
				n := int(rng.ExpFloat64() * 6)
				if j%4 == 0 {
					n = 0 // ad-0 is hot
				}
				evs = append(evs, &clickaggv1.ClickEvent{EventId: fmt.Sprintf("show-%d-%d", i, j), AdId: fmt.Sprintf("ad-%d", n%40),
					ClickTime: timestamppb.New(now), UserId: fmt.Sprintf("u-%d", rng.IntN(500)),
					Ip: fmt.Sprintf("203.0.113.%d", rng.IntN(250)), Country: countries[rng.IntN(len(countries))]})
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, _ = ic.Ingest(cctx, &clickaggv1.IngestRequest{Events: evs})
			cancel()
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(150+rng.IntN(200)) * time.Millisecond):
			}
		}
	}()
	time.Sleep(time.Minute)
	cc := c.coordinatorClient()
	a, err := cc.GetAssignment(context.Background(), &clickaggv1.GetAssignmentRequest{})
	if err == nil && len(a.Partitions) > 0 {
		p := a.Partitions[0]
		to := "aggregator-1"
		if p.Member == to {
			to = "aggregator-2"
		}
		_, err = cc.MovePartition(context.Background(), &clickaggv1.MovePartitionRequest{Partition: p.Partition, ToMember: to})
	}
	if err != nil {
		t.Logf("showcase move: %v", err)
	}
	time.Sleep(90 * time.Second)
	return func() { cancel(); <-done }
}

// selectPartition clicks partition p on the ring, as a user would to
// read its details, until the details show (the ring is drawn again at
// every poll, so a click can meet a node just replaced).
func selectPartition(t *testing.T, ctx context.Context, p int) {
	t.Helper()
	want := fmt.Sprintf("partition%downeraggregator-", p)
	testserver.Eventually(t, 20*time.Second, func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := chromedp.Do(cctx, chromedp.Click(fmt.Sprintf(`#ring [data-partition="%d"] path`, p))); err != nil {
			return fmt.Errorf("click partition %d: %w", p, err)
		}
		v, err := evalJS[string](ctx, `document.getElementById("pdetail").textContent`)
		if err == nil && !strings.Contains(v, want) {
			err = fmt.Errorf("partition details %q", v)
		}
		return err
	})
}
