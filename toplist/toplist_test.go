package toplist_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/queryd"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
	"github.com/clickagg/clickagg/toplist"
	"github.com/clickagg/clickagg/toplist/toplisttest"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

var _ queryd.Publications = (*toplist.Store)(nil)

// prefixes gives every fixture of one backend a key space of its own.
var prefixes atomic.Int64

func newPrefix() string { return fmt.Sprintf("contract%d", prefixes.Add(1)) }

// listen subscribes through rdb to channel and returns the payloads.
func listen(t *testing.T, rdb redis.UniversalClient, channel string) <-chan []byte {
	t.Helper()
	ctx := context.Background()
	ps := rdb.Subscribe(ctx, channel)
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	out := make(chan []byte, 1024)
	go func() {
		defer close(out)
		for m := range ps.Channel() {
			out <- []byte(m.Payload)
		}
	}()
	return out
}

func TestContractRedis(t *testing.T) {
	rdb := testserver.RedisClient(t)
	toplisttest.Run(t, func(t *testing.T) toplisttest.Fixture {
		prefix := newPrefix()
		return toplisttest.Fixture{
			Pubs:   toplist.New(rdb, prefix),
			Listen: func(t *testing.T) <-chan []byte { return listen(t, rdb, toplist.Channel(prefix)) },
		}
	})
}

// TestContractRedisCluster listens on a primary other than the channel's:
// the announcements reach it forwarded over the cluster bus, where the
// forwards of different nodes would race.
func TestContractRedisCluster(t *testing.T) {
	c := testserver.RedisCluster(t, 3, 1)
	rdb := redis.NewClusterClient(testserver.RedisClusterOptions(c))
	t.Cleanup(func() { _ = rdb.Close() })
	toplisttest.Run(t, func(t *testing.T) toplisttest.Fixture {
		prefix := newPrefix()
		return toplisttest.Fixture{
			Pubs: toplist.New(rdb, prefix),
			Listen: func(t *testing.T) <-chan []byte {
				_, others := testserver.RedisClusterPrimaries(t, rdb, toplist.Channel(prefix))
				other := redis.NewClient(&redis.Options{Addr: others[0], Password: c.Password})
				t.Cleanup(func() { _ = other.Close() })
				return listen(t, other, toplist.Channel(prefix))
			},
		}
	})
}

// TestLayout pins what README documents and other programs read: the key
// and channel names, the value stored byte for byte, and its TTL.
func TestLayout(t *testing.T) {
	if got := toplist.Key("clickagg", 29420001); got != "clickagg:top:29420001" {
		t.Errorf("Key: %q", got)
	}
	if got := toplist.Channel("clickagg"); got != "clickagg:top" {
		t.Errorf("Channel: %q", got)
	}
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	s := toplist.New(rdb, "clickagg")
	list := []byte(`{"ads":[{"adId":"ad-1","count":"3"}],"complete":true}`)
	if err := s.Publish(ctx, 29420001, list, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(ctx, 29420002, list, 0); err != nil {
		t.Fatal(err)
	}
	if v, err := rdb.Get(ctx, "clickagg:top:29420001").Result(); err != nil || v != string(list) {
		t.Errorf("GET clickagg:top:29420001: %q, %v; want %q", v, err, list)
	}
	if ttl := rdb.TTL(ctx, "clickagg:top:29420001").Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("TTL of a list published for an hour: %v", ttl)
	}
	if ttl := rdb.TTL(ctx, "clickagg:top:29420002").Val(); ttl != -1 {
		t.Errorf("TTL of a list published for ever: %v, want -1 (none)", ttl)
	}
}
