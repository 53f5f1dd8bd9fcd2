package localserver

import (
	"context"
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
