package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/redisconf"
	"github.com/clickagg/clickagg/testserver"
)

// TestServerRefusesABadRedisAtStart: a router whose Redis Cluster seed
// does not answer, whose sentinel knows no master by the name given, or
// whose primary has fewer replicas than -redis.wait-replicas, stops at
// start with an error naming the flag to fix, instead of waiting
// for a Redis that configuration will never bring.
func TestServerRefusesABadRedisAtStart(t *testing.T) {
	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	master := testserver.Redis(t)
	sentinel := testserver.Sentinel(t, "mymaster", master)
	nobody := fmt.Sprintf("127.0.0.1:%d", port)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unreachable seed", []string{"-redis.cluster-addrs=" + nobody}, "-redis.cluster-addrs " + nobody},
		{"wrong master name", []string{"-redis.sentinel-master=other", "-redis.sentinel-addrs=" + sentinel, "-redis.password-file=" + master.PasswordFile},
			`-redis.sentinel-master "other"`},
		{"replicas that one server lacks", []string{"-redis.addr=" + master.Addr, "-redis.password-file=" + master.PasswordFile, "-redis.wait-replicas=1"},
			"redis " + master.Addr + " has 0 replicas connected, -redis.wait-replicas asks every write to reach 1"},
		{"replicas that the sentinel's primary lacks", []string{"-redis.sentinel-master=mymaster", "-redis.sentinel-addrs=" + sentinel, "-redis.password-file=" + master.PasswordFile, "-redis.wait-replicas=1"},
			"the redis primary has 0 replicas connected, -redis.wait-replicas asks every write to reach 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// etcd is never reached: Redis is checked first.
			err := runRouter(t, append([]string{"-etcd.endpoints=" + nobody}, tc.args...))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestServerStopsOnAWrongPassword: a single Redis is not contacted
// before Run starts its roles (it may still be starting, and is waited
// for), but one that answers and refuses the password ends Run at once
// with an error naming -redis.password-file, instead of being retried
// for ever.
func TestServerStopsOnAWrongPassword(t *testing.T) {
	rs := testserver.Redis(t)
	etcd := testserver.Etcd(t)
	wrong := t.TempDir() + "/wrong"
	if err := os.WriteFile(wrong, []byte("not the password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := runRouter(t, []string{"-etcd.endpoints=" + etcd.Endpoint, "-redis.addr=" + rs.Addr, "-redis.password-file=" + wrong})
	if want := "-redis.password-file " + wrong + ": Redis refused this password"; err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, redisconf.ErrCredentials) {
		t.Fatalf("Run: %v, want an ErrCredentials containing %q", err, want)
	}
}

// runRouter runs a router with args until Run returns, which must be
// before a minute has passed.
func runRouter(t *testing.T, args []string) error {
	t.Helper()
	fs, cfg := newFlags()
	if err := parse(fs, append([]string{"-target=router", "-grpc.addr=127.0.0.1:0", "-http.addr="}, args...)); err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(*cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = srv.Run(ctx)
	t.Log(err)
	if ctx.Err() != nil {
		t.Fatal("Run ran until its context ended: a bad Redis setting was retried")
	}
	return err
}

// TestRedisSettingsOnlyForRedisRoles: a bad -redis.* setting stops the
// roles that use Redis, and not a coordinator, which never reaches it.
func TestRedisSettingsOnlyForRedisRoles(t *testing.T) {
	missing := "-redis.password-file=" + t.TempDir() + "/missing"
	for _, target := range []string{"coordinator", "router", "aggregator", "queryd"} {
		fs, cfg := newFlags()
		if err := parse(fs, []string{"-target=" + target, missing}); err != nil {
			t.Fatal(err)
		}
		err := cfg.Validate()
		if target == "coordinator" && err != nil {
			t.Errorf("coordinator: %v, want no error", err)
		}
		if target != "coordinator" && (err == nil || !strings.Contains(err.Error(), "-redis.password-file")) {
			t.Errorf("%s: %v, want an error naming -redis.password-file", target, err)
		}
	}
}

// TestWaitShorterThanAppend: a router would give up on every append
// before a wait for replicas as long as its append timeout ends.
func TestWaitShorterThanAppend(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-redis.wait-replicas=1", "-redis.wait-timeout=2s", "-router.append-timeout=3s"}, ""},
		{[]string{"-redis.wait-replicas=0", "-redis.wait-timeout=10s", "-router.append-timeout=3s"}, ""},
		{[]string{"-redis.wait-replicas=1", "-redis.wait-timeout=3s", "-router.append-timeout=3s"}, "router: -redis.wait-timeout 3s: must be shorter than -router.append-timeout=3s"},
	} {
		fs, cfg := newFlags()
		if err := parse(fs, append([]string{"-target=router"}, tc.args...)); err != nil {
			t.Fatal(err)
		}
		err := cfg.Validate()
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: Validate = %v, want %q", tc.args, err, tc.want)
		}
	}
}
