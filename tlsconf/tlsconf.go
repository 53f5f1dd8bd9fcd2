package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// TLS holds the loaded certificate and CA, reloaded as the files change,
// and makes the configs and credentials that use them.
type TLS struct {
	cfg        Config
	clientAuth tls.ClientAuthType
	log        *slog.Logger
	// verifyLater: servers ask for client certificates but leave their
	// verification to VerifyClient (DeferClientVerification).
	verifyLater bool
	// verified remembers the client certificates VerifyClient accepted
	// (see there).
	vmu      sync.Mutex
	verified map[*x509.Certificate]verdict

	mu      sync.Mutex // serializes reloads
	files   *fileSet
	cur     *material
	lastErr string // the last reload error logged, to log each once
}

// Load validates c and loads its files; errors name the flag. c must be
// Enabled.
func Load(c Config, log *slog.Logger) (*TLS, error) {
	if !c.Enabled() {
		return nil, fmt.Errorf("tls: neither %s nor %s is set", c.flag("cert-file"), c.flag("ca-file"))
	}
	if err := c.validateFlags(); err != nil {
		return nil, err
	}
	auth, _ := c.clientAuth()
	t := &TLS{cfg: c, clientAuth: auth, log: log, files: newFileSet(&c)}
	m, err := t.files.load()
	if err != nil {
		return nil, err
	}
	t.cur = m
	return t, nil
}

// Reload checks the files now, as every handshake does, and returns why
// a changed set could not be loaded (the last good set stays in use).
func (t *TLS) Reload() error {
	_, err := t.refresh()
	return err
}

// current is the set a handshake uses: the files' set if it loads, else
// the last good one (the error is logged).
func (t *TLS) current() *material {
	m, _ := t.refresh()
	return m
}

func (t *TLS) refresh() (*material, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	next, differ, err := t.files.changed()
	if err == nil && differ {
		var m *material
		if m, err = parse(next); err == nil {
			t.cur = m
			t.logLoaded(m)
		}
	}
	if err != nil {
		if msg := err.Error(); msg != t.lastErr {
			t.lastErr = msg
			t.log.Error("tls files not reloaded; keeping the last good certificate", "err", err)
		}
		return t.cur, err
	}
	t.files.commit(next)
	t.lastErr = ""
	return t.cur, nil
}

func (t *TLS) logLoaded(m *material) {
	args := []any{"ca_file", t.cfg.CAFile}
	if m.cert != nil && m.cert.Leaf != nil {
		l := m.cert.Leaf
		args = append(args, "cert_file", t.cfg.CertFile, "serial", l.SerialNumber.String(), "not_after", l.NotAfter)
	}
	t.log.Info("tls files reloaded", args...)
}

// Certificate returns the certificate in use now, for tests and metrics
// (its expiry); nil without -tls.cert-file.
func (t *TLS) Certificate() *x509.Certificate {
	m := t.current()
	if m.cert == nil {
		return nil
	}
	return m.cert.Leaf
}

// ServerConfig returns the config of a TLS listener. Each handshake gets
// a config built from the files as they are then (GetConfigForClient),
// so a new certificate or CA applies to new connections while existing
// ones go on. It needs -tls.cert-file.
func (t *TLS) ServerConfig() *tls.Config {
	return t.listenerConfig(func(*material) tls.ClientAuthType { return t.serverClientAuth() })
}

// HTTPServerConfig is ServerConfig for the HTTP listener (/metrics,
// /healthz, /readyz, queryd's /v1/): the same certificate, reloaded the
// same way, but it never requires a client certificate, whatever
// -tls.client-auth says, because the kubelet's probes and Prometheus's
// scrapes come without one and must still get in. It asks for one, and
// verifies a certificate given against -tls.ca-file (a foreign or expired
// one fails the handshake), so that what is served under /v1/ can trust
// the verified chain of a client that has one; after
// DeferClientVerification the authorizer verifies it instead, and
// answers 401 with why. Without -tls.ca-file it does not ask: there would
// be nothing to verify against.
func (t *TLS) HTTPServerConfig() *tls.Config {
	return t.listenerConfig(func(m *material) tls.ClientAuthType {
		switch {
		case m.pool == nil:
			return tls.NoClientCert
		case t.verifyLater:
			return tls.RequestClientCert
		}
		return tls.VerifyClientCertIfGiven
	})
}

// listenerConfig returns a listener config whose handshakes use the files
// as they are then, asking client certificates as auth says of them.
func (t *TLS) listenerConfig(auth func(*material) tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := t.current()
			return serverConfig(m, auth(m))
		},
	}
}

func serverConfig(m *material, auth tls.ClientAuthType) (*tls.Config, error) {
	if m.cert == nil {
		return nil, errors.New("tls: a server needs -tls.cert-file")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*m.cert},
		ClientAuth:   auth,
		ClientCAs:    m.pool,
		// The returned config replaces the listener's whole config,
		// ALPN included: gRPC adds h2, net/http would not.
		NextProtos: []string{"h2", "http/1.1"},
	}, nil
}

