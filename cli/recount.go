package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/aggregator"
	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/recount"
	"github.com/clickagg/clickagg/tally"
)

// recountFlags are the flags recalc and reconcile share: the range, where
// the archive and the cluster's state are, and the counting rules, which
// must be the aggregators'.
type recountFlags struct {
	from, to   string
	partitions string
	bucket     string
	cluster    cluster.Config
	lateness   time.Duration
	horizon    time.Duration
	period     time.Duration
	margin     time.Duration
	parallel   int
}

func (f *recountFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.from, "from", "", "start of the range, inclusive: a UTC time (2026-12-01T15:04, or RFC 3339 with a zone) or a date (its midnight UTC); rounded down to a -history.period")
	fs.StringVar(&f.to, "to", "", "end of the range, exclusive, in the form of -from; rounded up to a -history.period")
	fs.StringVar(&f.partitions, "partitions", "", "comma-separated partitions to recount; empty means all of the cluster's")
	fs.StringVar(&f.bucket, "archive.bucket", "", "the object store of the cluster's raw archive and history, as its aggregators' -archive.bucket: a directory or a URL (s3://bucket?endpoint=...)")
	f.cluster.RegisterFlags(fs)
	fs.DurationVar(&f.lateness, "aggregator.allowed-lateness", aggregator.DefaultAllowedLateness, "the aggregators' -aggregator.allowed-lateness: a recount with other rules counts other clicks")
	fs.DurationVar(&f.horizon, "aggregator.dedup-horizon", aggregator.DefaultDedupHorizon, "the aggregators' -aggregator.dedup-horizon")
	fs.DurationVar(&f.period, "history.period", history.DefaultPeriod, "the aggregators' -history.period: the span of one history file")
	fs.DurationVar(&f.margin, "recount.margin", recount.DefaultMargin, "how long before the range the replay of the raw archive starts; must exceed how far routers' clocks disagree and the routers' -router.max-clock-skew")
	fs.IntVar(&f.parallel, "parallel", runtime.GOMAXPROCS(0), "partitions recounted at once; each holds up to a dedup horizon of its clicks in memory")
}

// recountJob is what the flags resolve to.
type recountJob struct {
	from, to   int64 // Unix minutes, whole periods
	partitions []int
	bucket     *archive.Bucket
	etcd       *clientv3.Client
	cl         *cluster.Client
	cfg        recount.Config
	view       history.View // the history served when the job started
}

func (j *recountJob) close() {
	j.bucket.Close()
	j.etcd.Close()
}

// parseMinute parses a -from or -to value.
func parseMinute(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, fmt.Errorf("-%s: required", name)
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", time.DateOnly} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("-%s %q: not a time such as 2026-12-01T15:04 or a date such as 2026-12-01", name, v)
}

// resolve checks the flags, refusing ranges that are empty, reversed or
// in the future, and connects to the archive and etcd.
func (f *recountFlags) resolve(ctx context.Context, now time.Time) (*recountJob, error) {
	from, err := parseMinute("from", f.from)
	if err != nil {
		return nil, err
	}
	to, err := parseMinute("to", f.to)
	if err != nil {
		return nil, err
	}
	switch {
	case !from.Before(to):
		return nil, fmt.Errorf("-from %s is not before -to %s", f.from, f.to)
	case to.After(now):
		return nil, fmt.Errorf("-to %s is in the future (now is %s): only minutes that can no longer change can be recounted", f.to, now.UTC().Format(time.RFC3339))
	case f.period < time.Minute || f.period%time.Minute != 0 || time.Hour%f.period != 0:
		return nil, fmt.Errorf("-history.period %v: must be whole minutes that divide an hour", f.period)
	case f.bucket == "":
		return nil, errors.New("-archive.bucket: required, the store the aggregators archive to")
	case f.parallel < 1:
		return nil, fmt.Errorf("-parallel %d: must be at least 1", f.parallel)
	}
	period := int64(f.period / time.Minute)
	j := &recountJob{
		cfg: recount.Config{
			Options: tally.Options{AllowedLateness: f.lateness, DedupHorizon: f.horizon, Retention: f.horizon},
			Margin:  f.margin, Period: period, Now: time.Now,
		},
	}
	if err := j.cfg.Validate(); err != nil {
		return nil, err
	}
	span := j.cfg.Covering(from, to)
	j.from, j.to = span.From, span.To
	if err := f.cluster.Validate(); err != nil {
		return nil, err
	}
	if j.bucket, err = archive.OpenBucket(ctx, f.bucket); err != nil {
		return nil, err
	}
	if j.etcd, err = cluster.Dial(ctx, f.cluster, slog.Default()); err != nil {
		j.bucket.Close()
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	j.cl = cluster.NewClient(j.etcd, f.cluster.Prefix)
	if err := j.load(ctx, f.partitions); err != nil {
		j.close()
		return nil, err
	}
	return j, nil
}

// load reads the partitions and the applied revisions from etcd.
func (j *recountJob) load(ctx context.Context, list string) error {
	n, err := j.cl.EnsurePartitions(ctx, 0)
	if err != nil {
		return fmt.Errorf("partition count of the cluster: %w", err)
	}
	if list == "" {
		for p := range n {
			j.partitions = append(j.partitions, p)
		}
	} else {
		seen := map[int]bool{}
		for _, s := range strings.Split(list, ",") {
			p, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || p < 0 || p >= n {
				return fmt.Errorf("-partitions: %q is not a partition of this cluster (0 to %d)", s, n-1)
			}
			if !seen[p] {
				seen[p] = true
				j.partitions = append(j.partitions, p)
			}
		}
	}
	data, _, err := j.cl.AppliedRevisions(ctx)
	if err != nil {
		return err
	}
	applied, err := history.DecodeApplied(data)
	if err != nil {
		return err
	}
	r := history.NewReader(j.bucket)
	r.SetApplied(applied)
	j.view = r.View()
	return nil
}

// minuteString formats a Unix minute for reports.
func minuteString(m int64) string { return time.Unix(m*60, 0).UTC().Format("2006-01-02T15:04") }
