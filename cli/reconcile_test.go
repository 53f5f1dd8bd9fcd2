package cli

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/reconcile/reconciletest"
	"github.com/clickagg/clickagg/recount"
	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/testserver"
)

// TestReconcileCommand runs clickagg reconcile against a real etcd and a
// directory bucket holding one partition's archive and history: it
// refuses bad ranges before writing anything (exit 1), and exits 0, 2 or
// 3 as the history matches, differs, or cannot be checked everywhere,
// recording each completed run in etcd.
func TestReconcileCommand(t *testing.T) {
	f := newReconcileFixture(t)

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"reversed", []string{"-from=2027-01-15T10:00", "-to=2027-01-15T09:00"}, "is not before"},
			{"empty", []string{"-from=2027-01-15T10:00", "-to=2027-01-15T10:00"}, "is not before"},
			{"future", []string{"-from=2027-01-15T10:00", "-to=2027-01-15T11:30"}, "in the future"},
			{"not final", []string{"-from=2027-01-15T10:30", "-to=2027-01-15T11:00"}, "not final"},
			{"previous day and range", []string{"-previous-day", "-from=2027-01-15T10:00"}, "-previous-day"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := f.run(t, tc.args...)
				if err == nil || !strings.Contains(err.Error(), tc.want) || exitCode(err) != 1 {
					t.Fatalf("err %v (exit %d), want one saying %q, exit 1", err, exitCode(err), tc.want)
				}
				if tc.name == "not final" && !errors.Is(err, recount.ErrNotFinal) {
					t.Fatalf("err %v, want ErrNotFinal", err)
				}
				if out != "" {
					t.Fatalf("a refused run printed %q", out)
				}
				if _, err := os.Stat(f.reportPath); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("a refused run wrote a report: %v", err)
				}
				if _, ok, err := f.cl.LastReconcileRun(f.ctx); ok || err != nil {
					t.Fatalf("a refused run was recorded: %v, %v", ok, err)
				}
			})
		}
	})

	t.Run("ok", func(t *testing.T) {
		out, err := f.run(t, "-from=2027-01-15T08:10", "-to=2027-01-15T10:00")
		if err != nil || exitCode(err) != 0 || !strings.Contains(out, "result: OK") {
			t.Fatalf("exit %d, err %v, out:\n%s", exitCode(err), err, out)
		}
		// -from rounds down to a period.
		if r := f.report(t); r["result"] != "OK" || r["from"] != "2027-01-15T08:00:00Z" || r["rows_compared"].(float64) == 0 {
			t.Fatalf("report %v", r)
		}
		if r := f.last(t); !r.Started.Equal(f.now) || !r.To.Equal(time.UnixMilli(f.base+2*3_600_000)) || r.RowsCompared == 0 || r.MismatchedRows != 0 {
			t.Fatalf("recorded %+v", r)
		}
	})

	t.Run("mismatch", func(t *testing.T) {
		m := f.first + 60
		removeUntilCleanup(t, filepath.Join(f.dir, history.Key(f.p, m, m+15, 0)))
		out, err := f.run(t, "-from=2027-01-15T08:00", "-to=2027-01-15T10:00")
		if exitCode(err) != exitMismatch || !strings.Contains(out, "result: MISMATCH") || !strings.Contains(out, history.Key(f.p, m, m+15, 0)) {
			t.Fatalf("exit %d, err %v, out:\n%s", exitCode(err), err, out)
		}
		if r := f.last(t); r.UnreadableFiles != 1 || r.UncheckedMinutes != 15 {
			t.Fatalf("recorded %+v", r)
		}
	})

	t.Run("hole", func(t *testing.T) {
		keys, err := f.b.List(f.ctx, archive.PartitionPrefix(f.p, time.UnixMilli(f.base+3_600_000)))
		if err != nil || len(keys) < 2 {
			t.Fatal(keys, err)
		}
		removeUntilCleanup(t, filepath.Join(f.dir, keys[1]))
		out, err := f.run(t, "-from=2027-01-15T08:00", "-to=2027-01-15T10:00")
		if exitCode(err) != exitIncomplete || !strings.Contains(out, "result: INCOMPLETE") || !strings.Contains(out, keys[2]) {
			t.Fatalf("exit %d, err %v, out:\n%s", exitCode(err), err, out)
		}
		if r := f.last(t); r.Holes != 1 || r.MismatchedRows != 0 || r.UncheckedMinutes == 0 {
			t.Fatalf("recorded %+v", r)
		}
	})
}

