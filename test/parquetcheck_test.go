package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/archive"
)

// needParquetCheck fails t at once when check.mjs cannot run, and returns
// the node binary.
func needParquetCheck(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found (%v): run make deps", err)
	}
	if _, err := os.Stat("parquetcheck/node_modules/@duckdb/node-api"); err != nil {
		t.Fatalf("DuckDB's npm package is not installed in test/parquetcheck (%v): run make deps", err)
	}
	return node
}

// parquetCheck runs test/parquetcheck/check.mjs, which reads Parquet files
// with DuckDB (its npm package): a reader independent of parquet-go, which
// wrote them. It decodes the JSON the script prints into out.
func parquetCheck(t *testing.T, stdin string, out any, env []string, args ...string) {
	t.Helper()
	node := needParquetCheck(t)
	cmd := exec.Command(node, append([]string{"parquetcheck/check.mjs"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node check.mjs %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("node check.mjs %s printed %q: %v", strings.Join(args, " "), stdout.String(), err)
	}
}

// rawCheck is what check.mjs reports about a raw archive.
type rawCheck struct {
	Files         int              `json:"files"`
	Rows          int              `json:"rows"`
	Misplaced     int              `json:"misplaced"`
	Doubled       int              `json:"doubled"`
	ClickTimeType string           `json:"click_time_type"`
	Partitions    map[string]int   `json:"partitions"`
	Counts        []adMinuteClicks `json:"counts"`
}

type adMinuteClicks struct {
	Ad     string `json:"ad"`
	Minute int64  `json:"minute"`
	Clicks int64  `json:"clicks"`
}

// TestArchiveIndependentReader archives a workload with duplicates (retries
// of earlier clicks, and batches sent again through another router), late
// clicks and invalid clicks, then reads the archive with DuckDB and checks
// it against ground truth: per (ad, minute), the clicks counted as README's
// query counts them equal the workload's unique valid clicks exactly; the
// rows, per partition and in all, equal what archive.ReadChunk reads; the
// Hive path of every row names its partition; no log entry's click is
// there twice. It also runs README's DuckDB query verbatim, in a time zone
// far from UTC, and checks its answer.
func TestArchiveIndependentReader(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of a cluster archiving")
	}
	needParquetCheck(t)
	const partitions = 4
	root := t.TempDir()
	// README's query reads data/archive, as `clickagg dev` writes it.
	bucketDir := filepath.Join(root, "data", "archive")
	c := newTestCluster(t, clusterSpec{
		partitions: partitions, coordinators: 1, routers: 2, aggregators: 1,
		aggregatorFlags: []string{"-aggregator.snapshot-interval=2s", "-archive.bucket=" + bucketDir, "-archive.interval=2s"},
		routerFlags:     []string{"-router.idle-watermark-lag=1h"},
	})
	rdb := c.redisClient()
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)

	start := time.Now().Truncate(time.Minute).Add(-10 * time.Minute)
	w := newWorkload(20261208, 30_000, 1_000, 8, start, 0.05, 0.02, 0.01, 200)
	res := ingest(t, w, c.ingestClients(), nil)
	waitCaughtUp(t, cc, partitions, 2*time.Minute)

	// Every click is in the log by now: wait until each partition is
	// archived up to its last entry, then stop the aggregator so that
	// both readers see the same files.
	ctx := context.Background()
	lastEntry := map[int]string{}
	for p := range partitions {
		last, err := rdb.XRevRangeN(ctx, fmt.Sprintf("clickagg:{p%d}:log", p), "+", "-", 1).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		if len(last) > 0 {
			lastEntry[p] = last[0].ID
		}
	}
	waitArchived(t, rdb, lastEntry, 2*time.Minute)
	for _, a := range c.aggregators {
		a.Kill()
	}

	// What parquet-go reads.
	goRows := map[string]int{}
	goTotal := 0
	keys := eachFile(t, bucketDir, "raw/", archive.ReadChunk, func(ch archive.Chunk) {
		if len(ch.Rows) > 0 {
			goRows[fmt.Sprint(ch.Partition)] += len(ch.Rows)
		}
		goTotal += len(ch.Rows)
	})

	// What DuckDB reads.
	began := time.Now()
	var got rawCheck
	parquetCheck(t, "", &got, nil, "raw", bucketDir)
	t.Logf("DuckDB read %d files, %d rows in %v", got.Files, got.Rows, time.Since(began).Round(time.Millisecond))

	if got.Files != len(keys) {
		t.Errorf("DuckDB found %d files, the bucket lists %d", got.Files, len(keys))
	}
	if got.Rows != goTotal {
		t.Errorf("DuckDB read %d rows, archive.ReadChunk %d", got.Rows, goTotal)
	}
	if !maps.Equal(got.Partitions, goRows) {
		t.Errorf("rows per partition: DuckDB %v, archive.ReadChunk %v", got.Partitions, goRows)
	}
	if got.Misplaced != 0 {
		t.Errorf("%d rows are in another partition's folder", got.Misplaced)
	}
	if got.Doubled != 0 {
		t.Errorf("%d rows repeat a (log_partition, log_offset, entry_index)", got.Doubled)
	}
	if got.ClickTimeType != "TIMESTAMP WITH TIME ZONE" {
		t.Errorf("DuckDB reads click_time as %s, want TIMESTAMP WITH TIME ZONE (UTC-adjusted)", got.ClickTimeType)
	}
	// Duplicates were appended: the archive keeps them, the count does not.
	if unique := len(w.unique); got.Rows <= unique {
		t.Errorf("%d rows for %d unique clicks and %d duplicates sent", got.Rows, unique, w.dups+int(res.resentEvents.Load()))
	}

	tr := &truth{clicks: w.unique}
	want := tr.counts()
	wrong := 0
	for _, r := range got.Counts {
		k := adMinute{r.Ad, r.Minute}
		if want[k] != r.Clicks {
			if wrong++; wrong <= 20 {
				t.Errorf("DuckDB: %s in minute %d has %d clicks, want %d", r.Ad, r.Minute, r.Clicks, want[k])
			}
		}
		delete(want, k)
	}
	for k, n := range want {
		if wrong++; wrong <= 20 {
			t.Errorf("DuckDB: %s in minute %d has no clicks, want %d", k.ad, k.minute, n)
		}
	}
	if wrong > 0 {
		t.FailNow()
	}
	t.Logf("%d (ad, minute) counts of %d unique clicks equal ground truth; %d rows with %d retries and %d resent, %d late, %d invalid",
		len(got.Counts), len(w.unique), got.Rows, w.dups, res.resentEvents.Load(), w.late, len(w.invalidAt))

	checkReadmeDuckDB(t, root, tr)
}

