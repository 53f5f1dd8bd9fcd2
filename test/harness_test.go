package test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/tlsconf"
)

// binary is the clickagg binary built once by TestMain.
var binary string

// e2eVersion is the version TestMain stamps into binary (package
// buildinfo), so that tests can expect it exactly.
const e2eVersion = "v0.0.0-e2e"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "clickagg-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "clickagg")
	cmd := exec.Command("go", "build", "-ldflags=-X github.com/clickagg/clickagg/buildinfo.version="+e2eVersion, "-o", binary, "../cmd/clickagg")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build clickagg:", err)
		os.Exit(1)
	}
	code := testserver.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one clickagg process of the cluster under test.
type proc struct {
	t    testing.TB
	name string
	args []string
	addr string // gRPC address
	log  string
	// service is the health service whose SERVING start waits for: ""
	// (ready) or "liveness".
	service string
	// creds are how the harness reaches the process: with its own
	// -tls.* files when it has them, as another member would.
	creds credentials.TransportCredentials

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startProc starts clickagg with args plus a free loopback gRPC port, and
// waits until its health service answers SERVING: it is ready.
func startProc(t testing.TB, dir, name string, args ...string) *proc {
	t.Helper()
	return startProcFor(t, dir, name, "", args...)
}

// startLive is startProc waiting only for liveness, for a process that is
// not expected to become ready.
func startLive(t testing.TB, dir, name string, args ...string) *proc {
	t.Helper()
	return startProcFor(t, dir, name, "liveness", args...)
}

func startProcFor(t testing.TB, dir, name, service string, args ...string) *proc {
	t.Helper()
	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{
		t:       t,
		name:    name,
		service: service,
		addr:    fmt.Sprintf("127.0.0.1:%d", port),
		log:     filepath.Join(dir, name+".log"),
		creds:   memberCreds(t, args),
	}
	base := []string{"-grpc.addr=" + p.addr, "-http.addr=", "-id=" + name}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		// A subcommand (dev, loadgen) comes first.
		p.args = append(append([]string{args[0]}, base...), args[1:]...)
	} else {
		p.args = append(base, args...)
	}
	p.start()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			p.dumpLog(40)
		}
	})
	return p
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "=== start %s %s\n", p.name, strings.Join(p.args, " "))
	cmd := exec.Command(binary, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	p.waitHealthy(60 * time.Second)
}

// health returns the status of the process's gRPC health service.
func (p *proc) health(service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(p.creds))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return 0, err
	}
	return resp.Status, nil
}

func (p *proc) waitHealthy(timeout time.Duration) {
	p.t.Helper()
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(p.creds))
	if err != nil {
		p.t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: p.service})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
		select {
		case <-p.done:
			p.dumpLog(40)
			p.t.Fatalf("%s exited before it was healthy", p.name)
		default:
		}
		if time.Now().After(deadline) {
			p.dumpLog(40)
			p.t.Fatalf("%s not healthy after %v: %v", p.name, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the process with SIGKILL, as a crash would.
func (p *proc) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Stop stops the process with SIGTERM (graceful shutdown) and waits.
func (p *proc) Stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		p.t.Errorf("%s did not stop within 60s of SIGTERM", p.name)
		p.Kill()
	}
}

// Restart starts the process again with the same arguments and address.
func (p *proc) Restart() { p.start() }

func (p *proc) dumpLog(lines int) {
	f, err := os.Open(p.log)
	if err != nil {
		return
	}
	defer f.Close()
	var all []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		all = append(all, sc.Text())
	}
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	p.t.Logf("--- last %d lines of %s:\n%s", len(all), p.log, strings.Join(all, "\n"))
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	return dialWith(t, addr, insecure.NewCredentials())
}

// dialWith is dial with creds, for a cluster over TLS.
func dialWith(t testing.TB, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// memberCreds returns the client credentials of a process started with
// args: its own certificate and CA when it has -tls.* flags, plaintext
// otherwise.
func memberCreds(t testing.TB, args []string) credentials.TransportCredentials {
	t.Helper()
	if len(args) > 0 && args[0] == "ship" {
		// ship's -tls.* flags are for its calls to the routers; its
		// health server is plaintext, for the kubelet's probes.
		return insecure.NewCredentials()
	}
	var c tlsconf.Config
	for _, a := range args {
		name, v, _ := strings.Cut(a, "=")
		switch name {
		case "-tls.cert-file":
			c.CertFile = v
		case "-tls.key-file":
			c.KeyFile = v
		case "-tls.ca-file":
			c.CAFile = v
		}
	}
	return tlsCreds(t, c)
}

// tlsCreds returns the client credentials of c, plaintext when c is not
// Enabled.
func tlsCreds(t testing.TB, c tlsconf.Config) credentials.TransportCredentials {
	t.Helper()
	if !c.Enabled() {
		return insecure.NewCredentials()
	}
	tc, err := tlsconf.Load(c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return tc.ClientCredentials()
}
