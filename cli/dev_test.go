package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

// TestDevLogLevel: -help says what level dev logs at, and -view=off, where
// log lines are all there is to see, logs at info. Before, -help said info,
// dev used warn, and -view=off printed nothing for minutes. The level
// given on the command line or in CLICKAGG_LOG_LEVEL wins either way.
func TestDevLogLevel(t *testing.T) {
	var help bytes.Buffer
	if _, err := parseDev([]string{"-help"}, &help); err != flag.ErrHelp {
		t.Fatalf("parseDev(-help) = %v, want flag.ErrHelp", err)
	}
	want := "log level: debug, info, warn or error; default: warn beside the live view, info with -view=off"
	if !strings.Contains(help.String(), want) {
		t.Errorf("clickagg dev -help does not say %q:\n%s", want, help.String())
	}
	for _, tc := range []struct {
		name  string
		args  []string
		env   string
		level string
	}{
		{"view", nil, "", "warn"},
		{"view-on", []string{"-view=on"}, "", "warn"},
		{"view-off", []string{"-view=off"}, "", "info"},
		{"view-off-flag", []string{"-view=off", "-log.level=error"}, "", "error"},
		{"view-off-env", []string{"-view=off"}, "debug", "debug"},
		{"view-env", nil, "error", "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv(EnvName("log.level"), tc.env)
			}
			o, err := parseDev(tc.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if o.cfg.LogLevel != tc.level {
				t.Fatalf("log level %q, want %q", o.cfg.LogLevel, tc.level)
			}
			lg, err := newLogger(o.cfg.LogFormat, o.cfg.LogLevel)
			if err != nil {
				t.Fatal(err)
			}
			var lv slog.Level
			_ = lv.UnmarshalText([]byte(tc.level))
			if !lg.Enabled(context.Background(), lv) || lg.Enabled(context.Background(), lv-1) {
				t.Fatalf("logger does not log from %v up", lv)
			}
		})
	}
}

// TestDevDefaults: the default -help gives for a flag whose default dev
// changes is the value dev uses when neither the command line nor the
// environment sets it, and the environment can still set it. Before, help
// gave the server's defaults and dev ignored CLICKAGG_GRPC_ADDR and the
// like.
func TestDevDefaults(t *testing.T) {
	var help bytes.Buffer
	if _, err := parseDev([]string{"-help"}, &help); err != flag.ErrHelp {
		t.Fatal(err)
	}
	o, err := parseDev(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ flag, got string }{
		{"grpc.addr", o.cfg.GRPCAddr},
		{"http.addr", o.cfg.HTTPAddr},
		{"redis.addr", o.cfg.Redis.Addr},
	} {
		if def := defaultInHelp(t, help.String(), tc.flag); def != tc.got {
			t.Errorf("-%s: -help says default %q, dev uses %q", tc.flag, def, tc.got)
		}
	}
	t.Setenv(EnvName("grpc.addr"), "127.0.0.1:19090")
	if o, err = parseDev(nil, io.Discard); err != nil || o.cfg.GRPCAddr != "127.0.0.1:19090" {
		t.Errorf("dev with %s set: -grpc.addr %q (%v), want the environment's", EnvName("grpc.addr"), o.cfg.GRPCAddr, err)
	}
}

// defaultInHelp returns the default -help prints for flag name, empty when
// it prints none (an empty string).
func defaultInHelp(t *testing.T, help, name string) string {
	t.Helper()
	_, rest, ok := strings.Cut(help, "\n  -"+name+" ")
	if !ok {
		t.Fatalf("-help has no -%s", name)
	}
	usage, _, _ := strings.Cut(rest, "\n  -")
	_, def, ok := strings.Cut(usage, `(default "`)
	if !ok {
		return ""
	}
	def, _, _ = strings.Cut(def, `")`)
	return def
}

// TestDevListensOnLoopbackOnly starts dev's etcd, redis-server and server
// as clickagg dev does, with its defaults, and checks that every socket
// they listen on is bound to a loopback address: dev has no TLS and no
// auth, so nothing of it may be reachable from another machine.
func TestDevListensOnLoopbackOnly(t *testing.T) {
	srv, deps := startDevServer(t)
	listeners := map[string]string{"gRPC": srv.GRPCAddr(), "HTTP": srv.HTTPAddr(), "redis-server": deps.redis.Addr}
	for i, a := range deps.etcd.ListenAddrs() {
		listeners[fmt.Sprintf("etcd listener %d", i)] = a.String()
	}
	if len(listeners) != 5 {
		t.Fatalf("listeners %v, want gRPC, HTTP, redis-server and etcd's client and peer", listeners)
	}
	for name, addr := range listeners {
		host, _, err := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			t.Errorf("%s listens on %q, not on a loopback address", name, addr)
		}
	}
	for _, u := range []string{deps.etcd.Endpoint, deps.etcd.PeerURL} {
		if !strings.HasPrefix(u, "http://127.0.0.1:") {
			t.Errorf("etcd advertises %s, want a loopback URL", u)
		}
	}
}

