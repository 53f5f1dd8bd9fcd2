package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/clickagg/clickagg/tlsconf"
)

// Dial connects to the etcd of cfg, then reads the cluster's partition
// count, bounded by -etcd.dial-timeout, so that a certificate, CA or
// password etcd refuses stops the process at start with an error naming
// the flag to fix: every later call would wait on etcd for ever. An etcd
// that is down is no error, the process waits for it as it always did;
// with -etcd.username, though, etcd's client authenticates inside Dial
// and fails then.
//
// The keepalive pings let the client notice a dead connection well within
// a lease TTL, so a healthy process does not lose its lease to a half-open
// TCP connection.
//
// etcd's client takes one *tls.Config. tlsconf's gRPC credentials, which
// build a config per handshake so that a rotated certificate or CA applies
// to the next connection, replace it through DialOptions, which etcd's
// client applies after its own credentials (TestDialReloadsTLSFiles). The
// *tls.Config is given too, so that the client knows the endpoints need
// TLS.
func Dial(ctx context.Context, cfg Config, lg *slog.Logger) (*clientv3.Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cc := clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
	}
	var t *tlsconf.TLS
	if tc := cfg.tls(); tc.Enabled() {
		var err error
		if t, err = tlsconf.Load(tc, lg.With("component", "etcd-tls")); err != nil {
			return nil, err
		}
		cc.TLS = t.ClientConfig()
		cc.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(t.ClientCredentials())}
	}
	if cfg.Username != "" {
		p, err := cfg.password()
		if err != nil {
			return nil, err
		}
		cc.Username, cc.Password = cfg.Username, p
	}
	cli, err := clientv3.New(cc)
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		_, err = cli.Get(pctx, cfg.Prefix+"/config/partitions", clientv3.WithCountOnly())
		cancel()
		if err == nil {
			return cli, nil
		}
	}
	eps := strings.Join(cfg.Endpoints, ",")
	if why := explain(ctx, cfg, t, err); why != nil {
		if cli != nil {
			cli.Close()
		}
		return nil, fmt.Errorf("etcd %s: %w", eps, why)
	}
	if cli == nil {
		return nil, fmt.Errorf("dial etcd %s: %w", eps, err)
	}
	lg.Warn("etcd did not answer yet; waiting for it", "endpoints", eps, "err", err)
	return cli, nil
}

// explain names the flag to fix when err, or a TLS handshake with each
// endpoint, shows etcd refusing this client; nil when neither does (etcd
// is down or slow).
func explain(ctx context.Context, cfg Config, t *tlsconf.TLS, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return fmt.Errorf("-etcd.password-file %s: etcd refused the password of -etcd.username %s: %w", cfg.PasswordFile, cfg.Username, err)
	case errors.Is(err, rpctypes.ErrUserEmpty), errors.Is(err, rpctypes.ErrInvalidAuthToken) && cfg.Username == "":
		return fmt.Errorf("-etcd.username: etcd has authentication enabled; set -etcd.username and -etcd.password-file: %w", err)
	case errors.Is(err, rpctypes.ErrPermissionDenied) && cfg.Username == "":
		// With auth on and no token, etcd takes the user from the
		// client certificate's common name.
		return fmt.Errorf("-etcd.username: not set, and etcd denies reading %s to the user named by -etcd.cert-file's common name: %w", cfg.Prefix, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return fmt.Errorf("-etcd.username %s: etcd denies reading %s: %w", cfg.Username, cfg.Prefix, err)
	}
	if ctx.Err() != nil {
		return nil
	}
	for _, ep := range cfg.Endpoints {
		if why := handshake(ctx, cfg, t, ep); why != nil {
			return why
		}
	}
	return nil
}

// handshake makes one TLS handshake with ep, as etcd's client does, and
// names the flag to fix when it fails. etcd's client does not say why a
// connection failed, it only times out. A server refusing the client's
// certificate does so after a TLS 1.3 handshake, in an alert read next.
// For an http:// endpoint it only asks whether the server speaks TLS.
func handshake(ctx context.Context, cfg Config, t *tlsconf.TLS, ep string) error {
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" {
		return nil
	}
	var tc *tls.Config
	switch {
	case u.Scheme == "http":
		tc = &tls.Config{InsecureSkipVerify: true}
	case u.Scheme == "https" && t != nil:
		tc = t.ClientConfig()
	case u.Scheme == "https":
		tc = &tls.Config{}
	default:
		return nil
	}
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	d := net.Dialer{Timeout: cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(cfg.DialTimeout))
	c := tls.Client(conn, tc)
	err = c.HandshakeContext(ctx)
	if u.Scheme == "http" {
		if err == nil {
			return fmt.Errorf("-etcd.endpoints %s: etcd serves TLS there; use https://", ep)
		}
		return nil
	}
	if os.IsTimeout(err) || errors.Is(err, io.EOF) {
		// A plaintext etcd closes the connection on a ClientHello.
		return fmt.Errorf("-etcd.endpoints %s: TLS handshake not answered (%w); if etcd serves plaintext there, use http://", ep, err)
	}
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var op *net.OpError
	switch {
	case err == nil, os.IsTimeout(err):
		return nil
	case errors.As(err, &host):
		return fmt.Errorf("-etcd.endpoints %s: etcd's certificate is not for this host: %w", ep, err)
	case errors.As(err, &verify) && cfg.CAFile == "":
		return fmt.Errorf("-etcd.ca-file: not set, and etcd's certificate does not chain to the system's roots: %w", err)
	case errors.As(err, &verify):
		return fmt.Errorf("-etcd.ca-file %s: etcd's certificate does not chain to it: %w", cfg.CAFile, err)
	case errors.As(err, &record):
		return fmt.Errorf("-etcd.endpoints %s: etcd does not serve TLS there; use http://", ep)
	case errors.As(err, &op) && op.Op == "remote error" && strings.Contains(err.Error(), "certificate") && cfg.CertFile == "":
		return fmt.Errorf("-etcd.cert-file: not set, and etcd requires a client certificate: %w", err)
	case errors.As(err, &op) && op.Op == "remote error" && strings.Contains(err.Error(), "certificate"):
		return fmt.Errorf("-etcd.cert-file %s: etcd refused this client certificate: %w", cfg.CertFile, err)
	}
	return nil
}
