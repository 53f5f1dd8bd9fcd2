// Package tlstest issues real certificates for tests: a CA, server
// certificates for loopback, client certificates with a name, expired
// ones, and writes them as the PEM files the -tls.* flags read.
//
// GenerateCA and Sign return errors; NewCA and Issue, for tests, fail the
// test instead. clickagg bench -bench.security uses the former for
// throwaway certificates that live as long as one measurement: they are
// never for serving (a fresh key per run, an hour's validity, no
// revocation). The helpers take the TB below rather than testing.TB so
// that the clickagg binary, which links the bench, does not link package
// testing.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// serials makes every certificate of a test binary distinct, so a test
// can tell which one a handshake presented.
var serials atomic.Int64

// TB is the part of testing.TB the helpers use.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// CA is a certificate authority that issues leaf certificates.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

// Leaf is an issued certificate and its key, in PEM.
type Leaf struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// Options describe a leaf certificate. The zero value is a certificate
// for 127.0.0.1 and localhost, valid for an hour either side of now,
// usable by servers and clients (cluster members are both).
type Options struct {
	CommonName string
	DNSNames   []string // default: localhost
	IPs        []net.IP // default: 127.0.0.1
	URIs       []string
	NotBefore  time.Time // default: now - 1h
	NotAfter   time.Time // default: now + 1h
}

// NewCA makes a self-signed CA named name, or fails the test.
func NewCA(t TB, name string) *CA {
	t.Helper()
	ca, err := GenerateCA(name)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return ca
}

// GenerateCA makes a self-signed CA named name, valid for a day.
func GenerateCA(name string) (*CA, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serials.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA %s: %w", name, err)
	}
	return &CA{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), key: key}, nil
}

// Issue signs a leaf certificate, or fails the test.
func (ca *CA) Issue(t TB, o Options) *Leaf {
	t.Helper()
	l, err := ca.Sign(o)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return l
}

// Sign signs a leaf certificate.
func (ca *CA) Sign(o Options) (*Leaf, error) {
	if o.DNSNames == nil {
		o.DNSNames = []string{"localhost"}
	}
	if o.IPs == nil {
		o.IPs = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serials.Add(1)),
		Subject:      pkix.Name{CommonName: o.CommonName},
		DNSNames:     o.DNSNames,
		IPAddresses:  o.IPs,
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, s := range o.URIs {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("uri %q: %w", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", o.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", o.CommonName, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return &Leaf{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", kder)}, nil
}

// WriteFiles writes the leaf as cert.pem and key.pem in dir and returns
// their paths.
func (l *Leaf) WriteFiles(t TB, dir string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	WriteFile(t, certFile, l.CertPEM)
	WriteFile(t, keyFile, l.KeyPEM)
	return certFile, keyFile
}

// WriteCA writes the CA's certificate as ca.pem in dir and returns its path.
func (ca *CA) WriteCA(t TB, dir string) string {
	t.Helper()
	f := filepath.Join(dir, "ca.pem")
	WriteFile(t, f, ca.CertPEM)
	return f
}

// WriteFile writes data to path.
func WriteFile(t TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// ReplaceFile replaces path with data atomically, by a rename, as a
// careful rotation (and a Kubernetes Secret's symlink swap) does.
func ReplaceFile(t TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	WriteFile(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("rename %s: %v", tmp, err)
	}
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
