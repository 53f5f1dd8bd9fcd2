// Package reconciletest builds what the tests of a reconciliation need: a
// partition log, its raw archive written by the real archiver through a
// real Redis, and the history the aggregators would have written from it.
package reconciletest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/testserver"
)

// Log returns a partition log of hours hours from base (Unix ms), an entry
// every two seconds with a tick (the router's clock, off by up to a
// second) and a few clicks: most a little late, some up to 40 s in the
// future, some up to ten minutes late (expired past a five-minute dedup
// horizon), some sent again minutes later (duplicates).
func Log(seed uint64, base int64, hours int) []partlog.Entry {
	rng := rand.New(rand.NewPCG(seed, 1))
	var out []partlog.Entry
	var sent []*clickaggv1.LogEvent
	for i := range hours * 1800 {
		ms := base + int64(i)*2000
		le := &clickaggv1.LogEntry{RouterId: "r1", TickMs: ms + rng.Int64N(2000) - 1000}
		for range rng.IntN(6) {
			var ev *clickaggv1.LogEvent
			switch x := rng.IntN(100); {
			case x < 5 && len(sent) > 0:
				ev = sent[len(sent)-1-rng.IntN(min(len(sent), 300))]
			default:
				click := ms - rng.Int64N(60_000)
				switch {
				case x < 10:
					click = ms + rng.Int64N(40_000)
				case x < 14:
					click = ms - rng.Int64N(600_000)
				}
				ev = &clickaggv1.LogEvent{
					EventId: fmt.Sprintf("e%d-%d", i, rng.IntN(1000)), AdId: fmt.Sprintf("ad-%d", rng.IntN(40)),
					ClickTimeMs: click, UserId: fmt.Sprintf("u%d", rng.IntN(30)), Ip: fmt.Sprintf("192.0.2.%d", rng.IntN(9)),
					Country: []string{"US", "DE", "FR"}[rng.IntN(3)],
				}
				sent = append(sent, ev)
			}
			le.Events = append(le.Events, ev)
		}
		data, err := proto.Marshal(le)
		if err != nil {
			panic(err)
		}
		out = append(out, partlog.Entry{ID: fmt.Sprintf("%d-%d", ms, i%2), Data: data})
	}
	return out
}

const prefix = "rt"

// Archive writes entries to partition p's log in a real Redis and runs
// the archiver over it until every closed chunk is in b.
func Archive(t testing.TB, b *archive.Bucket, p int, entries []partlog.Entry) {
	t.Helper()
	ArchiveAfterTrim(t, b, p, entries, 0)
}

// ArchiveAfterTrim is Archive, with the first trim entries trimmed from
// the log before archiving begins, as Redis does once they are archived
// and snapshotted.
func ArchiveAfterTrim(t testing.TB, b *archive.Bucket, p int, entries []partlog.Entry, trim int) {
	t.Helper()
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	for _, e := range entries {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: partlog.Key(prefix, p), ID: e.ID, Values: []any{"d", e.Data}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if trim > 0 {
		if err := rdb.XTrimMinID(ctx, partlog.Key(prefix, p), entries[trim].ID).Err(); err != nil {
			t.Fatal(err)
		}
	}
	st := snapshot.New(rdb, prefix)
	if err := st.Claim(ctx, p, 1); err != nil {
		t.Fatal(err)
	}
	a, err := archive.New(archive.Config{Chunking: archive.Chunking{Interval: time.Minute, MaxEvents: 100}, ReadCount: 500,
		Poll: 10 * time.Millisecond, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond},
		partlog.New(rdb, prefix), offsets{st}, b, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx, p, 1) }()
	lastMinute := idMillis(entries[len(entries)-1].ID) / 60_000
	testserver.Eventually(t, time.Minute, func() error {
		got, err := st.Archived(ctx, p)
		if err != nil {
			return err
		}
		if idMillis(got)/60_000 == lastMinute-1 {
			return nil
		}
		return fmt.Errorf("archived to %s", got)
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

type offsets struct{ *snapshot.Store }

func (o offsets) SaveArchived(ctx context.Context, p int, epoch uint64, offset string) error {
	return o.Store.SaveArchived(ctx, p, epoch, offset)
}

// Truth applies the whole log to one partition state, as its aggregator
// did.
func Truth(t testing.TB, p int, entries []partlog.Entry, opts tally.Options) *tally.Partition {
	t.Helper()
	tp := tally.NewPartition(p, opts)
	for _, e := range entries {
		var le clickaggv1.LogEntry
		if err := proto.Unmarshal(e.Data, &le); err != nil {
			t.Fatal(err)
		}
		tp.Apply(e.ID, &le)
	}
	return tp
}

// History writes partition p's revision-0 history files of the minutes
// [from, to), one per period, with tp's final rows, as its aggregator's
// history writer would.
func History(t testing.TB, b *archive.Bucket, p int, tp *tally.Partition, from, to, period int64) {
	t.Helper()
	for m := from; m < to; m += period {
		rows, err := tp.Final(m, m+period)
		if err != nil {
			t.Fatal(err)
		}
		PutHistory(t, b, p, m, m+period, rows)
	}
}

// PutHistory writes rows as partition p's revision-0 history file of the
// minutes [from, to).
func PutHistory(t testing.TB, b *archive.Bucket, p int, from, to int64, rows []tally.FinalRow) {
	t.Helper()
	n := history.Name{Partition: p, From: from, To: to}
	data, err := history.Encode(n, rows)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(context.Background(), history.Key(p, from, to, 0), data); err != nil {
		t.Fatal(err)
	}
}

func idMillis(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	v, _ := strconv.ParseInt(ms, 10, 64)
	return v
}
