package snapshot_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/snapshot"
)

// partitionMinutes is a partition's worth of minutes as the bench's
// snapshot holds them: 60 minutes of about 70 KB (one of 24 partitions of
// 1M keys at about 100 bytes a key).
func partitionMinutes(seed uint64) map[int64][]byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	minutes := make(map[int64][]byte, 60)
	for m := range int64(60) {
		v := make([]byte, 70_000)
		for i := 0; i < len(v); i += 8 {
			x := rng.Uint64()
			for j := i; j < i+8 && j < len(v); j++ {
				v[j] = byte(x)
				x >>= 8
			}
		}
		minutes[29_000_000+m] = v
	}
	return minutes
}

func fsyncClient(b *testing.B, fsync string) *redis.Client {
	srv, err := localserver.StartRedis(context.Background(), localserver.RedisConfig{Dir: filepath.Join(b.TempDir(), "redis"), AppendFsync: fsync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Stop() })
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: srv.Password})
	b.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// BenchmarkSave writes one partition's full snapshot (60 minutes, 4.2 MB)
// per op, with AOF fsync always as in the bench and production.
func BenchmarkSave(b *testing.B) {
	for _, fsync := range []string{"always", "no"} {
		b.Run("fsync="+fsync, func(b *testing.B) {
			ctx := context.Background()
			st := snapshot.New(fsyncClient(b, fsync), prefix)
			minutes := partitionMinutes(1)
			size := 0
			for _, v := range minutes {
				size += len(v)
			}
			b.SetBytes(int64(size))
			p := 0
			for b.Loop() {
				if err := st.Save(ctx, p%24, snapshot.Write{Epoch: 1, Meta: []byte("meta"), Minutes: minutes}); err != nil {
					b.Fatal(err)
				}
				p++
			}
		})
	}
}

// BenchmarkLoad loads one partition's full snapshot per op.
func BenchmarkLoad(b *testing.B) {
	ctx := context.Background()
	st := snapshot.New(fsyncClient(b, "no"), prefix)
	minutes := partitionMinutes(1)
	size := 0
	for _, v := range minutes {
		size += len(v)
	}
	if err := st.Save(ctx, 0, snapshot.Write{Epoch: 1, Meta: []byte("meta"), Minutes: minutes}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		l, err := st.Load(ctx, 0)
		if err != nil {
			b.Fatal(err)
		}
		if len(l.Minutes) != len(minutes) {
			b.Fatal(fmt.Sprint("loaded ", len(l.Minutes), " minutes"))
		}
	}
}

// BenchmarkSaveConcurrent writes 24 partitions' snapshots per op, a given
// number in flight, with AOF fsync always: what an aggregator's concurrent
// saves ask of Redis, without the encoding. A full snapshot writes 60
// minutes of a partition, an incremental one (the bench's steady state)
// about 10.
func BenchmarkSaveConcurrent(b *testing.B) {
	const partitions = 24
	all := partitionMinutes(1)
	for _, kind := range []struct {
		name    string
		minutes int
	}{{"full", 60}, {"incremental", 10}} {
		minutes := map[int64][]byte{}
		size := 0
		for m, v := range all {
			if len(minutes) < kind.minutes {
				minutes[m] = v
				size += len(v)
			}
		}
		for _, inFlight := range []int{1, 2, 4, 8} {
			b.Run(fmt.Sprintf("%s/in-flight=%d", kind.name, inFlight), func(b *testing.B) {
				ctx := context.Background()
				st := snapshot.New(fsyncClient(b, "always"), prefix)
				b.SetBytes(int64(partitions * size))
				for b.Loop() {
					var g errgroup.Group
					g.SetLimit(inFlight)
					for p := range partitions {
						g.Go(func() error {
							return st.Save(ctx, p, snapshot.Write{Epoch: 1, Meta: []byte("meta"), Minutes: minutes})
						})
					}
					if err := g.Wait(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
