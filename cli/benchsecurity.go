//go:build !nobench

package cli

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/clickagg/clickagg/authz"
	"github.com/clickagg/clickagg/bench"
	"github.com/clickagg/clickagg/tlsconf"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// Names in the certificates and the policy of -bench.security.
const (
	benchMemberName = "clickagg-member"
	benchClientName = "clickagg-bench"
	benchTokenName  = "bench"
)

// securityComparison is clickagg bench -bench.security: the same load on
// a plaintext cluster, one with mutual TLS, and one with TLS and
// authorization, with certificates, a token and a policy written under
// dir for this run. The certificates come from package tlstest: they are
// throwaway, made for one measurement and never for serving.
func securityComparison(dir string) (comparison, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return comparison{}, err
	}
	ca, err := tlstest.GenerateCA("clickagg-bench-ca")
	if err != nil {
		return comparison{}, err
	}
	caFile := filepath.Join(dir, "ca.pem")
	files := map[string][]byte{"ca.pem": ca.CertPEM}
	for _, name := range []string{benchMemberName, benchClientName} {
		l, err := ca.Sign(tlstest.Options{CommonName: name})
		if err != nil {
			return comparison{}, err
		}
		files[name+".pem"], files[name+"-key.pem"] = l.CertPEM, l.KeyPEM
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return comparison{}, err
	}
	token := hex.EncodeToString(key)
	files["token"] = []byte(token)
	files["tokens"] = fmt.Appendf(nil, "%s sha256:%x\n", benchTokenName, sha256.Sum256([]byte(token)))
	files["policy"] = fmt.Appendf(nil, "cert:%s internal\ntoken:%s ingest,query\n", benchMemberName, benchTokenName)
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return comparison{}, err
		}
	}
	member := tlsconf.Config{CertFile: filepath.Join(dir, benchMemberName+".pem"), KeyFile: filepath.Join(dir, benchMemberName+"-key.pem"), CAFile: caFile}
	mtls, authTLS := member, member
	mtls.ClientAuth, authTLS.ClientAuth = tlsconf.ClientAuthRequire, tlsconf.ClientAuthVerifyIfGiven
	return comparison{report: bench.Security, queries: true, setups: []benchSetup{
		{name: "plaintext", about: "gRPC without TLS or authorization, as without -tls.* and -auth.* flags."},
		{name: "TLS", about: fmt.Sprintf("every role's gRPC with a certificate (ECDSA P-256, of a CA made for the run), -tls.client-auth=require: the members call each other over mutual TLS; the bench's connections verify the server against the CA and present a client certificate (cert:%s).", benchClientName),
			tls:    mtls,
			client: clientFlags{tls: tlsconf.Config{CertFile: filepath.Join(dir, benchClientName+".pem"), KeyFile: filepath.Join(dir, benchClientName+"-key.pem"), CAFile: caFile}}},
		{name: "TLS + authorization", about: fmt.Sprintf("as TLS, but -tls.client-auth=verify-if-given and -auth.policy-file granting cert:%s internal and token:%s ingest,query (-auth.tokens-file): the members call each other with their certificates; the bench's connections verify the server against the CA and send the bearer token with every call (-auth.token-file), without a client certificate. Every call is authorized.", benchMemberName, benchTokenName),
			tls:    authTLS,
			auth:   authz.Config{PolicyFile: filepath.Join(dir, "policy"), TokensFile: filepath.Join(dir, "tokens")},
			client: clientFlags{tls: tlsconf.Config{CAFile: caFile}, tokenFile: filepath.Join(dir, "token")}},
	}}, nil
}
