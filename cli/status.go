package cli

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/grpcclient"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

const statusSynopsis = `clickagg status prints the cluster at a glance, from one coordinator: the
totals (partitions serving, ingested clicks/s, applied events/s, lag,
watermark delay), one row per process (its roles, version, addresses and,
for aggregators, the partitions it owns with their lag and watermark
delay), one row per router (clicks accepted since it started, clicks/s),
the hottest ads and the splits, and the handoffs in progress. One row per process, not per
partition, so that a 64-partition cluster fits a screen; -partitions adds
one row per partition.

Usage:
  clickagg status -addr=coordinator:9090 [-partitions] [-tls.ca-file=... -auth.token-file=...]

It reads GetClusterStatus (summary), GetHotKeys, GetHandoffs and
GetAssignment: the caller needs the query permission when the cluster
checks permissions.`

// statusFlags are the flags of clickagg status.
type statusFlags struct {
	addr       string
	partitions bool
	hot        int
	timeout    time.Duration
	// client secures the calls: TLS and a bearer token, as ship's.
	client clientFlags
}

func (f *statusFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "addr", "localhost:9090", "gRPC address of a coordinator (any one: followers answer reads too)")
	fs.BoolVar(&f.partitions, "partitions", false, "also print one row per partition: owner, epoch, state, lag, watermark delay, events/s")
	fs.IntVar(&f.hot, "hot", 5, "number of hottest ads of the last minute to print (1 to 1000); 0 prints none")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "deadline of the whole status read")
	f.client.register(fs)
}

func runStatus(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("clickagg status", flag.ContinueOnError)
	setUsage(fs, statusSynopsis)
	var f statusFlags
	f.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if f.hot < 0 || f.hot > 1000 {
		return fmt.Errorf("-hot %d: want 0 to 1000", f.hot)
	}
	if f.timeout <= 0 {
		return fmt.Errorf("-timeout %v: want a positive duration", f.timeout)
	}
	opts, err := f.client.dialOptions(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(f.addr, grpcclient.With(opts...)...)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", f.addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	v, err := readStatus(ctx, clickaggv1.NewCoordinatorServiceClient(conn), f.partitions, f.hot)
	if err != nil {
		return fmt.Errorf("status from %s: %w", f.addr, err)
	}
	return v.render(out, time.Now())
}

// statusView is what clickagg status prints, as the coordinator answered.
type statusView struct {
	summary    *clickaggv1.GetClusterStatusResponse
	full       *clickaggv1.GetClusterStatusResponse // nil without -partitions
	assignment *clickaggv1.GetAssignmentResponse
	hot        *clickaggv1.GetHotKeysResponse // nil with -hot=0
	handoffs   *clickaggv1.GetHandoffsResponse
}

// readStatus makes the calls at once; any failure fails the command, since
// a table with holes would read as a healthy cluster.
func readStatus(ctx context.Context, cc clickaggv1.CoordinatorServiceClient, partitions bool, hot int) (statusView, error) {
	var v statusView
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		v.summary, err = cc.GetClusterStatus(gctx, &clickaggv1.GetClusterStatusRequest{Summary: true})
		return err
	})
	if partitions {
		g.Go(func() (err error) {
			v.full, err = cc.GetClusterStatus(gctx, &clickaggv1.GetClusterStatusRequest{})
			return err
		})
	}
	g.Go(func() (err error) {
		v.assignment, err = cc.GetAssignment(gctx, &clickaggv1.GetAssignmentRequest{})
		return err
	})
	if hot > 0 {
		g.Go(func() (err error) {
			v.hot, err = cc.GetHotKeys(gctx, &clickaggv1.GetHotKeysRequest{Count: int32(hot)})
			return err
		})
	}
	g.Go(func() (err error) {
		v.handoffs, err = cc.GetHandoffs(gctx, &clickaggv1.GetHandoffsRequest{})
		return err
	})
	return v, g.Wait()
}

// statusRow is one process: its registrations merged (one process runs
// several roles), and its rollup when it owns partitions.
type statusRow struct {
	id, version, addr, httpAddr string
	roles                       []string
	owner                       *clickaggv1.OwnerStatus
}

