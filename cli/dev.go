package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/clickagg/clickagg/loadgen"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

const devSynopsis = `clickagg dev runs the whole cluster on this machine: an embedded etcd, a
redis-server child process (unless -redis.addr is given) keeping its data with
AOF under -data-dir, every role in this process, and synthetic clicks with a
live view of the top ads. Stop it with Ctrl-C; run it again on the same
-data-dir and the counts are still there.

Usage:
  clickagg dev [flags]`

// devOptions is what clickagg dev's flags and environment say.
type devOptions struct {
	cfg         ServerConfig
	lg          loadgen.Config
	dataDir     string
	appendFsync string
	view        string
	noLoad      bool
	etcdPort    int
	etcdLog     string
}

// parseDev parses clickagg dev's flags, then the environment.
func parseDev(args []string, output io.Writer) (*devOptions, error) {
	fs := flag.NewFlagSet("clickagg dev", flag.ContinueOnError)
	fs.SetOutput(output)
	setUsage(fs, devSynopsis)
	var o devOptions
	o.cfg.RegisterFlags(fs)
	o.lg.RegisterFlags(fs)
	fs.StringVar(&o.dataDir, "data-dir", "data", "directory for etcd's and redis-server's data")
	fs.StringVar(&o.appendFsync, "redis.appendfsync", "always", "AOF fsync policy of the redis-server child: always (nothing acknowledged is lost), everysec or no")
	fs.StringVar(&o.view, "view", "auto", "live view of top ads and rates: auto (when stdout is a terminal), on, off (log lines only, at -log.level info unless given)")
	fs.BoolVar(&o.noLoad, "no-loadgen", false, "do not send synthetic clicks")
	fs.IntVar(&o.etcdPort, "etcd.client-port", 0, "embedded etcd client port; 0 picks a free one")
	fs.StringVar(&o.etcdLog, "etcd.log-level", "fatal", "embedded etcd's log level (debug, info, warn, error, fatal)")
	// Dev defaults: loopback, the usual ports when free, text logs.
	setDefault(fs, "grpc.addr", "127.0.0.1:9090")
	setDefault(fs, "http.addr", "127.0.0.1:8080")
	setDefault(fs, "redis.addr", "")
	// The raw archive under the data dir; -archive.bucket= turns it off.
	setDefault(fs, "archive.bucket", devArchive)
	fs.Lookup("archive.bucket").Usage += " In dev, " + devArchive + " means <data-dir>/archive."
	// Beside the live view, info lines would scroll the view away; with
	// -view=off they are all there is to see.
	setDefault(fs, "log.level", "")
	fs.Lookup("log.level").Usage = "log level: debug, info, warn or error; default: warn beside the live view, info with -view=off"
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	// dev's load generator and view dial its gRPC port without TLS, and
	// it prints an http:// address: with a certificate none would work.
	if o.cfg.TLS.Enabled() {
		return nil, errors.New("-tls.cert-file, -tls.ca-file: clickagg dev runs plaintext on loopback; for TLS run clickagg -target=all with the -tls.* flags")
	}
	if o.cfg.ArchiveBucket == devArchive {
		o.cfg.ArchiveBucket = filepath.Join(o.dataDir, "archive")
	}
	if o.cfg.LogLevel == "" {
		o.cfg.LogLevel = "warn"
		if o.view == "off" {
			o.cfg.LogLevel = "info"
		}
	}
	return &o, nil
}

// devArchive is dev's default -archive.bucket: the archive directory
// under -data-dir, which is only known once the flags are parsed.
const devArchive = "auto"

// setDefault changes the default of flag name, in -help too. Unlike
// fs.Set it leaves the flag unset, so the environment can still set it.
// TestCommandDefaults checks that every value given here parses.
func setDefault(fs *flag.FlagSet, name, value string) {
	f := fs.Lookup(name)
	_ = f.Value.Set(value)
	f.DefValue = value
}

