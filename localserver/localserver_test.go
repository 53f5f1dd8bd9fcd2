package localserver

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestRedisStartStop(t *testing.T) {
	dir := t.TempDir()
	r, err := StartRedis(context.Background(), RedisConfig{Dir: dir, AppendFsync: "always"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(r.Addr); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	if err := ping(r.Addr); err == nil {
		t.Fatal("server still answers after Stop")
	}
}

func TestEtcdStarts(t *testing.T) {
	e, err := StartEtcd(EtcdConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Endpoint == "" {
		t.Fatal("no endpoint")
	}
}

// TestEtcdPicksAgainWhenAPortIsTaken gives StartEtcd, as its first pick, a
// port another listener holds, as happens when a process takes a picked
// port before etcd binds it.
func TestEtcdPicksAgainWhenAPortIsTaken(t *testing.T) {
	taken, picks := firstPickTaken(t, &etcdPort)
	e, err := StartEtcd(EtcdConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if *picks < 4 || strings.Contains(e.Endpoint, ":"+strconv.Itoa(taken)) {
		t.Fatalf("%d picks, endpoint %s (taken port %d)", *picks, e.Endpoint, taken)
	}
}

// TestRedisPicksAgainWhenAPortIsTaken gives StartRedis, as its first pick,
// a port another listener holds.
func TestRedisPicksAgainWhenAPortIsTaken(t *testing.T) {
	taken, picks := firstPickTaken(t, &redisPort)
	r, err := StartRedis(context.Background(), RedisConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	if *picks != 2 || strings.HasSuffix(r.Addr, ":"+strconv.Itoa(taken)) {
		t.Fatalf("%d picks, address %s (taken port %d)", *picks, r.Addr, taken)
	}
	if err := ping(r.Addr); err != nil {
		t.Fatal(err)
	}
}

// firstPickTaken makes *pick return, the first time, a port that a
// listener holds for the rest of the test, and count its calls.
func firstPickTaken(t *testing.T, pick *func() (int, error)) (int, *int) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	taken := l.Addr().(*net.TCPAddr).Port
	picks := new(int)
	saved := *pick
	*pick = func() (int, error) {
		if *picks++; *picks == 1 {
			return taken, nil
		}
		return FreePort()
	}
	t.Cleanup(func() { *pick = saved })
	return taken, picks
}

// TestSeaweedFSPicksAgainWhenAPortIsTaken gives StartSeaweedFS, as its
// first pick (the master's port), a port another listener holds; the
// server it then starts stores objects.
func TestSeaweedFSPicksAgainWhenAPortIsTaken(t *testing.T) {
	taken, picks := firstPickTaken(t, &seaweedPort)
	ctx := context.Background()
	s, err := StartSeaweedFS(ctx, SeaweedFSConfig{Dir: t.TempDir(), AccessKey: "k", SecretKey: "secret-key"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	// Each attempt picks a port per listener.
	if *picks < 9 {
		t.Fatalf("%d picks, endpoint %s (taken port %d): not picked again", *picks, s.Endpoint, taken)
	}
	if err := s.probe(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSeaweedFSMissing(t *testing.T) {
	_, err := StartSeaweedFS(context.Background(), SeaweedFSConfig{Dir: t.TempDir(), AccessKey: "k", SecretKey: "s", Binary: filepath.Join(t.TempDir(), "weed")})
	if !errors.Is(err, ErrNoWeed) || !strings.Contains(err.Error(), "make deps") {
		t.Fatalf("StartSeaweedFS without weed = %v, want ErrNoWeed saying to run make deps", err)
	}
}

// TestSeaweedFSVersionIsTheScripts: the tests look for weed where
// scripts/seaweedfs.sh builds it, under its version.
func TestSeaweedFSVersionIsTheScripts(t *testing.T) {
	b, err := os.ReadFile("../scripts/seaweedfs.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nversion="+SeaweedFSVersion+"\n") {
		t.Fatalf("scripts/seaweedfs.sh does not build version %s", SeaweedFSVersion)
	}
}

// TestFreePortNeverRepeats checks that FreePort hands a port out once per
// process: end-to-end tests that run side by side pick their children's
// ports from it, and the kernel offers a closed port again at random.
func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 2000 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
