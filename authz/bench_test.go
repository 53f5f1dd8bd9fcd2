package authz_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/clickagg/clickagg/authz"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// BenchmarkCheck is what authorization adds to one call: identifying the
// caller (a bearer token's SHA-256 looked up, or a certificate whose
// chain its connection had verified already) and checking the policy,
// measured through the HTTP wrapper without a network.
func BenchmarkCheck(b *testing.B) {
	e := start(b)
	member := e.ca.Issue(b, tlstest.Options{CommonName: "clickagg-member"})
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, c := range []struct {
		name string
		perm authz.Permission
		req  func() *http.Request
	}{
		{"token", authz.Query, func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/v1/ads/popular_ads", nil)
			r.Header.Set("Authorization", "Bearer billing-secret")
			return r
		}},
		{"certificate", authz.Internal, func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/v1/ads/popular_ads", nil)
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{member.Cert}}
			return r
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			h := e.a.HTTP(c.perm, ok)
			r := c.req()
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatalf("%s: %d %s", c.name, w.Code, w.Body)
			}
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
	}
}