// rows merges the members by ID and joins the owners' rollups; an owner
// the assignment names that is not registered (it just died) gets a row
// of its own, marked gone.
func (v statusView) rows() []*statusRow {
	byID := map[string]*statusRow{}
	var out []*statusRow
	row := func(id string) *statusRow {
		r := byID[id]
		if r == nil {
			r = &statusRow{id: id}
			byID[id] = r
			out = append(out, r)
		}
		return r
	}
	for _, m := range v.summary.GetMembers() {
		r := row(m.GetId())
		r.roles = append(r.roles, m.GetRole())
		r.version = cmp.Or(r.version, m.GetVersion())
		r.addr = cmp.Or(r.addr, m.GetAddr())
		r.httpAddr = cmp.Or(r.httpAddr, m.GetHttpAddr())
	}
	for _, o := range v.summary.GetOwners() {
		r := row(o.GetMember())
		r.owner = o
		if len(r.roles) == 0 {
			r.roles = []string{"aggregator (gone)"}
		}
	}
	for _, r := range out {
		slices.Sort(r.roles)
	}
	slices.SortFunc(out, func(a, b *statusRow) int { return cmp.Compare(a.id, b.id) })
	return out
}

// render writes the view; now is the clock the per-partition watermark
// delays are measured against (the coordinator measured the others).
func (v statusView) render(out io.Writer, now time.Time) error {
	s, t := v.summary, v.summary.GetTotals()
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	leader := cmp.Or(s.GetLeader(), "none")
	fmt.Fprintf(w, "cluster\t%d partitions: %d serving, %d restoring, %d unavailable; leader %s\n",
		s.GetPartitionCount(), t.GetServing(), t.GetRestoring(), t.GetUnavailable(), leader)
	fmt.Fprintf(w, "ingested\t%s clicks/s, %d accepted, %d rejected; %d of %d routers, each since it started\n",
		rate(t.GetIngestAcceptedPerSecond()), t.GetIngestAccepted(), t.GetIngestRejected(), len(s.GetRouters()),
		len(s.GetRouters())+len(s.GetUnavailableRouters()))
	fmt.Fprintf(w, "applied\t%s events/s, %d events, %d duplicates dropped, %d late\n",
		rate(t.GetEventsPerSecond()), t.GetEventsApplied(), t.GetDuplicatesDropped(), t.GetLateEvents())
	fmt.Fprintf(w, "freshness\tlag %d entries, oldest %s; watermark delay %s\n", t.GetLag(), seconds(t.GetMaxLagSeconds()), delay(t.GetWatermarkDelay()))
	fmt.Fprintf(w, "moves\t%d handoffs in progress, %d splits\n", t.GetHandoffsInProgress(), t.GetSplits())
	if len(s.GetUnavailable()) > 0 {
		fmt.Fprintf(w, "unavailable\tpartitions %s\n", int32List(s.GetUnavailable()))
	}
	if len(s.GetUnavailableRouters()) > 0 {
		fmt.Fprintf(w, "unavailable\trouters %s (not in the ingested sums)\n", strings.Join(s.GetUnavailableRouters(), ","))
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "MEMBER\tROLES\tVERSION\tGRPC\tHTTP\tPARTITIONS\tSERVING\tLAG\tOLDEST\tWM DELAY\tEVENTS/S")
	for _, r := range v.rows() {
		roles := strings.Join(r.roles, ",")
		if r.owner.GetDraining() {
			roles += " (draining)"
		}
		cols := []string{r.id, roles, dash(r.version), dash(r.addr), dash(r.httpAddr)}
		if o := r.owner; o != nil {
			cols = append(cols, strconv.Itoa(int(o.GetPartitions())), strconv.Itoa(int(o.GetServing())),
				strconv.FormatInt(o.GetLag(), 10), seconds(o.GetMaxLagSeconds()), delay(o.GetWatermarkDelay()), rate(o.GetEventsPerSecond()))
		} else {
			cols = append(cols, "-", "-", "-", "-", "-", "-")
		}
		fmt.Fprintln(w, strings.Join(cols, "\t"))
	}

	fmt.Fprintln(w)
	v.renderRouters(w, now)

	if v.hot != nil {
		fmt.Fprintln(w)
		if len(v.hot.GetKeys()) == 0 {
			fmt.Fprintln(w, "hot ads: none in the last minute")
		} else {
			fmt.Fprintln(w, "HOT AD\tPARTITION\tEVENTS/S\tSHARE")
			for _, k := range v.hot.GetKeys() {
				fmt.Fprintf(w, "%s\t%d\t%s\t%.1f%%\n", k.GetAdId(), k.GetPartition(), rate(k.GetEventsPerSecond()), 100*k.GetShare())
			}
		}
		if sp := v.hot.GetSplits(); len(sp) > 0 {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "SPLIT AD\tPARTITIONS\tFROM\tTO")
			for _, s := range sp {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.GetAdId(), int32List(s.GetPartitions()), minute(s.GetFrom()), cmp.Or(minute(s.GetTo()), "open"))
			}
		}
	}

	fmt.Fprintln(w)
	if moving := v.inProgress(); len(moving) == 0 {
		fmt.Fprintln(w, "handoffs in progress: none")
	} else {
		fmt.Fprintln(w, "HANDOFF\tFROM\tTO\tEPOCH\tPLANNED\tSTOPPED")
		for _, h := range moving {
			fmt.Fprintf(w, "partition %d\t%s\t%s\t%d\t%v\t%s\n", h.GetPartition(), dash(h.GetFromMember()), h.GetToMember(), h.GetEpoch(), h.GetPlanned(),
				h.GetStopped().AsTime().UTC().Format(time.TimeOnly))
		}
	}

	if v.full != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "PARTITION\tOWNER\tEPOCH\tSTATE\tLAG\tOLDEST\tWM DELAY\tEVENTS/S")
		reported := map[int32]*clickaggv1.PartitionStatus{}
		for _, ps := range v.full.GetPartitions() {
			reported[ps.GetPartition()] = ps
		}
		for p := range v.full.GetPartitionCount() {
			ps := reported[p]
			if ps == nil {
				owner := "-"
				if int(p) < len(v.assignment.GetPartitions()) {
					owner = dash(v.assignment.GetPartitions()[p].GetMember())
				}
				fmt.Fprintf(w, "%d\t%s\t-\tunavailable\t-\t-\t-\t-\n", p, owner)
				continue
			}
			wm := "-"
			if ps.GetWatermark() != nil {
				wm = delay(durationpb.New(now.Sub(ps.GetWatermark().AsTime())))
			}
			fmt.Fprintf(w, "%d\t%s\t%d\t%s\t%d\t%s\t%s\t%s\n", p, ps.GetMember(), ps.GetEpoch(), ps.GetState(), ps.GetLag(),
				seconds(ps.GetLagSeconds()), wm, rate(ps.GetEventsPerSecond()))
		}
	}
	return w.Flush()
}