// reconcileFixture is a real etcd and a directory bucket holding three
// hours of partition p's archive and the history written from it, and
// clickagg reconcile run on them at now.
type reconcileFixture struct {
	ctx         context.Context
	etcd        string // endpoint
	cl          *cluster.Client
	dir         string // the bucket's
	b           *archive.Bucket
	base, first int64 // Unix milliseconds and minutes of the first hour
	p           int
	now         time.Time
	reportPath  string
}

func newReconcileFixture(t *testing.T) *reconcileFixture {
	const (
		base  = int64(1_800_000_000_000) // 2027-01-15T08:00:00Z
		hours = 3
		p     = 1
	)
	ctx := context.Background()
	etcd := testserver.Etcd(t)
	cl := cluster.NewClient(testserver.NewEtcdClient(t, etcd.Endpoint), "/rc")
	if _, err := cl.EnsurePartitions(ctx, 2); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b, err := archive.OpenBucket(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	entries := reconciletest.Log(1, base, hours)
	reconciletest.Archive(t, b, p, entries)
	opts := tally.Options{AllowedLateness: 5 * time.Second, DedupHorizon: 5 * time.Minute, Retention: 1000 * time.Hour}
	first := base / 60_000
	reconciletest.History(t, b, p, reconciletest.Truth(t, p, entries, opts), first, first+165, 15)
	return &reconcileFixture{ctx: ctx, etcd: etcd.Endpoint, cl: cl, dir: dir, b: b, base: base, first: first, p: p,
		now: time.UnixMilli(base + hours*3_600_000), reportPath: filepath.Join(t.TempDir(), "report.json")}
}

// run runs clickagg reconcile with args after the fixture's flags.
func (f *reconcileFixture) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	os.Remove(f.reportPath)
	var out strings.Builder
	err := runReconcile(f.ctx, append([]string{
		"-etcd.endpoints=" + f.etcd, "-etcd.prefix=/rc", "-archive.bucket=" + f.dir, "-partitions=1",
		"-aggregator.allowed-lateness=5s", "-aggregator.dedup-horizon=5m", "-history.period=15m", "-parallel=1",
		"-report=" + f.reportPath,
	}, args...), &out, f.now)
	return out.String(), err
}

// report is the JSON report of the last run.
func (f *reconcileFixture) report(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile(f.reportPath)
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// last is the run recorded in etcd.
func (f *reconcileFixture) last(t *testing.T) cluster.ReconcileRun {
	t.Helper()
	r, ok, err := f.cl.LastReconcileRun(f.ctx)
	if err != nil || !ok {
		t.Fatalf("last reconcile run: %v, %v", ok, err)
	}
	return r
}

// removeUntilCleanup removes the file at path and writes it back when the
// (sub)test ends.
func removeUntilCleanup(t *testing.T, path string) {
	t.Helper()
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(path, orig, 0o644) })
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func TestPreviousDay(t *testing.T) {
	for _, tc := range []struct {
		now      time.Time
		from, to string
	}{
		{time.Date(2026, 12, 7, 7, 30, 0, 0, time.UTC), "2026-12-06", "2026-12-07"},
		{time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC), "2026-12-06", "2026-12-07"},
		{time.Date(2027, 1, 1, 23, 59, 0, 0, time.UTC), "2026-12-31", "2027-01-01"},
		// Another zone: the UTC day counts.
		{time.Date(2026, 3, 1, 0, 30, 0, 0, time.FixedZone("CET", 3600)), "2026-02-27", "2026-02-28"},
	} {
		if from, to := previousDay(tc.now); from != tc.from || to != tc.to {
			t.Errorf("previousDay(%v) = %s, %s; want %s, %s", tc.now, from, to, tc.from, tc.to)
		}
	}
}
