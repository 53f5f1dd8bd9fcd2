package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/tlsconf"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// startServer runs a Server with args and -grpc.addr on a free loopback
// port until the test ends, and returns it once it is Ready.
func startServer(t *testing.T, args ...string) *Server {
	t.Helper()
	fs, cfg := newFlags()
	if err := parse(fs, append([]string{"-grpc.addr=127.0.0.1:0"}, args...)); err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(*cfg, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("Run ended before ready: %v", err)
	}
	return srv
}

// TestHTTPSListener runs every role in one process with
// -tls.client-auth=require: the HTTP listener serves HTTPS with the
// process's certificate to clients that have no certificate of their
// own (probes, scrapes): /metrics, /readyz and queryd's /v1/ answer,
// /v1/ with the exact count of clicks ingested over mutual TLS, and a
// plain HTTP request gets nothing it asked for.
func TestHTTPSListener(t *testing.T) {
	rs := testserver.Redis(t)
	etcd := testserver.Etcd(t)
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "cli-https-ca")
	caFile := ca.WriteCA(t, dir)
	cert, key := ca.Issue(t, tlstest.Options{CommonName: "member"}).WriteFiles(t, dir)
	srv := startServer(t, "-target=all", "-http.addr=127.0.0.1:0", "-id=https-1",
		"-etcd.endpoints="+etcd.Endpoint, "-redis.addr="+rs.Addr, "-redis.password-file="+rs.PasswordFile,
		"-cluster.partitions=4", "-aggregator.snapshot-interval=1s",
		"-tls.cert-file="+cert, "-tls.key-file="+key, "-tls.ca-file="+caFile, "-tls.client-auth=require")
	base := "https://" + srv.HTTPAddr()

	// A probe's or a scrape's client: it trusts the CA, has no certificate.
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(path string) (int, string, error) {
		resp, err := client.Get(base + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	testserver.Eventually(t, time.Minute, func() error {
		code, body, err := get("/readyz")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("GET /readyz: %d %s", code, body)
		}
		return err
	})
	code, body, err := get("/metrics")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "clickagg_") {
		t.Fatalf("GET /metrics over HTTPS: %d, %v, body of %d bytes; want 200 with clickagg_ metrics", code, err, len(body))
	}

	// Plain HTTP to the HTTPS port: Go's TLS server answers 400 and
	// serves nothing.
	plain := &http.Client{Timeout: 10 * time.Second}
	resp, err := plain.Get("http://" + srv.HTTPAddr() + "/metrics")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(body), "clickagg_") {
			t.Fatalf("plain GET /metrics: %s %q, want 400 without metrics", resp.Status, body)
		}
	}
	t.Logf("plain HTTP to the HTTPS port: %v %v", resp.Status, err)

	// Clicks over mutual TLS to the router, then their count over HTTPS.
	member, err := tlsconf.Load(tlsconf.Config{CertFile: cert, KeyFile: key, CAFile: caFile}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(member.ClientCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	const ad, clicks = "ad-https", 7
	start := time.Now().Truncate(time.Minute).Add(-3 * time.Minute)
	var events []*clickaggv1.ClickEvent
	for i := range clicks {
		events = append(events, &clickaggv1.ClickEvent{
			EventId: fmt.Sprintf("https-%d", i), AdId: ad, ClickTime: timestamppb.New(start.Add(time.Duration(i) * time.Second)),
			UserId: "user-1", Ip: "10.0.0.1", Country: "US",
		})
	}
	ictx, icancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer icancel()
	ir, err := clickaggv1.NewIngestServiceClient(cc).Ingest(ictx, &clickaggv1.IngestRequest{Events: events})
	if err != nil || ir.Accepted != clicks {
		t.Fatalf("ingest over mutual TLS: %v, %v; want %d accepted", ir, err, clicks)
	}
	q := url.Values{"from": {start.UTC().Format(time.RFC3339)}, "to": {start.Add(10 * time.Minute).UTC().Format(time.RFC3339)}}
	testserver.Eventually(t, time.Minute, func() error {
		code, body, err := get("/v1/ads/" + ad + "/aggregated_count?" + q.Encode())
		if err != nil {
			return err
		}
		var c struct {
			Count string `json:"count"`
		}
		if code != http.StatusOK || json.Unmarshal([]byte(body), &c) != nil || c.Count != fmt.Sprint(clicks) {
			return fmt.Errorf("GET /v1/ count of %s: %d %s, want count %d", ad, code, body, clicks)
		}
		return nil
	})
}