// TestDevPlaintext: dev refuses the -tls.* flags, whose certificate its
// own load generator and view (plaintext on loopback) could not use.
func TestDevPlaintext(t *testing.T) {
	for _, args := range [][]string{{"-tls.cert-file=c.pem", "-tls.key-file=k.pem"}, {"-tls.ca-file=ca.pem"}} {
		_, err := parseDev(args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "clickagg dev runs plaintext") {
			t.Errorf("dev %v: %v, want an error saying dev runs plaintext", args, err)
		}
	}
}

// startDevServer starts dev's etcd, redis-server and server as clickagg
// dev does, with its defaults and args, and returns the running server
// once it is ready, and its etcd and redis-server.
func startDevServer(t *testing.T, args ...string) (*Server, *localDeps) {
	t.Helper()
	o, err := parseDev(append([]string{"-data-dir=" + t.TempDir(), "-redis.appendfsync=no"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.cfg
	deps, srv, err := startDev(context.Background(), &cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(deps.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("dev's server stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("dev's server not ready within 60s")
	}
	return srv, deps
}

// TestDevViewShowsClicksFromAnySource: clicks sent to dev by another
// client, not its load generator, show in the view and in the info lines
// of -view=off with their exact totals, and clicks sent again as
// duplicates. Before, the view showed only the load generator's counters,
// and -view=off showed nothing.
func TestDevViewShowsClicksFromAnySource(t *testing.T) {
	srv, _ := startDevServer(t, "-no-loadgen")
	ctx, cancel := context.WithCancel(context.Background())
	lines, logged := &testsupport.SyncBuffer{}, &testsupport.SyncBuffer{}
	views := []*devView{
		{addr: srv.GRPCAddr(), mode: viewLines, out: lines, interval: 200 * time.Millisecond},
		{addr: srv.GRPCAddr(), mode: viewLog, lg: slog.New(slog.NewJSONHandler(logged, nil)), interval: 200 * time.Millisecond},
	}
	var g errgroup.Group
	for _, v := range views {
		g.Go(func() error { return v.run(ctx) })
	}
	defer func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Errorf("view: %v", err)
		}
	}()

	// 1500 clicks over three ads, ad-a the most clicked; ids unique.
	const n = 1500
	perAd := map[string]int64{}
	now := time.Now()
	var events []*clickaggv1.ClickEvent
	for i := range n {
		ad := []string{"view-a", "view-a", "view-a", "view-b", "view-c"}[i%5]
		perAd[ad]++
		events = append(events, &clickaggv1.ClickEvent{
			EventId: fmt.Sprintf("view-%d", i), AdId: ad, ClickTime: timestamppb.New(now),
			UserId: fmt.Sprintf("u-%d", i%50), Ip: "192.0.2.1", Country: "FR",
		})
	}
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	send := func() {
		t.Helper()
		resp, err := clickaggv1.NewIngestServiceClient(conn).Ingest(ctx, &clickaggv1.IngestRequest{Events: events})
		if err != nil || resp.Accepted != n {
			t.Fatalf("ingest: %v, %v", resp, err)
		}
	}
	// ingested: every click the router accepted, duplicates too (dedup
	// is the aggregators'); applied: each distinct click once.
	check := func(ingested, applied, duplicates int64) {
		t.Helper()
		testserver.Eventually(t, time.Minute, func() error {
			blocks := strings.Split(strings.TrimSpace(lines.String()), "\n\n")
			last := blocks[len(blocks)-1]
			want := fmt.Sprintf("applied %d clicks (", applied)
			if !strings.Contains(last, want) || !strings.Contains(last, fmt.Sprintf("duplicates %d ", duplicates)) {
				return fmt.Errorf("last view block does not say %q and duplicates %d:\n%s", want, duplicates, last)
			}
			if want := fmt.Sprintf("ingested %d clicks (", ingested); !strings.Contains(last, want) {
				return fmt.Errorf("last view block does not say %q:\n%s", want, last)
			}
			if !strings.Contains(last, fmt.Sprintf("  1. view-a       %8d", perAd["view-a"])) {
				return fmt.Errorf("last view block does not rank view-a first with %d:\n%s", perAd["view-a"], last)
			}
			logLines := strings.Split(strings.TrimSpace(logged.String()), "\n")
			var rec struct {
				Msg           string
				Ingested      int64
				Applied       int64
				Duplicates    int64
				Partitions    int
				Serving       int
				TopAd         string `json:"top_ad"`
				TopAdClicks5m int64  `json:"top_ad_clicks_5m"`
			}
			if err := json.Unmarshal([]byte(logLines[len(logLines)-1]), &rec); err != nil {
				return fmt.Errorf("log line %q: %v", logLines[len(logLines)-1], err)
			}
			want2 := rec
			want2.Msg, want2.Ingested, want2.Applied, want2.Duplicates, want2.Partitions, want2.Serving = "cluster", ingested, applied, duplicates, DefaultPartitions, DefaultPartitions
			want2.TopAd, want2.TopAdClicks5m = "view-a", perAd["view-a"]
			if rec != want2 {
				return fmt.Errorf("last log line %+v, want %+v", rec, want2)
			}
			return nil
		})
	}
	send()
	check(n, n, 0)
	// The same clicks again: accepted again, counted once, dropped as
	// duplicates.
	send()
	check(2*n, n, n)
}

// TestDevViewKeepsBanner: every frame of the live view redraws the
// banner above the cluster's figures, read exactly from the status
// summary's totals, so the addresses and the console's URL stay in sight.
func TestDevViewKeepsBanner(t *testing.T) {
	wm := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	st := &clickaggv1.GetClusterStatusResponse{
		PartitionCount: 4,
		Totals: &clickaggv1.ClusterTotals{Serving: 2, Restoring: 1, Unavailable: 1, EventsApplied: 357, DuplicatesDropped: 3,
			LateEvents: 5, EventsPerSecond: 30, Lag: 42, MaxLagSeconds: 3.25,
			IngestAccepted: 365, IngestAcceptedPerSecond: 14.4, RoutersUnavailable: 1},
		MinWatermark: timestamppb.New(wm),
	}
	got := summarize(st)
	want := clusterFacts{Partitions: 4, Serving: 2, Restoring: 1, Unavailable: 1, Applied: 357, Duplicates: 3, Late: 5,
		PerSecond: 30, LagEntries: 42, LagSeconds: 3.25, MinWatermark: wm, Ingested: 365, IngestPerSecond: 14.4, RoutersUnavailable: 1}
	if got != want {
		t.Fatalf("summarize = %+v, want %+v", got, want)
	}
	top := &clickaggv1.GetPopularAdsResponse{Ads: []*clickaggv1.AdCount{{AdId: "ad-9", Count: 77}}, From: timestamppb.New(wm), To: timestamppb.New(wm)}
	const banner = "clickagg dev is running\n  console: http://127.0.0.1:8080/\n\n"
	var out bytes.Buffer
	v := &devView{mode: viewLive, banner: banner, out: &out}
	for range 3 {
		v.show(viewFrame{At: wm.Add(90 * time.Second), Facts: got, Rate: 12, Top: top})
	}
	frames := strings.Split(out.String(), "\033[H\033[2J")
	if len(frames) != 4 || frames[0] != "" {
		t.Fatalf("output has %d frames after clearing the screen, want 3:\n%q", len(frames)-1, out.String())
	}
	for _, f := range frames[1:] {
		if !strings.HasPrefix(f, banner) {
			t.Fatalf("frame does not start with the banner:\n%s", f)
		}
		for _, s := range []string{
			"ingested 365 clicks (14/s)  applied 357 clicks (12/s)  duplicates 3  late 5\n",
			"1 routers did not answer: their clicks are not in ingested\n",
			"lag 42 log entries, oldest 3.2s",
			"(90.0s behind)",
			"partitions 4: 2 serving, 1 restoring, 1 unavailable\n",
			"   1. ad-9               77\n",
		} {
			if !strings.Contains(f, s) {
				t.Errorf("frame does not say %q:\n%s", s, f)
			}
		}
	}
}

// TestDevViewLogsFailures: with -view=off, a cluster status that cannot
// be had is a warning naming why, not an info line of zeros.
func TestDevViewLogsFailures(t *testing.T) {
	logged := &testsupport.SyncBuffer{}
	v := &devView{addr: testserver.DeadAddr(t), mode: viewLog, lg: slog.New(slog.NewJSONHandler(logged, nil)), interval: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.run(ctx) }()
	testserver.Eventually(t, 30*time.Second, func() error {
		if !strings.Contains(logged.String(), `"level":"WARN","msg":"cluster status","err":"rpc error: code = Unavailable`) {
			return fmt.Errorf("no warning yet: %s", logged.String())
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logged.String(), `"msg":"cluster",`) {
		t.Fatalf("logged figures without a status:\n%s", logged.String())
	}
}
