package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
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
	o, err := parseDev([]string{"-data-dir=" + t.TempDir(), "-redis.appendfsync=no"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.cfg
	deps, srv, err := startDev(context.Background(), &cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	defer deps.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("dev's server stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("dev's server not ready within 60s")
	}

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
