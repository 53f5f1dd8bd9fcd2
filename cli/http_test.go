package cli

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	srv := cfg.HTTP.server(h, nil)
	go func() { _ = runHTTP(srv, lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return lis.Addr().String()
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
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		// The headers never end: the server must close the connection.
		// The deadline only keeps a broken server from hanging the test.
		if err := conn.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := bufio.NewReader(conn).ReadByte(); err != io.EOF {
			t.Fatalf("read from a connection with unfinished headers: %v, want EOF (closed by the server)", err)
		}
	})
}
