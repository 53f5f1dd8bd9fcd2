package router

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

func TestRejectReason(t *testing.T) {
	for _, tc := range []struct{ reason, want string }{
		{"event_id is empty", "event_id"},
		{"ad_id is 300 bytes long, at most 128 allowed; user_id is empty", "ad_id"},
		{"user_id contains control character U+0007 at byte 3", "user_id"},
		{`ip "x" is not a valid IPv4 or IPv6 address`, "ip"},
		{"country is empty", "country"},
		{"click_time is missing", "click_time"},
		{"event is nil", "other"},
		{"ipv6 something", "other"},
		{"", "other"},
	} {
		t.Run(tc.want+"/"+tc.reason, func(t *testing.T) {
			if got := rejectReason(tc.reason); got != tc.want {
				t.Errorf("rejectReason(%q) = %q, want %q", tc.reason, got, tc.want)
			}
		})
	}
}

// failingLog refuses every append.
type failingLog struct{}

func (failingLog) Append(context.Context, []partlog.Append) ([]string, error) {
	return nil, errors.New("connection refused")
}

func TestMetrics(t *testing.T) {
	rdb := testserver.RedisClient(t)
	reg := prometheus.NewPedanticRegistry()
	r := New(testConfig(t), testID, partitioner(t, 4), partlog.New(rdb, testPrefix), nil, fixedClock(t0), WithMetrics(reg))
	bad := click("e-bad", "", t0)
	bad.Country = ""
	events := []*clickaggv1.ClickEvent{
		click("e-1", "ad-1", t0), click("e-2", "ad-2", t0), click("e-3", "ad-1", t0),
		bad,
		click("", "ad-1", t0),
	}
	accepted, rejected, err := r.Ingest(context.Background(), events)
	if err != nil || accepted != 3 || len(rejected) != 2 {
		t.Fatalf("Ingest = %d, %v, %v", accepted, rejected, err)
	}
	if _, _, err := r.Ingest(context.Background(), nil); !errors.Is(err, ErrNoEvents) {
		t.Fatalf("Ingest(nil) = %v", err)
	}
	// The same router on a log that fails.
	rf := New(testConfig(t), testID, partitioner(t, 4), failingLog{}, nil, fixedClock(t0))
	if _, _, err := rf.Ingest(context.Background(), events[:1]); !errors.Is(err, ErrLogUnavailable) {
		t.Fatalf("Ingest on a failing log = %v", err)
	}

	for name, tc := range map[string]struct {
		c    prometheus.Collector
		want float64
	}{
		"requests":          {r.m.requests, 2},
		"accepted":          {r.m.accepted, 3},
		"rejected ad_id":    {r.m.rejected["ad_id"], 1},
		"rejected event_id": {r.m.rejected["event_id"], 1},
		"rejected country":  {r.m.rejected["country"], 0}, // named second
		"append failures":   {r.m.appendFailures, 0},
		"failing: failures": {rf.m.appendFailures, 1},
		"failing: accepted": {rf.m.accepted, 0},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", name, got, tc.want)
		}
	}
	// Three events in one request make one log entry per partition they
	// route to, whose events add up to three.
	entries := testutil.ToFloat64(r.m.appends)
	if entries < 1 || entries > 2 {
		t.Errorf("log entries = %v, want 1 or 2 (ad-1 and ad-2)", entries)
	}
	if n, err := testutil.GatherAndCount(reg, "clickagg_router_log_entry_events"); err != nil || n != 1 {
		t.Errorf("histogram series = %d, %v", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP clickagg_router_events_rejected_total Click events refused by validation, by the field their rejection names first.
# TYPE clickagg_router_events_rejected_total counter
clickagg_router_events_rejected_total{reason="ad_id"} 1
clickagg_router_events_rejected_total{reason="click_time"} 0
clickagg_router_events_rejected_total{reason="country"} 0
clickagg_router_events_rejected_total{reason="event_id"} 1
clickagg_router_events_rejected_total{reason="ip"} 0
clickagg_router_events_rejected_total{reason="other"} 0
clickagg_router_events_rejected_total{reason="user_id"} 0
`), "clickagg_router_events_rejected_total"); err != nil {
		t.Error(err)
	}
	// Registering twice is reported, not a panic.
	_ = New(testConfig(t), testID, partitioner(t, 4), failingLog{}, nil, fixedClock(t0), WithMetrics(reg))
}
