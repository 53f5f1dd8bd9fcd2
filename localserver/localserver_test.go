package localserver

import (
	"context"
	"net"
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
