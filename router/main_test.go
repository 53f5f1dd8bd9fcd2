package router

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testsupport"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

// t0 is the router clock in most tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const testPrefix = "clickagg"

// testID names the router in most tests.
const testID = "router-test"

// testConfig is the flag defaults.
func testConfig(t testing.TB) Config {
	t.Helper()
	var c Config
	c.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func partitioner(t testing.TB, n int) *ring.Partitioner {
	t.Helper()
	p, err := ring.NewPartitioner(n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func fixedClock(at time.Time) func() time.Time { return func() time.Time { return at } }

func click(id, ad string, at time.Time) *clickaggv1.ClickEvent {
	return &clickaggv1.ClickEvent{
		EventId:   id,
		AdId:      ad,
		ClickTime: timestamppb.New(at),
		UserId:    "user-1",
		Ip:        "192.0.2.1",
		Country:   "US",
	}
}

// stored is the LogEvent the router should append for a valid click.
func stored(e *clickaggv1.ClickEvent) *clickaggv1.LogEvent {
	return &clickaggv1.LogEvent{
		EventId:     e.EventId,
		AdId:        e.AdId,
		ClickTimeMs: e.ClickTime.AsTime().UnixMilli(),
		UserId:      e.UserId,
		Ip:          e.Ip,
		Country:     e.Country,
	}
}

// readStream returns every entry of partition p's stream, decoded, in order.
func readStream(ctx context.Context, rdb *redis.Client, p int) ([]*clickaggv1.LogEntry, error) {
	msgs, err := rdb.XRange(ctx, partlog.Key(testPrefix, p), "-", "+").Result()
	if err != nil {
		return nil, err
	}
	out := make([]*clickaggv1.LogEntry, 0, len(msgs))
	for _, m := range msgs {
		d, ok := m.Values["d"].(string)
		if !ok {
			return nil, fmt.Errorf("entry %s of partition %d has no field d: %v", m.ID, p, m.Values)
		}
		e := &clickaggv1.LogEntry{}
		if err := proto.Unmarshal([]byte(d), e); err != nil {
			return nil, fmt.Errorf("entry %s of partition %d: %w", m.ID, p, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// splitEntries separates event entries from ticks.
func splitEntries(entries []*clickaggv1.LogEntry) (events []*clickaggv1.LogEntry, ticks []int64) {
	for _, e := range entries {
		if e.TickMs != 0 {
			ticks = append(ticks, e.TickMs)
			continue
		}
		events = append(events, e)
	}
	return events, ticks
}
