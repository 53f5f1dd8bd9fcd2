package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clickagg/clickagg/shipper"
)

// TestHTTPMethods: a method a path does not serve gets 405 with an Allow
// header, not 200 (PUT /metrics, POST /healthz) nor the gateway's 501.
func TestHTTPMethods(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux := http.NewServeMux()
	mux.Handle("/metrics", allow(metricsHandler(prometheus.NewRegistry()), http.MethodGet, http.MethodHead))
	mux.Handle("/v1/", allow(ok, http.MethodGet))
	for _, tc := range []struct {
		method, path string
		code         int
		allow        string
	}{
		{http.MethodGet, "/metrics", http.StatusOK, ""},
		{http.MethodHead, "/metrics", http.StatusOK, ""},
		{http.MethodPut, "/metrics", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodGet, "/v1/ads/a/aggregated_count", http.StatusOK, ""},
		{http.MethodPost, "/v1/ads/a/aggregated_count", http.StatusMethodNotAllowed, "GET"},
		{http.MethodDelete, "/v1/ads/popular_ads", http.StatusMethodNotAllowed, "GET"},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			rr := httptest.NewRecorder()
			mux.ServeHTTP(rr, httptest.NewRequest(tc.method, tc.path, nil))
			if rr.Code != tc.code || rr.Header().Get("Allow") != tc.allow {
				t.Errorf("%s %s: %d, Allow %q; want %d, Allow %q", tc.method, tc.path, rr.Code, rr.Header().Get("Allow"), tc.code, tc.allow)
			}
		})
	}
}

// serveHTTP serves h with the limits of the -http flags in args on
// 127.0.0.1 and returns the address.
func serveHTTP(t *testing.T, h http.Handler, args ...string) string {
	t.Helper()
	addr, _ := serveHTTPClosed(t, h, args...)
	return addr
}

// serveHTTPClosed is serveHTTP, also returning a channel that gets a
// value each time the server closes a connection.
func serveHTTPClosed(t *testing.T, h http.Handler, args ...string) (string, <-chan struct{}) {
	t.Helper()
	fs, cfg := newFlags()
	if err := parse(fs, args); err != nil {
		t.Fatal(err)
	}
	if err := cfg.HTTP.Validate(); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{}, 100)
	srv := cfg.HTTP.server(h, nil)
	srv.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			select {
			case closed <- struct{}{}:
			default:
			}
		}
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = runHTTP(srv, lis) }()
	t.Cleanup(func() { _ = srv.Close(); <-served })
	return lis.Addr().String(), closed
}

// sendRaw connects to addr and writes req as it is, for a client that
// breaks the rules Go's own client keeps; the connection closes at the
// test's end.
func sendRaw(t *testing.T, addr, req string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readUntilClosed reads conn until the server closes it and returns what
// it read. The deadline only keeps a server that never closes from
// hanging the test; reaching it fails the test.
func readUntilClosed(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server did not close the connection within 30s; read %d bytes: %.200q", len(b), b)
	}
	return b
}

// TestHTTPLimits: with the default limits, headers of 200 KB get 431; a
// client that does not finish its headers within
// -http.read-header-timeout is disconnected.
func TestHTTPLimits(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })

	t.Run("header_too_large", func(t *testing.T) {
		addr := serveHTTP(t, ok)
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Big", strings.Repeat("x", 200<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("200 KB of headers: %s, want 431", resp.Status)
		}
	})

	t.Run("slow_header", func(t *testing.T) {
		addr := serveHTTP(t, ok, "-http.read-header-timeout=200ms", "-http.read-timeout=200ms")
		conn := sendRaw(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
		// The headers never end: the server must close the connection.
		if b := readUntilClosed(t, conn); len(b) != 0 {
			t.Fatalf("the server answered unfinished headers with %q", b)
		}
	})

	// A body that stops coming is cut at -http.read-timeout: the
	// handler's read fails, its request context is canceled, and the
	// connection is closed after a 503 (TimeoutHandler's answer to the
	// canceled context, racing the handler's own answer to its failed
	// read).
	t.Run("slow_body", func(t *testing.T) {
		echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, "read body: "+err.Error(), http.StatusRequestTimeout)
				return
			}
			fmt.Fprintf(w, "read %d bytes\n", len(b))
		})
		addr := serveHTTP(t, echo, "-http.read-header-timeout=200ms", "-http.read-timeout=500ms")
		conn := sendRaw(t, addr, "POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
		got := string(readUntilClosed(t, conn))
		if !strings.HasPrefix(got, "HTTP/1.1 503 ") && !strings.HasPrefix(got, "HTTP/1.1 408 ") || !strings.Contains(got, "Connection: close") {
			t.Fatalf("10 of 100 body bytes, then nothing: the server answered %q, want 503 (or the handler's 408) and the connection closed", got)
		}
	})

	// A client that stops reading the answer is disconnected at
	// -http.write-timeout, the answer unfinished.
	t.Run("slow_reader", func(t *testing.T) {
		const size = 64 << 20 // more than loopback's socket buffers hold
		answer := bytes.Repeat([]byte("x"), size)
		// One write, so that the handler is done long before its
		// timeout even on a loaded machine under -race: what is tested
		// is the write to the client.
		big := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(answer) })
		addr, closed := serveHTTPClosed(t, big, "-http.handler-timeout=10s", "-http.write-timeout=12s")
		conn := sendRaw(t, addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		// Read nothing until the server gives up on the connection.
		select {
		case <-closed:
		case <-time.After(60 * time.Second):
			t.Fatal("the server still writes to a client that stopped reading, 60s on")
		}
		got := readUntilClosed(t, conn)
		if bytes.HasPrefix(got, []byte("HTTP/1.1 503 ")) {
			t.Fatalf("the handler did not finish within -http.handler-timeout: %.200q", got)
		}
		if len(got) >= size {
			t.Fatalf("read %d bytes after the server closed the connection, the whole answer of %d", len(got), size)
		}
		t.Logf("the server closed the connection of a client that stopped reading; %d of %d bytes reached it", len(got), size)
	})

	// A handler that waits on a peer that never answers is stopped at
	// -http.handler-timeout: its context ends and the client gets 503
	// naming the flag.
	t.Run("handler_timeout", func(t *testing.T) {
		ended := make(chan error, 1)
		stuck := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
			ended <- r.Context().Err()
		})
		addr := serveHTTP(t, stuck, "-http.handler-timeout=300ms", "-http.write-timeout=10s")
		client := &http.Client{Timeout: 30 * time.Second}
		resp, err := client.Get("http://" + addr + "/v1/cluster/status")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "-http.handler-timeout=300ms") {
			t.Fatalf("a handler stuck past -http.handler-timeout: %s %q, want 503 naming the flag", resp.Status, body)
		}
		if err := <-ended; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the stuck handler's context ended with %v, want its deadline", err)
		}
	})
}

