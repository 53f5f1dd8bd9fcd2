package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// TestOldWindowAnswersAsHelpSays checks the help of -aggregator.retention
// and -queryd.max-window against what a query over a window older than the
// retention returns: without -archive.bucket it fails with OUT_OF_RANGE;
// with it, the minutes are read from the history files, exactly. Clicks
// up to -router.max-clock-skew ahead of the clock move event time, and so
// the retention, without waiting for the wall clock.
func TestOldWindowAnswersAsHelpSays(t *testing.T) {
	fs, _ := newFlags()
	helps := map[string]string{}
	for _, name := range []string{"aggregator.retention", "queryd.max-window"} {
		h := fs.Lookup(name).Usage
		helps[name] = h
		// The claims checked below, and none about Redis, which holds no
		// minute older than the retention.
		for _, claim := range []string{"history files (-archive.bucket)", "OUT_OF_RANGE"} {
			if !strings.Contains(h, claim) {
				t.Fatalf("-%s help %q does not say %q, which this test checks", name, h, claim)
			}
		}
		if strings.Contains(h, "Redis") {
			t.Fatalf("-%s help %q mentions Redis: older minutes are not read from it", name, h)
		}
	}

	rs := testserver.Redis(t)
	etcd := testserver.Etcd(t)
	rdb := redis.NewClient(testserver.RedisOptions(rs))
	t.Cleanup(func() { _ = rdb.Close() })
	for _, withHistory := range []bool{false, true} {
		name := map[bool]string{false: "without_history", true: "with_history"}[withHistory]
		t.Run(name, func(t *testing.T) {
			args := []string{"-target=all", "-http.addr=", "-id=old-" + name, "-cluster.partitions=1",
				"-etcd.endpoints=" + etcd.Endpoint, "-etcd.prefix=/" + name,
				"-redis.addr=" + rs.Addr, "-redis.password-file=" + rs.PasswordFile, "-redis.prefix=" + name,
				"-router.acceptance-horizon=1m", "-router.max-clock-skew=10m", "-router.tick-interval=100ms",
				"-aggregator.allowed-lateness=1s", "-aggregator.dedup-horizon=1m", "-aggregator.retention=3m",
				"-aggregator.snapshot-interval=200ms", "-queryd.max-window=10m"}
			bucket := ""
			if withHistory {
				bucket = filepath.Join(t.TempDir(), "bucket")
				args = append(args, "-archive.bucket="+bucket, "-archive.interval=1s", "-history.period=1m", "-history.poll=100ms")
			}
			checkOldWindow(t, startServer(t, args...), rdb, name, bucket, helps)
		})
	}
}

