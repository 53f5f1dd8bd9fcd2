package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/history"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/reconcile"
	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/testserver"
)

// runTool runs a clickagg command to its end and returns its output and
// exit code.
func runTool(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", args, err)
	}
	return string(out), 0
}

// TestRecalcRepairsHistory is the negative control of the history: on a
// cluster that archived and wrote its history, it changes one history row
// and deletes one raw archive file on purpose. Queries answer the changed
// row; recalc over a range crossing the deleted file refuses; recalc
// -apply over the changed row's partition recounts it from the raw
// archive, reports exactly that row, and from then on queries answer the
// recounted value with the new revision.
func TestRecalcRepairsHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of recounting the history")
	}
	// Mostly waiting for minutes of the clock to pass: it runs beside the
	// other waiting tests (go test -parallel, GOMAXPROCS by default).
	t.Parallel()
	const partitions = 4
	bucketDir := filepath.Join(t.TempDir(), "store")
	// Horizons as short as the clicks allow, as in TestHistoryExactlyOnce.
	// Their minute of event time is sent from 55s old to 5s ahead, so
	// that the log entries written meanwhile are in the range recounted:
	// the acceptance horizon and the clock skew take it, and the dedup
	// horizon exceeds their sum. The retention leaves the history writer
	// 25s to write a final minute before it leaves memory.
	const retention = 105 * time.Second
	rules := []string{"-aggregator.allowed-lateness=5s", "-aggregator.dedup-horizon=80s", "-history.period=1m"}
	c := newTestCluster(t, clusterSpec{
		partitions: partitions, coordinators: 1, routers: 1, aggregators: 1,
		commonFlags: append([]string{
			"-router.acceptance-horizon=65s", "-router.max-clock-skew=10s", "-router.idle-watermark-lag=2s",
			"-aggregator.retention=" + retention.String(), "-hotkey.split-rate=1000000",
		}, rules...),
		aggregatorFlags: []string{"-aggregator.snapshot-interval=2s", "-archive.bucket=" + bucketDir,
			"-archive.interval=2s", "-history.poll=1s"},
	})
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)
	w := newWorkload(20261210, 4_000, 60, 1, time.Now().Add(-55*time.Second), 0.05, 0, 0, 100)
	ingest(t, w, c.ingestClients(), nil)
	tr := &truth{clicks: w.unique}
	want := tr.counts()
	var last int64
	for k := range want {
		last = max(last, k.minute)
	}
	from, to := w.firstMin, last+1

	// Wait until the history holds every minute, and they left memory.
	rdb := c.redisClient()
	ctx := context.Background()
	waitHistoryMark(t, rdb, partitions, to)
	waitLeftMemory(t, cc, partitions, to, retention)

	tool := func(cmd string, extra ...string) (string, int) {
		args := append(append([]string{cmd, "-archive.bucket=" + bucketDir,
			"-from=" + minuteArg(from), "-to=" + minuteArg(to), "-recount.margin=1m"}, c.etcdFlags()...), rules...)
		return runTool(t, append(args, extra...)...)
	}
	// A recount of the untouched history differs in nothing.
	out, code := tool("recalc")
	if code != 0 || !strings.Contains(out, "rows that differ: 0;") || !strings.Contains(out, "revision 1 written, not applied") {
		t.Fatalf("recalc of the untouched history (exit %d):\n%s", code, out)
	}
	t.Logf("recalc of the untouched history:\n%s", out)

	// Change one row of the history: the busiest ad's first minute.
	bucket, err := archive.OpenBucket(ctx, bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	var ad string
	for k := range want {
		if k.minute == from && (ad == "" || want[k] > want[adMinute{ad, from}] || want[k] == want[adMinute{ad, from}] && k.ad < ad) {
			ad = k.ad
		}
	}
	pa := parts(t, partitions).Partition(ad)
	key := history.Key(pa, from, from+1, 0)
	data, err := bucket.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	f, err := history.Read(key, data)
	if err != nil {
		t.Fatal(err)
	}
	rows := make([]tally.FinalRow, len(f.Rows))
	changed := -1
	for i, r := range f.Rows {
		rows[i] = tally.FinalRow{Minute: r.Minute / 60_000, AdID: r.AdID, Country: r.Country, Clicks: r.Clicks, Revision: r.Revision, UserHashes: r.UserIDHashes, IPHashes: r.IPHashes}
		if r.AdID == ad && changed < 0 {
			changed = i
			rows[i].Clicks++
			rows[i].UserHashes = append(slices.Clone(r.UserIDHashes), 1)
			rows[i].IPHashes = append(slices.Clone(r.IPHashes), 1)
		}
	}
	if data, err = history.Encode(f.Name, rows); err != nil {
		t.Fatal(err)
	}
	if err := bucket.Put(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	qc := c.queryClient()
	count := func() (int64, int64) {
		resp, err := qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, From: minuteTS(from), To: minuteTS(from + 1)})
		if err != nil {
			t.Fatalf("count of %s in minute %d: %v", ad, from, err)
		}
		return resp.GetCount(), resp.GetHistoryRevision()
	}
	truthN := want[adMinute{ad, from}]
	if n, rev := count(); n != truthN+1 || rev != 0 {
		t.Fatalf("count of the changed row: %d at revision %d, want %d at 0", n, rev, truthN+1)
	}

	// The published top list of the minute as a wrong count would have
	// published it.
	topKey := fmt.Sprintf("clickagg:top:%d", from)
	wantTop := tr.top(from, from+1, 100, nil)
	wrong := &clickaggv1.GetPopularAdsResponse{From: minuteTS(from), To: minuteTS(from + 1), Complete: true}
	for _, a := range wantTop {
		c := a.Count
		if a.AdId == ad {
			c++
		}
		wrong.Ads = append(wrong.Ads, &clickaggv1.AdCount{AdId: a.AdId, Count: c})
	}
	raw, err := protojson.Marshal(wrong)
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, topKey, raw, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}

	// Delete a raw archive file of another partition, in the range.
	pb := (pa + 1) % partitions
	gone := ""
	var inRange []string
	for _, k := range mustList(t, bucket, archive.PartitionPrefix(pb, time.Unix(from*60, 0))) {
		if _, first, _, _ := archive.ParseKey(k); idMs(first) >= from*60_000 && idMs(first) < to*60_000 {
			inRange = append(inRange, k)
		}
	}
	if len(inRange) > 2 {
		gone = inRange[len(inRange)/2]
	}
	if gone == "" {
		t.Fatal("no archive file to delete")
	}
	if err := os.Remove(filepath.Join(bucketDir, gone)); err != nil {
		t.Fatal(err)
	}
	t.Logf("deleted %s", gone)
	// reconcile reports exactly the changed row and the deleted file.
	reportFile := filepath.Join(t.TempDir(), "report.json")
	out, code = tool("reconcile", "-report="+reportFile)
	t.Logf("reconcile (exit %d):\n%s", code, out)
	rep := readReport(t, reportFile)
	changedRow := reconcile.Mismatch{Partition: pa, Minute: time.Unix(from*60, 0).UTC(), AdID: ad, Country: f.Rows[changed].Country,
		Served: f.Rows[changed].Clicks + 1, Recounted: f.Rows[changed].Clicks, Differs: reconcile.DiffersCount}
	if code != 2 || len(rep.Mismatches) != 1 || rep.Mismatches[0] != changedRow {
		t.Fatalf("reconcile exit %d, mismatches %+v; want exit 2 and only %+v", code, rep.Mismatches, changedRow)
	}
	if len(rep.Holes) != 1 || rep.Holes[0].Partition != pb || !(rep.Holes[0].After < gone && gone < rep.Holes[0].Before) ||
		len(rep.MissingFiles)+len(rep.CorruptFiles) != 0 {
		t.Fatalf("reconcile holes %+v, missing %v, corrupt %v; want one hole around %s", rep.Holes, rep.MissingFiles, rep.CorruptFiles, gone)
	}

	out, code = tool("recalc", "-apply", fmt.Sprintf("-partitions=%d", pb))
	if code == 0 || !strings.Contains(out, "refused") || !strings.Contains(out, "hole") {
		t.Fatalf("recalc across a deleted archive file (exit %d):\n%s", code, out)
	}

	// Recount the changed partition, and apply it.
	out, code = tool("recalc", "-apply", fmt.Sprintf("-partitions=%d", pa))
	t.Logf("recalc -apply:\n%s", out)
	if code != 0 || !strings.Contains(out, "rows that differ: 1;") || !strings.Contains(out, "revision 3 applied") {
		t.Fatalf("recalc -apply (exit %d):\n%s", code, out)
	}
	diffLine := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, " "+ad+" ") {
			diffLine = strings.Join(strings.Fields(l), " ")
		}
	}
	if wantLine := fmt.Sprintf("%d %s %s %s %d %d", pa, minuteArg(from), ad, f.Rows[changed].Country, f.Rows[changed].Clicks+1, f.Rows[changed].Clicks); diffLine != wantLine {
		t.Fatalf("recalc reported %q, want %q", diffLine, wantLine)
	}
	testserver.Eventually(t, 30*time.Second, func() error {
		if n, rev := count(); n != truthN || rev != 3 {
			return fmt.Errorf("count after recalc -apply: %d at revision %d, want %d at 3", n, rev, truthN)
		}
		return nil
	})
	// The corrected minute's published top list is published again.
	testserver.Eventually(t, time.Minute, func() error {
		raw, err := rdb.Get(ctx, topKey).Bytes()
		if err != nil {
			return err
		}
		var pub clickaggv1.GetPopularAdsResponse
		if err := protojson.Unmarshal(raw, &pub); err != nil {
			return err
		}
		if !sameTop(pub.Ads, wantTop) {
			return fmt.Errorf("published minute %d after recalc -apply: %s", from, firstDiff(pub.Ads, wantTop))
		}
		return nil
	})
	// Minutes before the history began (before the cluster existed) were
	// never kept: OUT_OF_RANGE, not a hole.
	_, err = qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, From: minuteTS(from - 30), To: minuteTS(from + 1)})
	if status.Code(err) != codes.OutOfRange || !strings.Contains(err.Error(), "begins at minute") {
		t.Fatalf("count from before the history began: %v, want OUT_OF_RANGE", err)
	}
	// Every count of the range is exact again.
	for k, n := range want {
		resp, err := qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: k.ad, From: minuteTS(k.minute), To: minuteTS(k.minute + 1)})
		if err != nil || resp.GetCount() != n {
			t.Fatalf("%s minute %d after recalc: %d, %v; want %d", k.ad, k.minute, resp.GetCount(), err, n)
		}
	}
	// The repaired partition reconciles.
	out, code = tool("reconcile", fmt.Sprintf("-partitions=%d", pa), "-report="+reportFile)
	if rep := readReport(t, reportFile); code != 0 || len(rep.Mismatches) != 0 || rep.Rows == 0 {
		t.Fatalf("reconcile after recalc -apply (exit %d):\n%s", code, out)
	}
	// Refusals: reversed, in the future.
	for _, args := range [][]string{{"-from=" + minuteArg(to), "-to=" + minuteArg(from)}, {"-to=" + time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04")}} {
		out, code := tool("recalc", args...)
		if code == 0 || !strings.Contains(out, "-from") && !strings.Contains(out, "future") {
			t.Fatalf("recalc %v (exit %d):\n%s", args, code, out)
		}
	}
}

func readReport(t *testing.T, path string) reconcile.Report {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r reconcile.Report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func minuteArg(m int64) string { return time.Unix(m*60, 0).UTC().Format("2006-01-02T15:04") }

func idMs(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	v, _ := strconv.ParseInt(ms, 10, 64)
	return v
}

func mustList(t *testing.T, b *archive.Bucket, prefix string) []string {
	t.Helper()
	keys, err := b.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}