func runDev(ctx context.Context, args []string) error {
	o, err := parseDev(args, os.Stderr)
	if err != nil {
		return err
	}
	cfg, lg := o.cfg, o.lg
	deps, srv, err := startDev(ctx, &cfg, o)
	if err != nil {
		return err
	}
	defer deps.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	select {
	case <-srv.Ready():
	case <-gctx.Done():
		return g.Wait()
	}
	out := os.Stdout
	fmt.Fprintf(out, "clickagg dev is running (data in %s)\n", o.dataDir)
	fmt.Fprintf(out, "  gRPC (every service, reflection, health): %s\n", srv.GRPCAddr())
	if srv.HTTPAddr() != "" {
		fmt.Fprintf(out, "  HTTP (JSON API, /metrics):                 http://%s\n", srv.HTTPAddr())
	}
	fmt.Fprintf(out, "  etcd: %s   redis: %s\n", deps.etcd.Endpoint, cfg.Redis.String())
	fmt.Fprintf(out, "  try:  grpcurl -plaintext %s list\n", srv.GRPCAddr())
	if r := deps.redis; r != nil {
		// The spawned server requires its password; REDISCLI_AUTH keeps it
		// off redis-cli's command line and out of its warning.
		_, port, _ := net.SplitHostPort(r.Addr)
		fmt.Fprintf(out, "        REDISCLI_AUTH=$(cat %s) redis-cli -p %s\n", r.PasswordFile, port)
	}
	fmt.Fprintln(out)

	var st loadgen.Stats
	if !o.noLoad {
		lg.Target = srv.GRPCAddr()
		g.Go(func() error { return loadgen.Run(gctx, lg, &st) })
	}
	live := o.view == "on" || (o.view == "auto" && isTerminal(out))
	if o.view != "off" {
		g.Go(func() error { return runView(gctx, srv.GRPCAddr(), &st, out, live) })
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// startDev starts dev's etcd and redis-server, pointing cfg at them, and
// makes the server of every role on the addresses of cfg (its ports
// moved when taken); running it is the caller's. Everything listens on
// loopback (TestDevListensOnLoopbackOnly) unless -grpc.addr or -http.addr
// say otherwise.
func startDev(ctx context.Context, cfg *ServerConfig, o *devOptions) (*localDeps, *Server, error) {
	cfg.GRPCAddr = freeIfBusy(cfg.GRPCAddr)
	if cfg.HTTPAddr != "" {
		cfg.HTTPAddr = freeIfBusy(cfg.HTTPAddr)
	}
	deps, err := startLocalDeps(ctx, cfg, localDepsConfig{Dir: o.dataDir, EtcdPort: o.etcdPort, EtcdLog: o.etcdLog, AppendFsync: o.appendFsync})
	if err != nil {
		return nil, nil, err
	}
	logger, err := newLogger(cfg.LogFormat, cfg.LogLevel)
	if err == nil {
		var srv *Server
		if srv, err = NewServer(*cfg, logger); err == nil {
			return deps, srv, nil
		}
	}
	deps.Close()
	return nil, nil, err
}

// freeIfBusy returns addr when its port can be bound, else the same host
// with a free port, so that dev starts next to whatever already runs.
func freeIfBusy(addr string) string {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		l.Close()
		return addr
	}
	host, _, _ := net.SplitHostPort(addr)
	l, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return addr
	}
	defer l.Close()
	return l.Addr().String()
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// runView prints, every two seconds, the ingest rate, the top ads of the
// last five minutes and the count of the top ad, asked of queryd like any
// client would.
func runView(ctx context.Context, addr string, st *loadgen.Stats, out io.Writer, live bool) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	q := clickaggv1.NewQueryServiceClient(conn)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	last, lastT := st.Accepted.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := time.Now()
		acc := st.Accepted.Load()
		rate := float64(acc-last) / now.Sub(lastT).Seconds()
		last, lastT = acc, now
		var b strings.Builder
		if live {
			b.WriteString("\033[H\033[2J")
		}
		fmt.Fprintf(&b, "%s  ingest %.0f clicks/s  accepted %d  rejected %d\n", now.Format("15:04:05"), rate, acc, st.Rejected.Load())
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		top, err := q.GetPopularAds(cctx, &clickaggv1.GetPopularAdsRequest{Count: 10, WindowMinutes: 5})
		if err != nil {
			fmt.Fprintf(&b, "top ads: %v\n", err)
		} else {
			fmt.Fprintf(&b, "top 10 ads, %s – %s (complete=%v)\n", top.From.AsTime().Local().Format("15:04"), top.To.AsTime().Local().Format("15:04"), top.Complete)
			for i, a := range top.Ads {
				fmt.Fprintf(&b, "  %2d. %-12s %8d\n", i+1, a.AdId, a.Count)
			}
			if len(top.Ads) > 0 {
				ad := top.Ads[0].AdId
				c, err := q.GetAggregatedCount(cctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, LastMinutes: 5})
				if err == nil {
					fmt.Fprintf(&b, "count of %s over the last 5 minutes: %s\n", ad, strconv.FormatInt(c.Count, 10))
				}
			}
		}
		cancel()
		fmt.Fprint(out, b.String())
		if !live {
			fmt.Fprintln(out)
		}
	}
}

func runLoadgen(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("clickagg loadgen", flag.ContinueOnError)
	setUsage(fs, "clickagg loadgen sends synthetic clicks (Zipf-distributed ads) to a router.\n\nUsage:\n  clickagg loadgen [flags]")
	var lg loadgen.Config
	lg.RegisterFlags(fs)
	var cf clientFlags
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	opts, err := cf.dialOptions(slog.Default())
	if err != nil {
		return err
	}
	lg.Dial = opts
	var st loadgen.Stats
	done := make(chan error, 1)
	go func() { done <- loadgen.Run(ctx, lg, &st) }()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			fmt.Printf("sent %d accepted %d rejected %d\n", st.Sent.Load(), st.Accepted.Load(), st.Rejected.Load())
			return err
		case <-t.C:
			fmt.Printf("sent %d accepted %d rejected %d\n", st.Sent.Load(), st.Accepted.Load(), st.Rejected.Load())
		}
	}
}
