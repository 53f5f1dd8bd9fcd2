package cli

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// TestClusterAPIOnEveryProcess: the coordinator's read RPCs answer as
// JSON under /v1/cluster/ on the coordinator's HTTP port (in process)
// and on a queryd's, which has no coordinator and forwards to it, with
// the members etcd lists.
func TestClusterAPIOnEveryProcess(t *testing.T) {
	rs := testserver.Redis(t)
	etcd := testserver.Etcd(t)
	common := []string{"-http.addr=127.0.0.1:0", "-etcd.endpoints=" + etcd.Endpoint, "-cluster.partitions=4"}
	coord := startServer(t, append(common, "-target=coordinator", "-id=coordinator-1")...)
	qd := startServer(t, append(common, "-target=queryd", "-id=queryd-1", "-redis.addr="+rs.Addr, "-redis.password-file="+rs.PasswordFile)...)

	client := &http.Client{Timeout: 10 * time.Second}
	members := func(addr string) ([]string, error) {
		resp, err := client.Get("http://" + addr + "/v1/cluster/members")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %s", resp.Status, body)
		}
		var lm struct{ Members []struct{ ID, Role string } }
		if err := json.Unmarshal(body, &lm); err != nil {
			return nil, err
		}
		var got []string
		for _, m := range lm.Members {
			got = append(got, m.Role+"/"+m.ID)
		}
		slices.Sort(got)
		return got, nil
	}
	want := []string{"coordinator/coordinator-1", "queryd/queryd-1"}
	for name, srv := range map[string]*Server{"coordinator": coord, "queryd": qd} {
		testserver.Eventually(t, 30*time.Second, func() error {
			got, err := members(srv.HTTPAddr())
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s: members %v, want %v", name, got, want)
			}
			return nil
		})
	}
}

// TestConsoleAndClusterAPIAuth: with authorization on, the console's page
// and assets are public, and /v1/cluster/ wants the query permission, as
// the coordinator's gRPC reads do: 401 without an identity, 403 with a
// token that may only ingest, the members with one that may query.
func TestConsoleAndClusterAPIAuth(t *testing.T) {
	etcd := testserver.Etcd(t)
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "cli-console-ca")
	caFile := ca.WriteCA(t, dir)
	cert, key := ca.Issue(t, tlstest.Options{CommonName: "coordinator-1"}).WriteFiles(t, dir)
	tokens := map[string]string{"billing": "billing-token-1", "shipper": "shipper-token-1"}
	policy, tokensFile := filepath.Join(dir, "policy"), filepath.Join(dir, "tokens")
	tlstest.WriteFile(t, policy, []byte("token:billing query\ntoken:shipper ingest\ncert:coordinator-* internal,query,admin\n"))
	var lines strings.Builder
	for name, tok := range tokens {
		fmt.Fprintf(&lines, "%s sha256:%x\n", name, sha256.Sum256([]byte(tok)))
	}
	tlstest.WriteFile(t, tokensFile, []byte(lines.String()))
	srv := startServer(t, "-target=coordinator", "-id=coordinator-1", "-http.addr=127.0.0.1:0", "-etcd.endpoints="+etcd.Endpoint,
		"-cluster.partitions=4", "-tls.cert-file="+cert, "-tls.key-file="+key, "-tls.ca-file="+caFile,
		"-tls.client-auth=verify-if-given", "-auth.policy-file="+policy, "-auth.tokens-file="+tokensFile)

	// A browser without a client certificate.
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(path, token string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "https://"+srv.HTTPAddr()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}
	for _, tc := range []struct {
		path, token string
		code        int
		contains    string
	}{
		{"/", "", http.StatusOK, `<script src="/console/console.js"`},
		{"/console/console.js", "", http.StatusOK, "/v1/cluster/status"},
		{"/v1/cluster/members", "", http.StatusUnauthorized, ""},
		{"/v1/cluster/members", tokens["shipper"], http.StatusForbidden, "query"},
		{"/v1/cluster/members", tokens["billing"], http.StatusOK, `"id":"coordinator-1"`},
	} {
		resp, body := get(tc.path, tc.token)
		if resp.StatusCode != tc.code || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s (token %q): %d %.300s; want %d containing %q", tc.path, tc.token, resp.StatusCode, body, tc.code, tc.contains)
		}
		if tc.code == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("GET %s: 401 without WWW-Authenticate", tc.path)
		}
	}
}