// DeferClientVerification makes servers ask for client certificates in
// the handshake without verifying them there: VerifyClient does, when a
// call is authorized. A certificate that expired or chains to another CA
// then gets an answer that says so (UNAUTHENTICATED with the reason),
// where a failed handshake ends in a TLS alert that clients report as a
// closed connection, and that the server cannot count per caller.
// -tls.client-auth=require still makes a certificate mandatory in the
// handshake. Call it before serving.
func (t *TLS) DeferClientVerification() { t.verifyLater = true }

func (t *TLS) serverClientAuth() tls.ClientAuthType {
	if !t.verifyLater {
		return t.clientAuth
	}
	switch t.clientAuth {
	case tls.RequireAndVerifyClientCert:
		return tls.RequireAnyClientCert
	case tls.VerifyClientCertIfGiven:
		return tls.RequestClientCert
	}
	return t.clientAuth
}

// ErrNoClientCert is VerifyClient's error for a client that presented no
// certificate.
var ErrNoClientCert = errors.New("no client certificate")

// VerifyClient checks the certificate chain a client presented against
// -tls.ca-file as it is now, for client authentication, and returns the
// client's certificate. A chain the handshake verified already is
// trusted as it is.
func (t *TLS) VerifyClient(state *tls.ConnectionState) (*x509.Certificate, error) {
	if state == nil || len(state.PeerCertificates) == 0 {
		return nil, ErrNoClientCert
	}
	leaf := state.PeerCertificates[0]
	if len(state.VerifiedChains) > 0 {
		return leaf, nil
	}
	// The set loaded now, not checked against the files: that is done
	// at every handshake, and a stat per call would cost more than the
	// rest of the call's authorization.
	t.mu.Lock()
	m := t.cur
	t.mu.Unlock()
	if m.pool == nil {
		return nil, errors.New("client certificates are not accepted: no -tls.ca-file to verify them against")
	}
	now := time.Now()
	t.vmu.Lock()
	v, ok := t.verified[leaf]
	t.vmu.Unlock()
	if ok && v.m == m && now.Before(v.until) {
		return leaf, nil
	}
	inter := x509.NewCertPool()
	for _, c := range state.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: m.pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, err
	}
	until := leaf.NotAfter
	for _, c := range chains[0] {
		if c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	t.vmu.Lock()
	if len(t.verified) >= maxVerified || t.verified == nil {
		t.verified = make(map[*x509.Certificate]verdict)
	}
	t.verified[leaf] = verdict{m: m, until: until}
	t.vmu.Unlock()
	return leaf, nil
}

// verdict is a client certificate VerifyClient accepted: under which CA
// set, and until when its chain is valid.
type verdict struct {
	m     *material
	until time.Time
}

// maxVerified bounds the remembered verdicts. A connection's calls share
// its certificate (the same *x509.Certificate, parsed once at its
// handshake), so the chain of a long-lived connection is verified once,
// not per call (an ECDSA chain costs about 100µs); a verdict holds while
// the CA set is the same and the chain unexpired. Past the bound the
// verdicts are dropped together, and each connection verifies once more.
const maxVerified = 4096

// ClientConfig returns a client config built from the files as they are
// now: the CA that verifies the server, -tls.server-name, and the
// certificate presented when the server asks (reloaded at each
// handshake). Call it per connection, not once: a config keeps the CA it
// was made with. gRPC clients use ClientCredentials, which does so.
func (t *TLS) ClientConfig() *tls.Config {
	return t.clientConfig(t.current())
}

func (t *TLS) clientConfig(m *material) *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    m.pool,
		ServerName: t.cfg.ServerName,
	}
	if m.cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return t.current().cert, nil
		}
	}
	return c
}

// ServerCredentials returns gRPC server credentials over ServerConfig.
func (t *TLS) ServerCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(t.ServerConfig())
}

// ClientCredentials returns gRPC client credentials that build a new
// ClientConfig for each handshake, so a reconnect sees a rotated CA.
func (t *TLS) ClientCredentials() credentials.TransportCredentials {
	return &clientCreds{t: t, TransportCredentials: credentials.NewTLS(t.ClientConfig())}
}

// clientCreds is credentials.NewTLS whose config is made per handshake.
// The embedded credentials answer Info and ServerHandshake.
type clientCreds struct {
	credentials.TransportCredentials
	t *TLS
}

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(c.t.ClientConfig()).ClientHandshake(ctx, authority, conn)
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	return &clientCreds{t: c.t, TransportCredentials: c.TransportCredentials.Clone()}
}

// OverrideServerName is deprecated in gRPC and unused; -tls.server-name
// is the override.
func (c *clientCreds) OverrideServerName(string) error {
	return fmt.Errorf("tls: set -tls.server-name instead")
}
