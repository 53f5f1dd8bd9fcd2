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
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/loadgen"
)

const devSynopsis = `clickagg dev runs the whole cluster on this machine: an embedded etcd, a
redis-server child process (unless -redis.addr is given) keeping its data with
AOF under -data-dir, every role in this process, and synthetic clicks, with a
live view of what the cluster counts from any source (rate, lag, watermark,
top ads) under its addresses. Stop it with Ctrl-C; run it again on the same
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
	// viewInterval is -view.interval; 0 picks by view.
	viewInterval time.Duration
	noLoad       bool
	etcdPort     int
	etcdLog      string
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
	fs.StringVar(&o.view, "view", "auto", "live view of what the cluster applied (clicks from any source), lag, watermark and top ads: auto (redrawn when stdout is a terminal, else a block per refresh), on (always redrawn), off (an info log line per refresh instead, at -log.level info unless given)")
	fs.DurationVar(&o.viewInterval, "view.interval", 0, "how often the view refreshes, or with -view=off how often the cluster's line is logged; 0: every 2s, with -view=off every 10s")
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
	switch {
	case o.view != "auto" && o.view != "on" && o.view != "off":
		return nil, fmt.Errorf("-view %q: want auto, on or off", o.view)
	case o.viewInterval < 0:
		return nil, fmt.Errorf("-view.interval %v: must not be negative", o.viewInterval)
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
	banner := devBanner(o.dataDir, cfg.Redis.String(), srv, deps)
	fmt.Fprint(out, banner)
	var st *loadgen.Stats
	if !o.noLoad {
		st = &loadgen.Stats{}
		lg.Target = srv.GRPCAddr()
		g.Go(func() error { return loadgen.Run(gctx, lg, st) })
	}
	v := &devView{addr: srv.GRPCAddr(), banner: banner, out: out, lg: srv.lg, loadgen: st, interval: o.viewInterval}
	switch {
	case o.view == "off":
		v.mode = viewLog
	case o.view == "on" || isTerminal(out):
		v.mode = viewLive
	default:
		v.mode = viewLines
	}
	if v.interval == 0 {
		v.interval = defaultViewInterval
		if v.mode == viewLog {
			v.interval = defaultLogInterval
		}
	}
	g.Go(func() error { return v.run(gctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// devBanner is what dev prints first, and above every frame of the live
// view: where everything is, and how to reach it.
func devBanner(dataDir, redis string, srv *Server, deps *localDeps) string {
	var b strings.Builder
	fmt.Fprintf(&b, "clickagg dev is running (data in %s)\n", dataDir)
	if a := srv.HTTPAddr(); a != "" {
		fmt.Fprintf(&b, "  console:                                   http://%s/\n", a)
		fmt.Fprintf(&b, "  HTTP (JSON API /v1/, /metrics):            http://%s\n", a)
	}
	fmt.Fprintf(&b, "  gRPC (every service, reflection, health): %s\n", srv.GRPCAddr())
	fmt.Fprintf(&b, "  etcd: %s   redis: %s\n", deps.etcd.Endpoint, redis)
	fmt.Fprintf(&b, "  try:  grpcurl -plaintext %s list\n", srv.GRPCAddr())
	if r := deps.redis; r != nil {
		// The spawned server requires its password; REDISCLI_AUTH keeps it
		// off redis-cli's command line and out of its warning.
		_, port, _ := net.SplitHostPort(r.Addr)
		fmt.Fprintf(&b, "        REDISCLI_AUTH=$(cat %s) redis-cli -p %s\n", r.PasswordFile, port)
	}
	b.WriteString("\n")
	return b.String()
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