// renderRouters writes one row per router: what it ingested since it
// started (UP ago), or that it did not answer.
func (v statusView) renderRouters(w io.Writer, now time.Time) {
	s := v.summary
	if len(s.GetRouters())+len(s.GetUnavailableRouters()) == 0 {
		fmt.Fprintln(w, "routers: none")
		return
	}
	type row struct {
		id   string
		cols string
	}
	var rows []row
	for _, r := range s.GetRouters() {
		up := now.Sub(r.GetStarted().AsTime()).Round(time.Second)
		rows = append(rows, row{r.GetMember(), fmt.Sprintf("%d\t%d\t%d\t%s\t%s", r.GetAccepted(), r.GetRejected(), r.GetAppendFailures(),
			rate(r.GetAcceptedPerSecond()), up)})
	}
	for _, id := range s.GetUnavailableRouters() {
		rows = append(rows, row{id, "unavailable\t-\t-\t-\t-"})
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Compare(a.id, b.id) })
	fmt.Fprintln(w, "ROUTER\tACCEPTED\tREJECTED\tFAILED APPENDS\tCLICKS/S\tUP")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\n", r.id, r.cols)
	}
}

// inProgress are the handoffs whose new owner does not serve yet, to the
// partition's current owner (an older unfinished record was superseded),
// by partition: the ones the summary counts.
func (v statusView) inProgress() []*clickaggv1.Handoff {
	epochs := map[int32]uint64{}
	for _, a := range v.assignment.GetPartitions() {
		epochs[a.GetPartition()] = a.GetEpoch()
	}
	var out []*clickaggv1.Handoff
	for _, h := range v.handoffs.GetHandoffs() {
		if h.GetServing() == nil && epochs[h.GetPartition()] == h.GetEpoch() {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b *clickaggv1.Handoff) int { return cmp.Compare(a.GetPartition(), b.GetPartition()) })
	return out
}

func dash(s string) string { return cmp.Or(s, "-") }

// rate prints events per second with one decimal.
func rate(r float64) string { return strconv.FormatFloat(r, 'f', 1, 64) }

// seconds prints a lag in seconds with one decimal.
func seconds(s float64) string { return strconv.FormatFloat(s, 'f', 1, 64) + "s" }

// delay prints a watermark delay to a tenth of a second; "-" when unknown
// (a partition without a watermark or a report).
func delay(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return strconv.FormatFloat(d.AsDuration().Seconds(), 'f', 1, 64) + "s"
}

// minute prints a split's bound; "" when unset.
func minute(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04")
}

func int32List(ps []int32) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}