// TestEveryHTTPServerIsBounded: every HTTP server of the binary is built
// by HTTPConfig.server, whose defaults (the server's and clickagg ship's)
// bound every phase of a connection; no other http.Server, nor the
// package-level http.ListenAndServe or http.Serve (no limits at all), is
// in the module's code.
func TestEveryHTTPServerIsBounded(t *testing.T) {
	flags, cfg := newFlags()
	if err := parse(flags, nil); err != nil {
		t.Fatal(err)
	}
	shipFS := flag.NewFlagSet("clickagg ship", flag.ContinueOnError)
	var sf shipFlags
	registerShipFlags(shipFS, &shipper.Config{}, &sf)
	if err := parse(shipFS, nil); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]HTTPConfig{"clickagg": cfg.HTTP, "clickagg ship": sf.http} {
		if err := c.Validate(); err != nil {
			t.Errorf("%s: defaults do not validate: %v", name, err)
		}
		srv := c.server(http.NotFoundHandler(), nil)
		if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
			t.Errorf("%s: HTTP server with an unbounded phase: read header %v, read %v, write %v, idle %v, max header bytes %d",
				name, srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
		}
	}

	unbounded := regexp.MustCompile(`http\.Server\{|http\.(ListenAndServe|ListenAndServeTLS|Serve|ServeTLS)\(`)
	root := filepath.Join("..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if unbounded.MatchString(line) && path != filepath.Join(root, "cli", "http.go") {
				t.Errorf("%s:%d: an HTTP server not built by HTTPConfig.server: %s", path, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConnectionTableDoc keeps docs/bad-inputs-connections.md honest:
// every row names tests (package.TestName, package.TestName/subtest) that
// exist in that package's test files.
func TestConnectionTableDoc(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "bad-inputs-connections.md"))
	if err != nil {
		t.Fatal(err)
	}
	testRef := regexp.MustCompile("^`([a-z]+)\\.(Test[A-Za-z0-9_]+)(?:/([a-z0-9_]+))?`$")
	rows := 0
	for line := range strings.SplitSeq(string(doc), "\n") {
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "| Input") || strings.HasPrefix(line, "|---") {
			continue
		}
		cols := strings.Split(strings.Trim(line, "|"), " | ")
		tests := strings.TrimSpace(cols[len(cols)-1])
		rows++
		for ref := range strings.SplitSeq(tests, ", ") {
			m := testRef.FindStringSubmatch(strings.TrimSpace(ref))
			if m == nil {
				t.Errorf("row %.60q: test column %q: want `package.TestName` or `package.TestName/subtest`", line, tests)
				continue
			}
			files, _ := filepath.Glob(filepath.Join("..", m[1], "*_test.go"))
			var src strings.Builder
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				src.Write(b)
			}
			if !strings.Contains(src.String(), "func "+m[2]+"(t *testing.T)") {
				t.Errorf("row %.60q names %s.%s, which package %s's tests do not declare", line, m[1], m[2], m[1])
			}
			if m[3] != "" && !strings.Contains(src.String(), `t.Run("`+m[3]+`"`) {
				t.Errorf("row %.60q names subtest %s of %s.%s, which is not there", line, m[3], m[1], m[2])
			}
		}
	}
	if rows < 11 {
		t.Errorf("%d rows in the table, want at least 11", rows)
	}
}