// checkReadmeDuckDB runs README's DuckDB query on the archive under
// root/data/archive, exactly as written, and checks it answers the top 10
// (ad, UTC day) click counts of the ground truth. DuckDB runs in a time
// zone whose day never matches UTC's, so the query must say UTC itself.
func checkReadmeDuckDB(t *testing.T, root string, tr *truth) {
	t.Helper()
	sql := strings.Join(readmeBlock(t, "<!-- readme-test: duckdb -->"), "\n")
	var got struct {
		Columns []string `json:"columns"`
		Rows    [][]any  `json:"rows"`
	}
	parquetCheck(t, sql, &got, []string{"TZ=Pacific/Kiritimati"}, "sql", root)

	type adDay struct{ ad, day string }
	perDay := map[adDay]int64{}
	for _, c := range tr.clicks {
		perDay[adDay{c.ev.AdId, time.Unix(c.minute*60, 0).UTC().Format(time.DateOnly)}]++
	}
	var want []int64
	for _, n := range perDay {
		want = append(want, n)
	}
	slices.Sort(want)
	slices.Reverse(want)
	want = want[:min(10, len(want))]

	if !slices.Equal(got.Columns, []string{"ad_id", "day", "clicks"}) {
		t.Fatalf("README query columns %v", got.Columns)
	}
	var counts []int64
	for _, r := range got.Rows {
		ad, _ := r[0].(string)
		day, _ := r[1].(string)
		n, _ := r[2].(float64)
		d, ok := strings.CutSuffix(day, " 00:00:00+00")
		if !ok {
			t.Errorf("README query: day %q of %s is not a UTC midnight", day, ad)
		}
		if perDay[adDay{ad, d}] != int64(n) {
			t.Errorf("README query: %s on %s has %v clicks, want %d", ad, d, n, perDay[adDay{ad, d}])
		}
		counts = append(counts, int64(n))
	}
	// Ads with equal counts may come in any order; the counts may not.
	if !slices.Equal(counts, want) {
		t.Errorf("README query: top clicks per ad and day %v, want %v", counts, want)
	}
}
