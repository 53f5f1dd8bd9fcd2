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
	if err := r.ping(); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	if err := r.ping(); err == nil {
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
	addrs := e.ListenAddrs()
	if len(addrs) != 2 {
		t.Fatalf("listeners %v, want a client and a peer listener", addrs)
	}
	for _, a := range addrs {
		if ip := a.(*net.TCPAddr).IP; !ip.IsLoopback() {
			t.Errorf("etcd listens on %v, not loopback", a)
		}
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
	if err := r.ping(); err != nil {
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

// TestRedisRequiresItsPassword checks that a spawned server refuses a
// client without its password, keeps the password in a file only its
// owner reads, and keeps it across a restart on the same Dir.
func TestRedisRequiresItsPassword(t *testing.T) {
	dir := t.TempDir()
	r, err := StartRedis(context.Background(), RedisConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	if r.Password == "" || r.PasswordFile != filepath.Join(dir, PasswordFileName) {
		t.Fatalf("password %q, file %q", r.Password, r.PasswordFile)
	}
	fi, err := os.Stat(r.PasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file mode %v, want 0600", fi.Mode().Perm())
	}
	b, err := os.ReadFile(r.PasswordFile)
	if err != nil || string(b) != r.Password+"\n" {
		t.Fatalf("password file holds %q (%v), want %q", b, err, r.Password+"\n")
	}
	c, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 64)
	n, err := c.Read(line)
	if err != nil || !strings.HasPrefix(string(line[:n]), "-NOAUTH") {
		t.Fatalf("PING without a password: %q, %v; want -NOAUTH", line[:n], err)
	}
	if _, err := ready(r.Addr, "wrong"); err == nil {
		t.Fatal("a wrong password was accepted")
	}

	r.Stop()
	r2, err := StartRedis(context.Background(), RedisConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Stop()
	if r2.Password != r.Password {
		t.Fatal("a restart on the same Dir changed the password")
	}
	if err := r2.ping(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "redis-auth.conf")); err != nil {
		t.Fatal(err)
	}
}
