package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/clickagg/clickagg/grpcclient"
	"github.com/clickagg/clickagg/loadgen"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// The dev view shows what the cluster took in, from whichever source:
// the routers' and the aggregators' own counters as GetClusterStatus
// reports them, not the load generator's send rate, so that clicks sent
// with grpcurl or clickagg ship appear like the synthetic ones.

// viewMode is how the dev view shows itself.
type viewMode int

const (
	// viewLive redraws the terminal: banner, cluster, top ads.
	viewLive viewMode = iota
	// viewLines prints a block per refresh, for a stdout that is a file.
	viewLines
	// viewLog logs one info line per refresh (-view=off).
	viewLog
)

// Refresh intervals when -view.interval is 0: a log line every 2 s
// would drown the other log lines.
const (
	defaultViewInterval = 2 * time.Second
	defaultLogInterval  = 10 * time.Second
)

// clusterFacts is what the dev view shows of the cluster: the summary
// form of GetClusterStatus, whose totals sum the partitions' reports.
type clusterFacts struct {
	Partitions  int // the cluster's partition count
	Serving     int
	Restoring   int
	Unavailable int
	// Ingested is the clicks the routers accepted, each since it started,
	// and IngestPerSecond their rate over the last minute; a restarted
	// router starts again from 0. RoutersUnavailable did not answer, and
	// are missing from both.
	Ingested           int64
	IngestPerSecond    float64
	RoutersUnavailable int
	// Applied, Duplicates and Late sum the partitions' counters, which
	// snapshots carry across restarts: counted clicks since the data
	// directory was created.
	Applied, Duplicates, Late int64
	// PerSecond sums the partitions' rates over their last minute.
	PerSecond float64
	// LagEntries sums the log entries not applied yet; LagSeconds is the
	// age of the oldest of them over all partitions.
	LagEntries int64
	LagSeconds float64
	// MinWatermark is the cluster's watermark: zero until every partition
	// has one.
	MinWatermark time.Time
}

// summarize reads the totals of st, a summary-form status.
func summarize(st *clickaggv1.GetClusterStatusResponse) clusterFacts {
	t := st.GetTotals()
	f := clusterFacts{
		Partitions:  int(st.GetPartitionCount()),
		Serving:     int(t.GetServing()),
		Restoring:   int(t.GetRestoring()),
		Unavailable: int(t.GetUnavailable()),

		Ingested:           t.GetIngestAccepted(),
		IngestPerSecond:    t.GetIngestAcceptedPerSecond(),
		RoutersUnavailable: int(t.GetRoutersUnavailable()),

		Applied:    t.GetEventsApplied(),
		Duplicates: t.GetDuplicatesDropped(),
		Late:       t.GetLateEvents(),
		PerSecond:  t.GetEventsPerSecond(),
		LagEntries: t.GetLag(),
		LagSeconds: t.GetMaxLagSeconds(),
	}
	if st.GetMinWatermark() != nil {
		f.MinWatermark = st.GetMinWatermark().AsTime()
	}
	return f
}

// viewFrame is one refresh of the view.
type viewFrame struct {
	At    time.Time
	Facts clusterFacts
	Err   error // GetClusterStatus failed; Facts are empty
	// Rate is the applied clicks per second since the previous frame, or
	// on the first the partitions' rate over their last minute.
	Rate float64
	// Top are the top ads of the last five minutes; TopErr why not.
	Top    *clickaggv1.GetPopularAdsResponse
	TopErr error
	// Loadgen is the load generator's counters; nil without it.
	Loadgen *loadgen.Stats
}

// watermarkDelay is how far the cluster's watermark is behind now, the
// allowed lateness included; false before every partition has one.
func (f viewFrame) watermarkDelay() (time.Duration, bool) {
	if f.Facts.MinWatermark.IsZero() {
		return 0, false
	}
	return f.At.Sub(f.Facts.MinWatermark), true
}

// writeBody writes the frame as the live view and the line view show it.
func (f viewFrame) writeBody(b *strings.Builder) {
	fmt.Fprintf(b, "%s  ", f.At.Format("15:04:05"))
	if f.Err != nil {
		fmt.Fprintf(b, "cluster status: %v\n", f.Err)
	} else {
		c := f.Facts
		fmt.Fprintf(b, "ingested %d clicks (%.0f/s)  applied %d clicks (%.0f/s)  duplicates %d  late %d\n",
			c.Ingested, c.IngestPerSecond, c.Applied, f.Rate, c.Duplicates, c.Late)
		if n := c.RoutersUnavailable; n > 0 {
			fmt.Fprintf(b, "          %d routers did not answer: their clicks are not in ingested\n", n)
		}
		fmt.Fprintf(b, "          lag %d log entries, oldest %.1fs", c.LagEntries, c.LagSeconds)
		if d, ok := f.watermarkDelay(); ok {
			fmt.Fprintf(b, "  watermark %s (%.1fs behind)", c.MinWatermark.Local().Format("15:04:05"), d.Seconds())
		} else {
			b.WriteString("  watermark not yet on every partition")
		}
		fmt.Fprintf(b, "\n          partitions %d: %d serving", c.Partitions, c.Serving)
		if n := c.Restoring; n > 0 {
			fmt.Fprintf(b, ", %d restoring", n)
		}
		if c.Unavailable > 0 {
			fmt.Fprintf(b, ", %d unavailable", c.Unavailable)
		}
		b.WriteString("\n")
	}
	if st := f.Loadgen; st != nil {
		fmt.Fprintf(b, "          load generator: sent %d accepted %d rejected %d\n", st.Sent.Load(), st.Accepted.Load(), st.Rejected.Load())
	}
	if f.TopErr != nil {
		fmt.Fprintf(b, "top ads: %v\n", f.TopErr)
		return
	}
	top := f.Top
	fmt.Fprintf(b, "top %d ads, %s – %s (complete=%v)\n", len(top.GetAds()), top.GetFrom().AsTime().Local().Format("15:04"), top.GetTo().AsTime().Local().Format("15:04"), top.GetComplete())
	for i, a := range top.GetAds() {
		fmt.Fprintf(b, "  %2d. %-12s %8d\n", i+1, a.GetAdId(), a.GetCount())
	}
}

