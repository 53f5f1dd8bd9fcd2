package cli

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// TestEtcdFlags: every role, recalc and reconcile take the -etcd.* TLS
// and auth flags and check them at start, naming the flag; a good set
// validates.
func TestEtcdFlags(t *testing.T) {
	dir := t.TempDir()
	caFile, cert, key := memberFiles(t, dir)
	pw := filepath.Join(dir, "pw")
	tlstest.WriteFile(t, pw, []byte("secret\n"))
	missing := filepath.Join(dir, "missing")
	https := "-etcd.endpoints=https://127.0.0.1:2379"
	for _, tc := range []struct {
		args []string
		want string // "" for no error
	}{
		{[]string{https, "-etcd.cert-file=" + cert, "-etcd.key-file=" + key, "-etcd.ca-file=" + caFile, "-etcd.username=clickagg", "-etcd.password-file=" + pw}, ""},
		{[]string{https, "-etcd.cert-file=" + cert}, "-etcd.cert-file: set without -etcd.key-file"},
		{[]string{https, "-etcd.ca-file=" + missing}, "-etcd.ca-file: stat"},
		{[]string{"-etcd.ca-file=" + caFile}, "-etcd.ca-file is set, so every endpoint must be https://"},
		{[]string{"-etcd.username=clickagg"}, "-etcd.username clickagg: needs -etcd.password-file"},
		{[]string{"-etcd.username=clickagg", "-etcd.password-file=" + missing}, "-etcd.password-file: open"},
	} {
		validateInEveryRole(t, tc.args, tc.want)
		if tc.want == "" {
			continue
		}
		// recalc and reconcile check them before they open the archive.
		common := append([]string{"-from=2026-12-01", "-to=2026-12-02", "-archive.bucket=" + filepath.Join(dir, "archive")}, tc.args...)
		if err := recalc(context.Background(), common, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("recalc %v: %v, want an error containing %q", tc.args, err, tc.want)
		}
		if err := runReconcile(context.Background(), common, io.Discard, time.Now()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("reconcile %v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// TestServerOverEtcdTLS: a coordinator given the -etcd.* flags reaches an
// etcd that requires client certificates and becomes ready; given a
// certificate of another CA it stops at start naming -etcd.cert-file, and
// so does recalc, instead of waiting on etcd for ever.
func TestServerOverEtcdTLS(t *testing.T) {
	ca, other := tlstest.NewCA(t, "etcd-ca"), tlstest.NewCA(t, "other-ca")
	e, caFile := testserver.EtcdTLS(t, ca)
	cert, key := ca.Issue(t, tlstest.Options{CommonName: "coordinator"}).WriteFiles(t, t.TempDir())
	badCert, badKey := other.Issue(t, tlstest.Options{CommonName: "coordinator"}).WriteFiles(t, t.TempDir())
	etcdFlags := func(cert, key string) []string {
		return []string{"-etcd.endpoints=" + e.Endpoint, "-etcd.ca-file=" + caFile, "-etcd.cert-file=" + cert, "-etcd.key-file=" + key, "-etcd.dial-timeout=2s"}
	}

	fs, cfg := newFlags()
	if err := parse(fs, append([]string{"-target=coordinator", "-grpc.addr=127.0.0.1:0", "-http.addr="}, etcdFlags(cert, key)...)); err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(*cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("coordinator stopped: %v", err)
	case <-ctx.Done():
		t.Fatal("coordinator not ready within a minute")
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}

	want := "-etcd.cert-file " + badCert + ": etcd refused this client certificate"
	fs, cfg = newFlags()
	if err := parse(fs, append([]string{"-target=coordinator", "-grpc.addr=127.0.0.1:0", "-http.addr="}, etcdFlags(badCert, badKey)...)); err != nil {
		t.Fatal(err)
	}
	srv, err = NewServer(*cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Run(ctx); err == nil || !strings.Contains(err.Error(), want) || ctx.Err() != nil {
		t.Fatalf("Run with a certificate of another CA: %v, want an error containing %q before a minute passes", err, want)
	}
	args := append([]string{"-from=2026-12-01", "-to=2026-12-02", "-archive.bucket=" + t.TempDir()}, etcdFlags(badCert, badKey)...)
	if err := recalc(context.Background(), args, io.Discard); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("recalc with a certificate of another CA: %v, want an error containing %q", err, want)
	}
}

// TestDevRefusesEtcdSecurityFlags: dev's embedded etcd serves plaintext
// on loopback; -etcd.cert-file and the like would be ignored, so they are
// refused.
func TestDevRefusesEtcdSecurityFlags(t *testing.T) {
	o, err := parseDev([]string{"-data-dir=" + t.TempDir(), "-etcd.username=clickagg"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.cfg
	if _, _, err := startDev(context.Background(), &cfg, o); err == nil || !strings.HasPrefix(err.Error(), "-etcd.username: the embedded etcd serves plaintext on loopback") {
		t.Fatalf("startDev with -etcd.username: %v, want an error naming it", err)
	}
}
