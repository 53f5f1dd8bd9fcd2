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
	w := newOldWindow(t, srv)
	base, minute, ctx := w.base, w.minute, w.ctx
	truth := map[string]int64{"ad-old": 7, "ad-other": 3}
	for ad, n := range truth {
		w.send(ad, n, base.Add(time.Second))
	}
	testserver.Eventually(t, time.Minute, func() error {
		resp, err := w.count()
		if err == nil && resp.GetCount() != truth["ad-old"] {
			err = fmt.Errorf("count %d, want %d", resp.GetCount(), truth["ad-old"])
		}
		return err
	})

	// Event time 3 minutes on: the minute is final (past the dedup
	// horizon) and still in memory, so the history writer writes it.
	w.send("ad-push", 1, base.Add(3*time.Minute))
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
	w.send("ad-push", 1, base.Add(5*time.Minute))
	testserver.Eventually(t, time.Minute, func() error {
		resp, err := w.qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: "ad-push", From: minuteStart(minute + 3), To: minuteStart(minute + 4)})
		if err == nil && !resp.GetComplete() {
			err = fmt.Errorf("minute %d not complete yet", minute+3)
		}
		return err
	})
	if !withHistory {
		checkOutOfRange(w, helps)
		return
	}
	checkFromHistory(w, bucket, truth)
}

// oldWindow is checkOldWindow's clients of one server, and the minute it
// counts clicks in.
type oldWindow struct {
	t      *testing.T
	ctx    context.Context
	ic     clickaggv1.IngestServiceClient
	qc     clickaggv1.QueryServiceClient
	base   time.Time // the minute's start
	minute int64     // Unix minutes
	seq    int       // of the last event_id sent
}

func newOldWindow(t *testing.T, srv *Server) *oldWindow {
	cc, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	t.Cleanup(cancel)
	base := time.Now().Truncate(time.Minute)
	return &oldWindow{t: t, ctx: ctx, ic: clickaggv1.NewIngestServiceClient(cc), qc: clickaggv1.NewQueryServiceClient(cc),
		base: base, minute: base.Unix() / 60}
}

// minuteStart is the start of Unix minute m as a timestamp.
func minuteStart(m int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(m*60, 0)) }

// send ingests n clicks on ad at event time at, retrying until all are
// accepted.
func (w *oldWindow) send(ad string, n int64, at time.Time) {
	t := w.t
	t.Helper()
	var events []*clickaggv1.ClickEvent
	for range n {
		w.seq++
		events = append(events, &clickaggv1.ClickEvent{EventId: fmt.Sprintf("e-%d", w.seq), AdId: ad,
			ClickTime: timestamppb.New(at), UserId: "u", Ip: "10.0.0.1", Country: "US"})
	}
	testserver.Eventually(t, time.Minute, func() error {
		resp, err := w.ic.Ingest(w.ctx, &clickaggv1.IngestRequest{Events: events})
		if err == nil && resp.GetAccepted() != int64(len(events)) {
			return fmt.Errorf("%d of %d clicks accepted: %v", resp.GetAccepted(), len(events), resp.GetRejected())
		}
		return err // a retry sends the same event_ids: counted once
	})
}

// count is ad-old's count over the minute.
func (w *oldWindow) count() (*clickaggv1.GetAggregatedCountResponse, error) {
	return w.qc.GetAggregatedCount(w.ctx, &clickaggv1.GetAggregatedCountRequest{AdId: "ad-old", From: minuteStart(w.minute), To: minuteStart(w.minute + 1)})
}

// top is the popular ads of the minute.
func (w *oldWindow) top() (*clickaggv1.GetPopularAdsResponse, error) {
	return w.qc.GetPopularAds(w.ctx, &clickaggv1.GetPopularAdsRequest{Count: 10, WindowMinutes: 1, End: minuteStart(w.minute + 1)})
}

// checkOutOfRange: without a history, a window older than the retention
// fails with OUT_OF_RANGE naming -aggregator.retention.
func checkOutOfRange(w *oldWindow, helps map[string]string) {
	t := w.t
	_, err := w.count()
	if status.Code(err) != codes.OutOfRange {
		t.Fatalf("count over a minute older than the retention: %v, want OUT_OF_RANGE", err)
	}
	if !strings.Contains(err.Error(), "-aggregator.retention=3m0s") {
		t.Errorf("count over a minute older than the retention: %v, want the error to name -aggregator.retention", err)
	}
	if _, err := w.top(); status.Code(err) != codes.OutOfRange {
		t.Errorf("popular ads over a minute older than the retention: %v, want OUT_OF_RANGE", err)
	}
	t.Logf("without a history, a window older than -aggregator.retention fails with OUT_OF_RANGE, as the help of -aggregator.retention (%q) and -queryd.max-window (%q) says",
		helps["aggregator.retention"], helps["queryd.max-window"])
}

// checkFromHistory: with the history, the answers are the same exact
// ones, from its files.
func checkFromHistory(w *oldWindow, bucket string, truth map[string]int64) {
	t, minute := w.t, w.minute
	if resp, err := w.count(); err != nil || resp.GetCount() != truth["ad-old"] || !resp.GetComplete() {
		t.Fatalf("count over a minute in the history: %v, %v; want %d, complete", resp, err, truth["ad-old"])
	}
	resp, err := w.top()
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
	_, err = w.qc.GetAggregatedCount(w.ctx, &clickaggv1.GetAggregatedCountRequest{AdId: "ad-old", From: minuteStart(minute - 10), To: minuteStart(minute + 1)})
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
	if _, err := w.count(); status.Code(err) != codes.DataLoss {
		t.Errorf("count over a minute whose history file is gone: %v, want DATA_LOSS", err)
	}
	t.Logf("with a history, a window older than -aggregator.retention is read from the history files, exactly (%v)", got)
}