// checkOldWindow ingests clicks in the current minute, moves event time
// until that minute has left memory, and queries it; bucket is the
// -archive.bucket directory, "" without.
func checkOldWindow(t *testing.T, srv *Server, rdb *redis.Client, prefix, bucket string, helps map[string]string) {
	withHistory := bucket != ""
	cc, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ic, qc := clickaggv1.NewIngestServiceClient(cc), clickaggv1.NewQueryServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	t.Cleanup(cancel)

	base := time.Now().Truncate(time.Minute)
	minute := base.Unix() / 60
	ts := func(m int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(m*60, 0)) }
	truth := map[string]int64{"ad-old": 7, "ad-other": 3}
	seq := 0
	send := func(ad string, n int64, at time.Time) {
		t.Helper()
		var events []*clickaggv1.ClickEvent
		for range n {
			seq++
			events = append(events, &clickaggv1.ClickEvent{EventId: fmt.Sprintf("e-%d", seq), AdId: ad,
				ClickTime: timestamppb.New(at), UserId: "u", Ip: "10.0.0.1", Country: "US"})
		}
		testserver.Eventually(t, time.Minute, func() error {
			resp, err := ic.Ingest(ctx, &clickaggv1.IngestRequest{Events: events})
			if err == nil && resp.GetAccepted() != int64(len(events)) {
				return fmt.Errorf("%d of %d clicks accepted: %v", resp.GetAccepted(), len(events), resp.GetRejected())
			}
			return err // a retry sends the same event_ids: counted once
		})
	}
	for ad, n := range truth {
		send(ad, n, base.Add(time.Second))
	}
	count := func() (*clickaggv1.GetAggregatedCountResponse, error) {
		return qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: "ad-old", From: ts(minute), To: ts(minute + 1)})
	}
	top := func() (*clickaggv1.GetPopularAdsResponse, error) {
		return qc.GetPopularAds(ctx, &clickaggv1.GetPopularAdsRequest{Count: 10, WindowMinutes: 1, End: ts(minute + 1)})
	}
	testserver.Eventually(t, time.Minute, func() error {
		resp, err := count()
		if err == nil && resp.GetCount() != truth["ad-old"] {
			err = fmt.Errorf("count %d, want %d", resp.GetCount(), truth["ad-old"])
		}
		return err
	})

	// Event time 3 minutes on: the minute is final (past the dedup
	// horizon) and still in memory, so the history writer writes it.
	send("ad-push", 1, base.Add(3*time.Minute))
	if withHistory {
		testserver.Eventually(t, time.Minute, func() error {
			v, err := rdb.Get(ctx, prefix+":{p0}:history").Result()
			if err != nil {
				return fmt.Errorf("history mark: %w", err)
			}
			if end, _ := strconv.ParseInt(v, 10, 64); end <= minute {
				return fmt.Errorf("history ends at minute %d, before %d", end, minute+1)
			}
			return nil
		})
	}
	// Event time 5 minutes on: once the watermark has passed minute+4,
	// memory keeps minutes from minute+1 on (-aggregator.retention=3m),
	// and the minute is older than the retention.
	send("ad-push", 1, base.Add(5*time.Minute))
	testserver.Eventually(t, time.Minute, func() error {
		resp, err := qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: "ad-push", From: ts(minute + 3), To: ts(minute + 4)})
		if err == nil && !resp.GetComplete() {
			err = fmt.Errorf("minute %d not complete yet", minute+3)
		}
		return err
	})
	if !withHistory {
		_, err := count()
		if status.Code(err) != codes.OutOfRange {
			t.Fatalf("count over a minute older than the retention: %v, want OUT_OF_RANGE", err)
		}
		if !strings.Contains(err.Error(), "-aggregator.retention=3m0s") {
			t.Errorf("count over a minute older than the retention: %v, want the error to name -aggregator.retention", err)
		}
		if _, err := top(); status.Code(err) != codes.OutOfRange {
			t.Errorf("popular ads over a minute older than the retention: %v, want OUT_OF_RANGE", err)
		}
		t.Logf("without a history, a window older than -aggregator.retention fails with OUT_OF_RANGE, as the help of -aggregator.retention (%q) and -queryd.max-window (%q) says",
			helps["aggregator.retention"], helps["queryd.max-window"])
		return
	}
	// With the history, the answers are the same exact ones, from its
	// files.
	if resp, err := count(); err != nil || resp.GetCount() != truth["ad-old"] || !resp.GetComplete() {
		t.Fatalf("count over a minute in the history: %v, %v; want %d, complete", resp, err, truth["ad-old"])
	}
	resp, err := top()
	if err != nil {
		t.Fatalf("popular ads over a minute in the history: %v", err)
	}
	got := map[string]int64{}
	for _, a := range resp.GetAds() {
		got[a.GetAdId()] = a.GetCount()
	}
	if len(got) != len(truth) || got["ad-old"] != truth["ad-old"] || got["ad-other"] != truth["ad-other"] {
		t.Errorf("popular ads over a minute in the history: %v, want %v", got, truth)
	}
	// -queryd.max-window still bounds the window.
	_, err = qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: "ad-old", From: ts(minute - 10), To: ts(minute + 1)})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("count over 11 minutes with -queryd.max-window=10m: %v, want INVALID_ARGUMENT", err)
	}
	// They came from the file: without it, the query fails naming it.
	file, err := filepath.Glob(filepath.Join(bucket, "history", "*", "*", "partition=000", fmt.Sprintf("%d-%d_r0.parquet", minute, minute+1)))
	if err != nil || len(file) != 1 {
		t.Fatalf("history file of minute %d: %v, %v", minute, file, err)
	}
	if err := os.Remove(file[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := count(); status.Code(err) != codes.DataLoss {
		t.Errorf("count over a minute whose history file is gone: %v, want DATA_LOSS", err)
	}
	t.Logf("with a history, a window older than -aggregator.retention is read from the history files, exactly (%v)", got)
}
