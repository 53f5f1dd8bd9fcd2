package cli

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

// HTTPConfig bounds what a client may take of the HTTP server (/metrics,
// /healthz, queryd's JSON API): without bounds a client that sends its
// headers slowly, or never finishes its request, or never reads the
// answer, or keeps idle connections, holds a goroutine and a connection
// for ever.
//
// No route answers at length on purpose: the JSON API has no streaming
// method (WatchPopularAds is gRPC only), and no pprof handler is served.
// Every answer can therefore be bounded by one WriteTimeout, and every
// handler by HandlerTimeout, which is shorter so that a handler stuck on
// a peer that never answers (a stopped coordinator, a hung etcd) still
// gets its 503 out before the connection is cut.
type HTTPConfig struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	HandlerTimeout    time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

// RegisterFlags registers the HTTP server's limits under -http.
func (c *HTTPConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.ReadHeaderTimeout, "http.read-header-timeout", 10*time.Second, "longest time a client may take to send a request's headers; the connection is closed past it")
	fs.DurationVar(&c.ReadTimeout, "http.read-timeout", 30*time.Second, "longest time a client may take to send a whole request, headers and body; the connection is closed past it")
	fs.DurationVar(&c.WriteTimeout, "http.write-timeout", time.Minute, "longest time from the end of a request's headers to the last byte of its answer; a client that reads the answer more slowly is disconnected")
	fs.DurationVar(&c.HandlerTimeout, "http.handler-timeout", 30*time.Second, "longest time the server works on one request (a query, the cluster status); past it the request's calls are canceled and it gets 503 Service Unavailable; below -http.write-timeout")
	fs.DurationVar(&c.IdleTimeout, "http.idle-timeout", 2*time.Minute, "how long an idle keep-alive connection stays open waiting for the next request")
	fs.IntVar(&c.MaxHeaderBytes, "http.max-header-bytes", 64<<10, "largest request line and headers in bytes (the URL included); larger requests get 431 Request Header Fields Too Large")
}

// Validate reports the first setting that cannot work.
func (c *HTTPConfig) Validate() error {
	switch {
	case c.ReadHeaderTimeout <= 0:
		return fmt.Errorf("-http.read-header-timeout %v: must be positive", c.ReadHeaderTimeout)
	case c.ReadTimeout < c.ReadHeaderTimeout:
		return fmt.Errorf("-http.read-timeout %v: must be at least -http.read-header-timeout=%v", c.ReadTimeout, c.ReadHeaderTimeout)
	case c.HandlerTimeout <= 0:
		return fmt.Errorf("-http.handler-timeout %v: must be positive", c.HandlerTimeout)
	case c.WriteTimeout <= c.HandlerTimeout:
		return fmt.Errorf("-http.write-timeout %v: must exceed -http.handler-timeout=%v, or a slow handler's 503 would be cut off", c.WriteTimeout, c.HandlerTimeout)
	case c.IdleTimeout <= 0:
		return fmt.Errorf("-http.idle-timeout %v: must be positive", c.IdleTimeout)
	case c.MaxHeaderBytes < 1<<10:
		return errors.New("-http.max-header-bytes: must be at least 1024")
	}
	return nil
}

// server returns an HTTP server of h with c's limits, serving TLS with
// tc when it is not nil (see runHTTP). Every HTTP server of the binary is
// built here (TestEveryHTTPServerIsBounded).
//
// h runs under http.TimeoutHandler: its request context ends after
// HandlerTimeout, and the client then gets 503 with a message naming the
// flag, even from a handler that does not watch its context (promhttp).
// The answer is buffered until the handler returns, which only a
// streaming route would mind, and there is none.
func (c *HTTPConfig) server(h http.Handler, tc *tls.Config) *http.Server {
	msg := fmt.Sprintf("the server did not answer within -http.handler-timeout=%v\n", c.HandlerTimeout)
	return &http.Server{
		Handler:           http.TimeoutHandler(h, c.HandlerTimeout, msg),
		TLSConfig:         tc,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
	}
}

// runHTTP serves srv on lis until srv shuts down: HTTPS when srv has a
// TLS config (the process's -tls.cert-file, from
// tlsconf.HTTPServerConfig, which reloads it at each handshake and never
// requires a client certificate), else plain HTTP. A plain HTTP request
// to the HTTPS listener gets 400 and nothing it asked for.
func runHTTP(srv *http.Server, lis net.Listener) error {
	if srv.TLSConfig != nil {
		// The certificate comes from the config, per handshake.
		return srv.ServeTLS(lis, "", "")
	}
	return srv.Serve(lis)
}

// allow serves h only to the given methods and answers any other with
// 405 Method Not Allowed and the Allow header, as RFC 9110 asks: PUT
// /metrics must not look like it did something.
func allow(h http.Handler, methods ...string) http.Handler {
	allowed := strings.Join(methods, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !slices.Contains(methods, r.Method) {
			w.Header().Set("Allow", allowed)
			http.Error(w, fmt.Sprintf("method %s not allowed; allowed: %s", r.Method, allowed), http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}
