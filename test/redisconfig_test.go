package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

// TestBadRedisSettingsExit is issue 14's test 6 on the binary: a router started with Redis settings that no
// retry can fix exits with a non-zero status, within seconds, and says
// which flag to fix: Cluster seeds that all are dead, a Redis Cluster
// that leaves hash slots unassigned, a Sentinel master name the sentinels
// do not know, a sentinel password they refuse, a single Redis that
// refuses the password, and a replica count its primary cannot meet.
func TestBadRedisSettingsExit(t *testing.T) {
	dir := t.TempDir()
	etcd := testserver.Etcd(t)
	single := testserver.Redis(t)
	half := testserver.RedisClusterNode(t, 0, 10000)
	rs := testserver.RedisSentinel(t, localserver.RedisSentinelConfig{Sentinels: 1, SentinelPassword: true})
	sentinel := rs.Sentinels[0].Addr
	dead := []string{testserver.DeadAddr(t), testserver.DeadAddr(t)}
	wrong := filepath.Join(dir, "wrong-password")
	if err := os.WriteFile(wrong, []byte("not the password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seeds := strings.Join(dead, ",")
	sentinelFlags := []string{"-redis.sentinel-addrs=" + sentinel, "-redis.password-file=" + rs.Nodes[0].PasswordFile}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"dead seeds", []string{"-redis.cluster-addrs=" + seeds},
			"-redis.cluster-addrs " + seeds + ": no seed answered as a Redis Cluster node"},
		{"uncovered slots", []string{"-redis.cluster-addrs=" + half.Addr, "-redis.password-file=" + half.PasswordFile},
			"-redis.cluster-addrs " + half.Addr + ": the Redis Cluster assigns hash slots 10001-16383 (6383 of 16384) to no node"},
		{"wrong master name", append([]string{"-redis.sentinel-master=nosuchmaster", "-redis.sentinel-password-file=" + rs.SentinelPasswordFile}, sentinelFlags...),
			`-redis.sentinel-master "nosuchmaster": sentinel ` + sentinel + " knows no master by that name"},
		{"wrong sentinel password", append([]string{"-redis.sentinel-master=" + rs.MasterName, "-redis.sentinel-password-file=" + wrong}, sentinelFlags...),
			"-redis.sentinel-password-file " + wrong + ": sentinel " + sentinel + " refused it"},
		{"wrong password", []string{"-redis.addr=" + single.Addr, "-redis.password-file=" + wrong},
			"-redis.password-file " + wrong + ": Redis refused this password for the default user"},
		{"replicas that cannot be met", []string{"-redis.addr=" + single.Addr, "-redis.password-file=" + single.PasswordFile, "-redis.wait-replicas=1"},
			"redis " + single.Addr + " has 0 replicas connected, -redis.wait-replicas asks every write to reach 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-target=router", "-grpc.addr=127.0.0.1:0", "-http.addr=", "-etcd.endpoints=" + etcd.Endpoint}, tc.args...)
			code, out := runToExit(t, time.Minute, args...)
			t.Logf("exit %d: %s", code, exitMessage(out))
			if code == 0 {
				t.Errorf("exit status 0, want non-zero")
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output does not say %q:\n%s", tc.want, out)
			}
		})
	}
}

// runToExit runs the binary with args until it exits, at most timeout,
// and returns its exit status and what it wrote to stdout and stderr.
func runToExit(t *testing.T, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out testsupport.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("still running after %v:\n%s", timeout, out.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// exitMessage returns the line in which clickagg says why it exits.
func exitMessage(out string) string {
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "clickagg: ") {
			return strings.TrimSpace(l)
		}
	}
	return "(none)"
}
