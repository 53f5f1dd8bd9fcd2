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
// headers slowly, or never finishes its request, or keeps idle
// connections, holds a goroutine and a connection for ever.
type HTTPConfig struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

// RegisterFlags registers the HTTP server's limits under -http.
func (c *HTTPConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.ReadHeaderTimeout, "http.read-header-timeout", 10*time.Second, "longest time a client may take to send a request's headers; the connection is closed past it")
	fs.DurationVar(&c.ReadTimeout, "http.read-timeout", 30*time.Second, "longest time a client may take to send a whole request, headers and body; the connection is closed past it")
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
	case c.IdleTimeout <= 0:
		return fmt.Errorf("-http.idle-timeout %v: must be positive", c.IdleTimeout)
	case c.MaxHeaderBytes < 1<<10:
		return errors.New("-http.max-header-bytes: must be at least 1024")
	}
	return nil
}

// server returns an HTTP server of h with c's limits, serving TLS with
// tc when it is not nil (see runHTTP).
func (c *HTTPConfig) server(h http.Handler, tc *tls.Config) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tc,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
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