// logAttrs are the frame as the info line of -view=off says it.
func (f viewFrame) logAttrs() []any {
	c := f.Facts
	attrs := []any{
		"ingested", c.Ingested, "ingested_per_second", int64(c.IngestPerSecond + 0.5), "routers_unavailable", c.RoutersUnavailable,
		"applied", c.Applied, "applied_per_second", int64(f.Rate + 0.5), "duplicates", c.Duplicates, "late", c.Late,
		"lag_entries", c.LagEntries, "lag_seconds", c.LagSeconds,
	}
	if d, ok := f.watermarkDelay(); ok {
		attrs = append(attrs, "watermark_delay", d.Round(100*time.Millisecond))
	}
	attrs = append(attrs, "partitions", c.Partitions, "serving", c.Serving, "unavailable", c.Unavailable)
	if ads := f.Top.GetAds(); f.TopErr == nil && len(ads) > 0 {
		attrs = append(attrs, "top_ad", ads[0].GetAdId(), "top_ad_clicks_5m", ads[0].GetCount())
	}
	if st := f.Loadgen; st != nil {
		attrs = append(attrs, "loadgen_sent", st.Sent.Load())
	}
	return attrs
}

// devView refreshes what dev shows about the cluster.
type devView struct {
	addr     string // dev's gRPC address
	mode     viewMode
	banner   string // redrawn above every live frame, so it stays in sight
	out      io.Writer
	lg       *slog.Logger
	loadgen  *loadgen.Stats // nil without the load generator
	interval time.Duration
}

// run refreshes the view every interval until ctx ends, asking the
// coordinator and queryd like any client would.
func (v *devView) run(ctx context.Context) error {
	conn, err := grpc.NewClient(v.addr, grpcclient.With(grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		return err
	}
	defer conn.Close()
	coord := clickaggv1.NewCoordinatorServiceClient(conn)
	q := clickaggv1.NewQueryServiceClient(conn)
	t := time.NewTicker(v.interval)
	defer t.Stop()
	var prev *viewFrame
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		f := v.poll(ctx, coord, q, prev)
		if ctx.Err() != nil {
			return nil
		}
		v.show(f)
		if f.Err == nil {
			prev = &f
		}
	}
}

// poll asks for the cluster's status and top ads.
func (v *devView) poll(ctx context.Context, coord clickaggv1.CoordinatorServiceClient, q clickaggv1.QueryServiceClient, prev *viewFrame) viewFrame {
	cctx, cancel := context.WithTimeout(ctx, max(v.interval, 2*time.Second))
	defer cancel()
	f := viewFrame{Loadgen: v.loadgen}
	st, err := coord.GetClusterStatus(cctx, &clickaggv1.GetClusterStatusRequest{Summary: true})
	f.At = time.Now()
	if err != nil {
		f.Err = err
	} else {
		f.Facts = summarize(st)
		f.Rate = f.Facts.PerSecond
		// A restoring partition reports less than it did: then the
		// partitions' own rate stands in for the difference.
		if prev != nil && f.Facts.Applied >= prev.Facts.Applied {
			f.Rate = float64(f.Facts.Applied-prev.Facts.Applied) / f.At.Sub(prev.At).Seconds()
		}
	}
	f.Top, f.TopErr = q.GetPopularAds(cctx, &clickaggv1.GetPopularAdsRequest{Count: 10, WindowMinutes: 5})
	return f
}

func (v *devView) show(f viewFrame) {
	if v.mode == viewLog {
		if f.Err != nil {
			v.lg.Warn("cluster status", "err", f.Err)
			return
		}
		v.lg.Info("cluster", f.logAttrs()...)
		return
	}
	var b strings.Builder
	if v.mode == viewLive {
		// Home and clear, then the banner again: the view never scrolls
		// the addresses away.
		b.WriteString("\033[H\033[2J")
		b.WriteString(v.banner)
	}
	f.writeBody(&b)
	if v.mode == viewLines {
		b.WriteString("\n")
	}
	fmt.Fprint(v.out, b.String())
}
