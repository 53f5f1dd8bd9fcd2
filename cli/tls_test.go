package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// TestTLSFlags: every role validates the -tls.* flags and their files at
// start, naming the flag; a good set validates.
func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	caFile, cert, key := memberFiles(t, dir)
	missing := filepath.Join(dir, "missing.pem")
	policy := filepath.Join(dir, "policy")
	tlstest.WriteFile(t, policy, []byte("cert:member internal\n"))
	badPolicy := filepath.Join(dir, "bad-policy")
	tlstest.WriteFile(t, badPolicy, []byte("cert:member everything\n"))
	for _, tc := range []struct {
		args []string
		want string // "" for no error
	}{
		{[]string{"-tls.cert-file=" + cert, "-tls.key-file=" + key, "-tls.ca-file=" + caFile, "-tls.client-auth=require"}, ""},
		{[]string{"-tls.ca-file=" + caFile}, ""},
		{[]string{"-tls.cert-file=" + cert}, "-tls.cert-file"},
		{[]string{"-tls.ca-file=" + caFile, "-tls.client-auth=require"}, "-tls.client-auth"},
		{[]string{"-tls.ca-file=" + missing}, "-tls.ca-file"},
		{[]string{"-tls.client-auth=sometimes"}, "-tls.client-auth"},
		{[]string{"-tls.cert-file=" + cert, "-tls.key-file=" + key, "-tls.ca-file=" + caFile, "-tls.client-auth=verify-if-given", "-auth.policy-file=" + policy}, ""},
		{[]string{"-auth.policy-file=" + policy}, "-auth.policy-file: needs -tls.cert-file"},
		{[]string{"-tls.cert-file=" + cert, "-tls.key-file=" + key, "-auth.policy-file=" + badPolicy}, `unknown permission "everything"`},
		{[]string{"-auth.tokens-file=" + policy}, "-auth.tokens-file: set without -auth.policy-file"},
	} {
		validateInEveryRole(t, tc.args, tc.want)
	}
	// The clients refuse a CA file that does not load before they send.
	if err := runLoadgen(context.Background(), []string{"-tls.ca-file=" + missing, "-loadgen.duration=1s"}); err == nil || !strings.Contains(err.Error(), "-tls.ca-file") {
		t.Errorf("loadgen with a missing CA: %v, want an error naming -tls.ca-file", err)
	}
	if err := runLoadgen(context.Background(), []string{"-auth.token-file=" + policy, "-loadgen.duration=1s"}); err == nil || !strings.Contains(err.Error(), "-auth.token-file: needs TLS") {
		t.Errorf("loadgen with a token over plaintext: %v, want an error naming -auth.token-file", err)
	}
	if err := runShip(context.Background(), []string{"-tls.ca-file=" + missing, "-ship.files=" + filepath.Join(dir, "clicks.log"), "-ship.routers=127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "-tls.ca-file") {
		t.Errorf("ship with a missing CA: %v, want an error naming -tls.ca-file", err)
	}
}

// memberFiles writes, in dir, a test CA and a certificate it issued for
// the name member, and returns their files.
func memberFiles(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	ca := tlstest.NewCA(t, "cli-test-ca")
	certFile, keyFile = ca.Issue(t, tlstest.Options{CommonName: "member"}).WriteFiles(t, dir)
	return ca.WriteCA(t, dir), certFile, keyFile
}

// validateInEveryRole checks that every role's Validate accepts args
// (want empty) or refuses them with an error containing want.
func validateInEveryRole(t *testing.T, args []string, want string) {
	t.Helper()
	for _, target := range allRoles {
		fs, cfg := newFlags()
		if err := parse(fs, append([]string{"-target=" + target}, args...)); err != nil {
			t.Fatal(err)
		}
		err := cfg.Validate()
		if want == "" && err != nil {
			t.Errorf("%s %v: %v, want no error", target, args, err)
		}
		if want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s %v: %v, want an error containing %q", target, args, err, want)
		}
	}
}
