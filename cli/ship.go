package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/clickagg/clickagg/grpcserver"
	"github.com/clickagg/clickagg/shipper"
)

const shipSynopsis = `clickagg ship tails click log files (JSON lines or CSV), sends their clicks to
the routers and checkpoints its position after each acknowledged batch. Killed
at any point and restarted, it sends again exactly what was not acknowledged,
with the same event_ids, so nothing is counted twice. It follows rename and
copytruncate rotation.

Usage:
  clickagg ship -ship.files=/var/log/ads/clicks.log -ship.routers=router-1:9090,router-2:9090 [flags]`

// shipFlags are the ship command's own flags around shipper.Config.
type shipFlags struct {
	id, grpcAddr, httpAddr string
	logFormat, logLevel    string
	progress               string
	// client secures the calls to the routers: TLS and a bearer token.
	client clientFlags
	// grpc and http bound the health and metrics servers as the server
	// process's are bounded, under the same flags.
	grpc           grpcserver.Config
	maxRecvMsgSize int
	http           HTTPConfig
}

func registerShipFlags(fs *flag.FlagSet, cfg *shipper.Config, sf *shipFlags) {
	cfg.RegisterFlags(fs)
	sf.client.register(fs)
	sf.grpc.RegisterFlags(fs)
	// The health service's requests are a few bytes.
	fs.IntVar(&sf.maxRecvMsgSize, "grpc.max-recv-msg-size", 64<<10, "largest gRPC request in bytes to the health service; larger ones fail with RESOURCE_EXHAUSTED")
	sf.http.RegisterFlags(fs)
	host, _ := os.Hostname()
	fs.StringVar(&sf.id, "id", host, "host part of every derived event_id (<id>:<dev>:<inode>:<head>:<gen>:<offset>); unique per shipper and stable across its restarts")
	fs.StringVar(&sf.grpcAddr, "grpc.addr", "", "address of a gRPC health service (SERVING once shipping); empty: none")
	fs.StringVar(&sf.httpAddr, "http.addr", "", "address of an HTTP server with /metrics and /healthz; empty: none")
	fs.StringVar(&sf.logFormat, "log.format", "text", "log format: text or json")
	fs.StringVar(&sf.logLevel, "log.level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&sf.progress, "ship.progress", "auto", "progress line (lines/s, lag in bytes, malformed, rejected) on stdout: auto (when stdout is a terminal), on, off; otherwise progress is logged every 10s")
}

func runShip(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("clickagg ship", flag.ContinueOnError)
	setUsage(fs, shipSynopsis)
	var cfg shipper.Config
	var sf shipFlags
	registerShipFlags(fs, &cfg, &sf)
	if err := parse(fs, args); err != nil {
		return err
	}
	if sf.logFormat != "text" && sf.logFormat != "json" {
		return fmt.Errorf("-log.format %q: want text or json", sf.logFormat)
	}
	if sf.progress != "auto" && sf.progress != "on" && sf.progress != "off" {
		return fmt.Errorf("-ship.progress %q: want auto, on or off", sf.progress)
	}
	if err := sf.grpc.Validate(); err != nil {
		return err
	}
	if sf.maxRecvMsgSize < 1<<10 {
		return fmt.Errorf("-grpc.max-recv-msg-size %d: must be at least 1024", sf.maxRecvMsgSize)
	}
	if err := sf.http.Validate(); err != nil {
		return err
	}
	cfg.Host = sf.id
	lg, err := newLogger(sf.logFormat, sf.logLevel)
	if err != nil {
		return err
	}
	if cfg.Dial, err = sf.client.dialOptions(lg); err != nil {
		return err
	}
	s, err := shipper.New(cfg, lg)
	if err != nil {
		return err
	}
	reg := shipMetrics(s)
	g, gctx := errgroup.WithContext(ctx)
	if sf.grpcAddr != "" {
		l, err := net.Listen("tcp", sf.grpcAddr)
		if err != nil {
			return fmt.Errorf("-grpc.addr: %w", err)
		}
		gm := grpcMetrics(reg)
		gs := grpc.NewServer(append([]grpc.ServerOption{grpc.MaxRecvMsgSize(sf.maxRecvMsgSize),
			grpc.ChainUnaryInterceptor(gm.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(gm.StreamServerInterceptor())},
			grpcserver.Options(sf.grpc)...)...)
		hs := health.NewServer()
		hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		healthpb.RegisterHealthServer(gs, hs)
		gm.InitializeMetrics(gs)
		g.Go(func() error { return gs.Serve(l) })
		g.Go(func() error {
			select {
			case <-s.Ready():
				hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			case <-gctx.Done():
			}
			<-gctx.Done()
			gs.Stop()
			return nil
		})
	}
	if sf.httpAddr != "" {
		l, err := net.Listen("tcp", sf.httpAddr)
		if err != nil {
			return fmt.Errorf("-http.addr: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", allow(metricsHandler(reg), http.MethodGet, http.MethodHead))
		mux.Handle("/healthz", allow(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }), http.MethodGet, http.MethodHead))
		hsrv := sf.http.server(mux, nil)
		g.Go(func() error {
			if err := runHTTP(hsrv, l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			return hsrv.Close()
		})
	}
	live := sf.progress == "on" || (sf.progress == "auto" && isTerminal(os.Stdout))
	g.Go(func() error { showProgress(gctx, s, lg, os.Stdout, live); return nil })
	g.Go(func() error {
		err := s.Run(gctx)
		if err == nil {
			// Run returns nil only when ctx ended; stop the servers too.
			return context.Canceled
		}
		return err
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// shipMetrics exposes the shipper's counters.
func shipMetrics(s *shipper.Shipper) *prometheus.Registry {
	reg := newRegistry()
	st := s.Stats()
	counter := func(name, help string, v func() int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "clickagg_ship_" + name, Help: help}, func() float64 { return float64(v()) }))
	}
	counter("lines_total", "Lines consumed (acknowledged and checkpointed).", st.Lines.Load)
	counter("accepted_total", "Events the routers accepted.", st.Accepted.Load)
	counter("malformed_total", "Lines that could not be parsed.", st.Malformed.Load)
	counter("rejected_total", "Events the routers rejected.", st.Rejected.Load)
	counter("retries_total", "Failed requests retried.", st.Retries.Load)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "clickagg_ship_lag_bytes", Help: "Bytes written to the logs and not yet acknowledged."}, func() float64 { return float64(s.Lag()) }))
	return reg
}

// showProgress prints lines/s and lag every second on a terminal, and
// logs them every 10 seconds otherwise.
func showProgress(ctx context.Context, s *shipper.Shipper, lg *slog.Logger, out io.Writer, live bool) {
	every := 10 * time.Second
	if live {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	st := s.Stats()
	last, lastT := st.Lines.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			if live {
				fmt.Fprintln(out)
			}
			return
		case <-t.C:
		}
		now, n := time.Now(), st.Lines.Load()
		rate := float64(n-last) / now.Sub(lastT).Seconds()
		last, lastT = n, now
		if live {
			fmt.Fprintf(out, "\r\033[K%s  %.0f lines/s  lag %d bytes  lines %d  accepted %d  malformed %d  rejected %d  retries %d",
				now.Format("15:04:05"), rate, s.Lag(), n, st.Accepted.Load(), st.Malformed.Load(), st.Rejected.Load(), st.Retries.Load())
			continue
		}
		lg.Info("progress", "lines_per_second", int64(rate), "lag_bytes", s.Lag(), "lines", n, "accepted", st.Accepted.Load(),
			"malformed", st.Malformed.Load(), "rejected", st.Rejected.Load(), "retries", st.Retries.Load())
	}
}
