package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/shipper"
	"github.com/clickagg/clickagg/toplist"
)

// Config is one chaos run.
type Config struct {
	// Seed fixes the workload and the fault schedule: the same seed (and
	// the same Events, Faults, Kinds, Rate and cluster shape) replays both.
	Seed uint64
	// Events is the number of unique valid clicks.
	Events int
	// Faults is the number of faults the schedule holds; each of Kinds
	// at least once when Faults >= len(Kinds).
	Faults int
	// Kinds are the fault kinds drawn from; nil is every kind.
	Kinds []Kind
	// Rate is the clicks per second the workload offers: it paces the run
	// so that the faults meet traffic.
	Rate    int
	Cluster ClusterConfig
	// Out receives the schedule, progress and the summary.
	Out io.Writer
}

// Defaults of Config.
const (
	DefaultEvents = 1_000_000
	DefaultFaults = 12
	DefaultRate   = 8000
)

// Timeouts of the run's phases: generous, on 2 noisy cores.
const (
	// ingestRetryFor is how long a client keeps retrying one request
	// through the routers before the run fails.
	ingestRetryFor = 3 * time.Minute
	healthyWithin  = 3 * time.Minute
	completeWithin = 5 * time.Minute
	// idleWatermarkLag is the routers' -router.idle-watermark-lag: event
	// time follows the wall clock here, so once the workload stops the
	// last minute completes within this plus the aggregators' lateness.
	idleWatermarkLag = "15s"
	batchSize        = 500
	clients          = 4
	// resendEvery: every resendEvery-th request is sent again through
	// the next router, as if its answer had been lost.
	resendEvery = 50
	// verifyFor is how long the verify-under-faults phase queries.
	verifyFor = 30 * time.Second
	// defaultLeaseTTL is ClusterConfig's default LeaseTTL, which the
	// schedule needs to pause past it.
	defaultLeaseTTL = 5 * time.Second
)

// Run starts a cluster, drives the workload through it while the seeded
// fault schedule plays, checks every answer against the truth and
// returns the summary, printed to cfg.Out. The error is non-nil when an
// answer was wrong or the run could not finish its job (the cluster
// never became complete, a fault could not be injected).
//
// The phases, and what each may conclude:
//
//  1. Ingest under faults. Clients send batches round-robin over the
//     routers, retrying a failed request through the next one; a tenth of
//     the clicks go through `clickagg ship`. Queries every second through
//     both queryds, gRPC and HTTP, are kept: the data is not final, so the
//     only sound check is that no count is above the final truth, done at
//     the end.
//  2. Heal and wait until every partition serves with lag 0, the shipper
//     has shipped its whole log and every minute of the workload is
//     complete.
//  3. Exact checks: every (ad, minute) count, counts over windows with
//     filters, top 10 and top 100 with filters, through both queryds over
//     gRPC and HTTP, and the published top 100 of every minute in Redis.
//  4. Verify under faults: the data is final, so while an aggregator is
//     killed, another paused and a link reset, every answer that succeeds
//     must be exact; failures (UNAVAILABLE) are counted, not wrong. This is
//     what catches a queryd that answers partially.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Summary{}, err
	}
	r := &runner{cfg: cfg, out: cfg.Out, began: time.Now(), log: cfg.Cluster.Log}
	r.sum = Summary{Seed: cfg.Seed, FaultsByKind: map[Kind]int{}, Recovery: map[Kind][]time.Duration{}, Replay: replayCommand(cfg)}
	err = r.run(ctx)
	if err != nil {
		r.sum.Errors = append(r.sum.Errors, err.Error())
	}
	r.sum.AnswersChecked, r.sum.AnswersWrong, r.sum.AnswersFailed = r.tally.checked.Load(), r.tally.wrong.Load(), r.tally.failed.Load()
	r.sum.Wrong = r.tally.wrongs()
	r.sum.Restarts = r.restarts.Load()
	r.sum.Duration = time.Since(r.began)
	r.sum.Print(cfg.Out)
	switch {
	case r.sum.AnswersWrong > 0:
		return r.sum, fmt.Errorf("chaos: %d wrong answers of %d", r.sum.AnswersWrong, r.sum.AnswersChecked)
	case len(r.sum.Errors) > 0:
		return r.sum, fmt.Errorf("chaos: %s", strings.Join(r.sum.Errors, "; "))
	}
	return r.sum, nil
}

// span is how long the workload lasts at Rate, before it is stretched
// to end at a minute boundary.
func (cfg Config) span() time.Duration {
	return time.Duration(cfg.Events) * time.Second / time.Duration(cfg.Rate)
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Events == 0 {
		cfg.Events = DefaultEvents
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Kinds == nil {
		cfg.Kinds = slices.Clone(Kinds)
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Cluster.LeaseTTL == 0 {
		cfg.Cluster.LeaseTTL = defaultLeaseTTL
	}
	if cfg.Cluster.Log == nil {
		cfg.Cluster.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.Events < 1000:
		return cfg, fmt.Errorf("-events %d: at least 1000", cfg.Events)
	case cfg.Rate < 100:
		return cfg, fmt.Errorf("-rate %d: at least 100 clicks per second", cfg.Rate)
	case cfg.Faults < 0:
		return cfg, fmt.Errorf("-faults %d: must not be negative", cfg.Faults)
	case cfg.Cluster.Dir == "":
		return cfg, errors.New("-dir: required")
	}
	// Flags of the run, after any the cluster sets (the last flag wins).
	flags := map[string][]string{}
	for role, f := range cfg.Cluster.ExtraFlags {
		flags[role] = slices.Clone(f)
	}
	setDefault := func(role, flag, value string) {
		if !slices.ContainsFunc(flags[role], func(f string) bool { return strings.HasPrefix(f, flag+"=") }) {
			flags[role] = append(flags[role], flag+"="+value)
		}
	}
	setDefault("router", "-router.idle-watermark-lag", idleWatermarkLag)
	// The schedule's split and unsplit faults own the hot ad's splits, so
	// that they replay from the seed: the coordinators' own splitting by
	// rate (test/hotkey_test.go's subject) would split the hot ad first
	// and refuse the schedule's split.
	setDefault("coordinator", "-hotkey.split-rate", "1e12")
	setDefault("coordinator", "-hotkey.unsplit-rate", "0")
	cfg.Cluster.ExtraFlags = flags
	return cfg, nil
}

type runner struct {
	cfg   Config
	out   io.Writer
	log   *slog.Logger
	began time.Time
	sum   Summary
	tally tally

	cl     *Cluster
	w      *workload
	tr     *truth
	askers []asker
	coord  []clickaggv1.CoordinatorServiceClient
	conns  []*grpc.ClientConn
	// shipFile is the log `clickagg ship` tails.
	shipFile string

	mu  sync.Mutex
	obs []observation // mid-run answers
	// dups counts clicks sent again: the workload's re-sends, requests
	// sent twice and requests retried after an error.
	dups, invalid atomic.Int64
	// restarts counts processes restarted after exiting on their own.
	restarts    atomic.Int64
	superviseMu sync.Mutex
}

func (r *runner) printf(format string, args ...any) {
	fmt.Fprintf(r.out, "%7.1fs  "+format+"\n", append([]any{time.Since(r.began).Seconds()}, args...)...)
}

func (r *runner) run(ctx context.Context) error {
	if err := os.MkdirAll(r.cfg.Cluster.Dir, 0o755); err != nil {
		return err
	}
	r.printf("starting the cluster in %s", r.cfg.Cluster.Dir)
	cl, err := StartCluster(ctx, r.cfg.Cluster)
	if err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	r.cl = cl
	defer func() {
		for _, c := range r.conns {
			c.Close()
		}
		if err := cl.Close(); err != nil {
			r.log.Warn("close cluster", "err", err)
		}
	}()
	if err := r.waitHealthy(ctx); err != nil {
		return fmt.Errorf("cluster never healthy after start: %w", err)
	}
	if err := r.dial(); err != nil {
		return err
	}
	r.printf("cluster healthy: %d processes", len(cl.Processes()))

	// The shipper runs before the schedule is drawn: it is a target too.
	r.shipFile = filepath.Join(r.cfg.Cluster.Dir, "ship", "clicks.log")
	if err := os.MkdirAll(filepath.Dir(r.shipFile), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(r.shipFile, nil, 0o644); err != nil {
		return err
	}
	shipProc, err := cl.StartShipper(ctx, []string{r.shipFile})
	if err != nil {
		return fmt.Errorf("start shipper: %w", err)
	}

	// The workload starts on the next second and ends at a minute
	// boundary, so that its last minute completes soon after it.
	start := time.Now().Add(2 * time.Second).Truncate(time.Second)
	// The schedule is drawn over the span Events/Rate, not this one,
	// which depends on the clock: the same seed plays the same faults.
	end := start.Add(r.cfg.span()).Truncate(time.Minute).Add(time.Minute - 2*time.Second)
	r.w = newWorkload(r.cfg.Seed, r.cfg.Events, start, end.Sub(start))
	r.tr = newTruth(start.Unix() / 60)
	sched, err := makeSchedule(scheduleSpec{
		seed: r.cfg.Seed, faults: r.cfg.Faults, kinds: r.cfg.Kinds, span: r.cfg.span(),
		leaseTTL: r.cfg.Cluster.LeaseTTL, hotAd: hotAd, targets: cl.Targets,
	})
	if err != nil {
		return err
	}
	printSchedule(r.out, "schedule", r.cfg.Seed, sched)
	r.printf("workload: %d clicks over %v (%d ads, hot ad %s), from %s", r.cfg.Events, r.w.span.Round(time.Second), r.w.ads, hotAd, start.UTC().Format(time.TimeOnly))

	// Phase 1: ingest, faults and mid-run queries.
	qctx, stopQueries := context.WithCancel(ctx)
	queried := make(chan struct{})
	go func() { defer close(queried); r.queryMidRun(qctx) }()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.ingest(gctx) })
	var faultErrs []string
	var fmu sync.Mutex
	g.Go(func() error {
		r.playSchedule(gctx, sched, start, true, func(err error) {
			fmu.Lock()
			faultErrs = append(faultErrs, err.Error())
			fmu.Unlock()
		})
		return nil
	})
	err = g.Wait()
	stopQueries()
	<-queried
	r.sum.Errors = append(r.sum.Errors, faultErrs...)
	r.sum.Events, r.sum.Late, r.sum.Shipped = r.tr.valid, r.tr.late, r.tr.shipped
	r.sum.Duplicates, r.sum.Invalid = r.dups.Load(), r.invalid.Load()
	if err != nil {
		return err
	}
	r.printf("workload sent, schedule done: %d mid-run answers kept", len(r.obs))

	// Phase 2: complete.
	if err := r.waitComplete(ctx, shipProc); err != nil {
		return err
	}
	r.printf("every minute complete, lag 0")

	// Phase 3: exact checks, and the mid-run answers against the truth.
	if err := r.checkFinal(ctx); err != nil {
		return err
	}
	r.checkMidRun()
	r.printf("exact checks done: %d answers checked, %d wrong", r.tally.checked.Load(), r.tally.wrong.Load())

	// Phase 4: verify under faults.
	if err := r.verifyUnderFaults(ctx); err != nil {
		return err
	}
	r.printf("verify under faults done: %d answers checked, %d wrong, %d failed", r.tally.checked.Load(), r.tally.wrong.Load(), r.tally.failed.Load())
	return nil
}

func (r *runner) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, healthyWithin)
	defer cancel()
	return r.supervise(ctx)
}

// supervise waits for Cluster.WaitHealthy, restarting a process that
// exited on its own, as a supervisor (systemd, a kubelet) would: a
// clickagg process started while Redis or etcd is unreachable exits at
// once, by design. Each restart is printed and counted in the summary;
// the answers, not the exits, decide the run.
func (r *runner) supervise(ctx context.Context) error {
	for {
		err := r.cl.WaitHealthy(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		r.superviseMu.Lock()
		restarted := false
		for _, p := range r.cl.Processes() {
			crash := p.Crashed()
			if crash == nil {
				continue
			}
			restarted = true
			r.restarts.Add(1)
			r.printf("%s exited on its own (%v): restarting it", p.Name, crash)
			if err := p.Start(ctx); err != nil {
				r.printf("restart %s: %v", p.Name, err)
			}
		}
		r.superviseMu.Unlock()
		if !restarted {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

// dial connects to the queryds and coordinators directly: the checker's
// own traffic is not under test.
func (r *runner) dial() error {
	conn := func(addr string) (*grpc.ClientConn, error) {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err == nil {
			r.conns = append(r.conns, c)
		}
		return c, err
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	for i, addr := range r.cl.QuerydAddrs() {
		c, err := conn(addr)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("queryd-%d", i+1)
		r.askers = append(r.askers, grpcAsker{name: name, qc: clickaggv1.NewQueryServiceClient(c)})
		if i < len(r.cl.QuerydHTTP()) {
			r.askers = append(r.askers, httpAsker{name: name, base: r.cl.QuerydHTTP()[i], hc: hc})
		}
	}
	for _, addr := range r.cl.CoordinatorAddrs() {
		c, err := conn(addr)
		if err != nil {
			return err
		}
		r.coord = append(r.coord, clickaggv1.NewCoordinatorServiceClient(c))
	}
	if len(r.askers) == 0 || len(r.coord) == 0 {
		return errors.New("the cluster has no queryd or no coordinator")
	}
	return nil
}

// batch is one Ingest request and what its answer must say.
type batch struct {
	n      int
	events []*clickaggv1.ClickEvent
	// invalid maps the index of each invalid event to the word its
	// rejection reason must contain.
	invalid map[int]string
}

// ingest generates the workload in order, pacing it to its stream time,
// writes the shipped clicks to the shipper's log and hands batches to
// the clients.
func (r *runner) ingest(ctx context.Context) error {
	f, err := os.OpenFile(r.shipFile, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	ship := bufio.NewWriterSize(f, 1<<16)
	jobs := make(chan batch)
	g, gctx := errgroup.WithContext(ctx)
	for k := range clients {
		g.Go(func() error { return r.client(gctx, k, jobs) })
	}
	g.Go(func() error {
		defer close(jobs)
		b := batch{invalid: map[int]string{}}
		progress := r.cfg.Events / 10
		for i := range r.cfg.Events {
			c := r.w.click(i)
			r.tr.add(c)
			if c.shipped {
				if _, err := ship.WriteString(r.w.line(c)); err != nil {
					return err
				}
			} else {
				b.events = append(b.events, r.w.event(c))
			}
			if c.dupOf >= 0 {
				if d := r.w.click(c.dupOf); !d.shipped {
					b.events = append(b.events, r.w.event(d))
					r.dups.Add(1)
				}
			}
			if c.invalid != "" {
				ev, word := r.w.invalidEvent(i, c.invalid, time.Now())
				b.invalid[len(b.events)] = word
				b.events = append(b.events, ev)
				r.invalid.Add(1)
			}
			if len(b.events) < batchSize && i < r.cfg.Events-1 {
				continue
			}
			// Not before its stream time: event time follows the clock.
			if d := time.Until(r.w.at(i)); d > 0 {
				select {
				case <-time.After(d):
				case <-gctx.Done():
					return nil
				}
			}
			if err := ship.Flush(); err != nil {
				return err
			}
			b.n++
			select {
			case jobs <- b:
			case <-gctx.Done():
				return nil
			}
			b = batch{n: b.n, invalid: map[int]string{}}
			if progress > 0 && (i+1)%progress == 0 {
				r.printf("generated %d clicks", i+1)
			}
		}
		return ship.Flush()
	})
	return g.Wait()
}

// client sends batches, starting at router k: a failed request is retried
// with the same events through the next router, as clients do, and every
// resendEvery-th is sent again through another router as if its answer had
// been lost.
func (r *runner) client(ctx context.Context, k int, jobs <-chan batch) error {
	routers := r.cl.RouterAddrs()
	ics := make([]clickaggv1.IngestServiceClient, len(routers))
	for i, addr := range routers {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer c.Close()
		ics[i] = clickaggv1.NewIngestServiceClient(c)
	}
	for b := range jobs {
		want := int64(len(b.events) - len(b.invalid))
		at := (b.n + k) % len(ics)
		resent := false
		deadline := time.Now().Add(ingestRetryFor)
		for {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := ics[at].Ingest(cctx, &clickaggv1.IngestRequest{Events: b.events})
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				if time.Now().After(deadline) {
					return fmt.Errorf("request %d: routers failing for %v: %w", b.n, ingestRetryFor, err)
				}
				r.dups.Add(int64(len(b.events)))
				at = (at + 1) % len(ics)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			r.checkIngest(b, resp, want)
			if b.n%resendEvery == 0 && !resent && len(ics) > 1 {
				resent = true
				r.dups.Add(int64(len(b.events)))
				at = (at + 1) % len(ics)
				continue
			}
			break
		}
	}
	return nil
}

// checkIngest checks a router's answer: every valid event accepted,
// every invalid one refused with a reason that names what is wrong.
func (r *runner) checkIngest(b batch, resp *clickaggv1.IngestResponse, want int64) {
	why := ""
	if resp.Accepted != want {
		why = fmt.Sprintf("request %d: accepted %d, want %d", b.n, resp.Accepted, want)
	}
	for _, rej := range resp.Rejected {
		word, ok := b.invalid[int(rej.Index)]
		if !ok {
			why = fmt.Sprintf("request %d: valid event %d refused: %s", b.n, rej.Index, rej.Reason)
		} else if !strings.Contains(rej.Reason, word) {
			why = fmt.Sprintf("request %d: event %d refused with %q, want a reason about %s", b.n, rej.Index, rej.Reason, word)
		}
	}
	if len(resp.Rejected) != len(b.invalid) && why == "" {
		why = fmt.Sprintf("request %d: %d refused, want %d", b.n, len(resp.Rejected), len(b.invalid))
	}
	r.tally.check("ingest", name("routers"), why)
}

// playSchedule injects each fault at its time from start, heals it after
// its duration and measures the recovery.
// Only the schedule's faults (record) go into the summary's table.
func (r *runner) playSchedule(ctx context.Context, sched []Fault, start time.Time, record bool, report func(error)) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, f := range sched {
		wg.Go(func() {
			select {
			case <-time.After(time.Until(start.Add(f.At))):
			case <-ctx.Done():
				return
			}
			rec, err := r.fault(ctx, f)
			if err != nil {
				report(fmt.Errorf("%s: %w", f, err))
				return
			}
			if !record {
				return
			}
			mu.Lock()
			r.sum.FaultsByKind[f.Kind]++
			r.sum.Recovery[f.Kind] = append(r.sum.Recovery[f.Kind], rec)
			mu.Unlock()
		})
	}
	wg.Wait()
}

// fault injects f, heals it after f.Duration and returns how long the
// cluster took to be healthy after the heal.
func (r *runner) fault(ctx context.Context, f Fault) (time.Duration, error) {
	r.printf("inject %s", f)
	heal, err := r.cl.Inject(ctx, f)
	if err != nil {
		return 0, fmt.Errorf("inject: %w", err)
	}
	select {
	case <-time.After(f.Duration):
	case <-ctx.Done():
	}
	// Heal even when the run is cancelled: the cluster is closed after.
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healthyWithin)
	defer cancel()
	healed := time.Now()
	// A heal is retried, as a supervisor restarts a crashed process: a
	// process restarted while Redis or etcd is down exits (it fails fast
	// at start), and heal starts it again.
	for try := 1; ; try++ {
		err := heal(hctx)
		if err == nil {
			break
		}
		if hctx.Err() != nil {
			return 0, fmt.Errorf("heal (%d tries): %w", try, err)
		}
		r.printf("heal %s: %v; again", f, err)
		time.Sleep(time.Second)
	}
	if ctx.Err() != nil {
		return 0, ctx.Err() // healed; the run is over
	}
	if err := r.supervise(hctx); err != nil {
		return 0, fmt.Errorf("not healthy %v after the heal: %w", healthyWithin, err)
	}
	rec := time.Since(healed)
	r.printf("healed %s %v, healthy after %v", f.Kind, f.Targets, rec.Round(10*time.Millisecond))
	return rec, nil
}

// queryMidRun asks questions about recent minutes about every second
// through every queryd, gRPC and HTTP, and keeps the answers.
func (r *runner) queryMidRun(ctx context.Context) {
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 0x9e7))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now().Unix() / 60
		var qs []question
		for range 4 {
			from := max(r.tr.firstMin, now-int64(rng.IntN(4)))
			q := question{ad: min(rng.IntN(r.w.ads), rng.IntN(50)), from: from, to: now + 1, f: randomFilter(rng)}
			qs = append(qs, q)
		}
		qs = append(qs, question{from: max(r.tr.firstMin, now-2), to: now + 1, n: 10, f: randomFilter(rng)})
		for _, a := range r.askers {
			for _, q := range qs {
				actx, cancel := context.WithTimeout(ctx, 5*time.Second)
				ans, err := a.ask(actx, q)
				cancel()
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					r.tally.failed.Add(1)
					continue
				}
				r.mu.Lock()
				r.obs = append(r.obs, observation{q: q, a: ans, by: a})
				r.mu.Unlock()
			}
		}
	}
}

// randomFilter is none half the time, else a sampled value or two.
func randomFilter(rng *rand.Rand) filter {
	f := noFilter
	switch rng.IntN(6) {
	case 0:
		f.country = sampleCountries[rng.IntN(len(sampleCountries))]
	case 1:
		f.user = rng.IntN(sampleUsers)
	case 2:
		f.ip = rng.IntN(sampleIPs)
		if rng.IntN(2) == 0 {
			f.country = sampleCountries[0]
		}
	}
	return f
}

// checkMidRun checks the answers kept during the run against the final
// truth: none may be above it.
func (r *runner) checkMidRun() {
	r.mu.Lock()
	obs := r.obs
	r.mu.Unlock()
	for _, o := range obs {
		r.tally.check("mid-run", o.by, r.tr.notAbove(o.q, o.a))
	}
	r.printf("checked %d mid-run answers: none may be above the truth", len(obs))
}

// waitComplete waits until the shipper has shipped its whole log, every
// partition serves with lag 0 and every minute of the workload is
// complete on every queryd.
func (r *runner) waitComplete(ctx context.Context, shipProc *Process) error {
	if err := r.waitHealthy(ctx); err != nil {
		return fmt.Errorf("cluster not healthy after the schedule: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, completeWithin)
	defer cancel()
	poll := func(what string, cond func() error) error {
		var last error
		for {
			if last = cond(); last == nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: not within %v: %w", what, completeWithin, last)
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	if err := poll("shipper caught up", func() error { return shipCaughtUp(shipProc, r.shipFile) }); err != nil {
		return err
	}
	if err := poll("lag 0", func() error { return r.caughtUp(ctx) }); err != nil {
		return err
	}
	return poll("every minute complete", func() error {
		for _, a := range r.askers {
			g, ok := a.(grpcAsker)
			if !ok {
				continue
			}
			resp, err := g.qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{
				AdId: hotAd, From: minuteTS(r.tr.firstMin), To: minuteTS(r.tr.lastMin + 1),
			})
			if err != nil {
				return err
			}
			if !resp.Complete {
				return fmt.Errorf("%s: minutes [%d, %d] not complete", g, r.tr.firstMin, r.tr.lastMin)
			}
		}
		return nil
	})
}

// shipCaughtUp is nil when the shipper p has acknowledged (and
// checkpointed) every byte of file, by its -ship.checkpoint.
func shipCaughtUp(p *Process, file string) error {
	var ckpt string
	for _, a := range p.args {
		if v, ok := strings.CutPrefix(a, "-ship.checkpoint="); ok {
			ckpt = v
		}
	}
	if ckpt == "" {
		return fmt.Errorf("%s: no -ship.checkpoint", p.Name)
	}
	b, err := os.ReadFile(ckpt)
	if err != nil {
		return err
	}
	var cf struct {
		Files map[string]shipper.Position `json:"files"`
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		return fmt.Errorf("%s: %w", ckpt, err)
	}
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	pos, ok := cf.Files[file]
	if st, isUnix := fi.Sys().(*syscall.Stat_t); !ok || (isUnix && pos.Ino != st.Ino) || pos.Offset != fi.Size() {
		return fmt.Errorf("%s: shipped %d bytes of %d", p.Name, pos.Offset, fi.Size())
	}
	return nil
}

// caughtUp is nil when every partition serves and has applied its whole
// log, as a coordinator sees it.
func (r *runner) caughtUp(ctx context.Context) error {
	var err error
	for _, cc := range r.coord {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var st *clickaggv1.GetClusterStatusResponse
		st, err = cc.GetClusterStatus(cctx, &clickaggv1.GetClusterStatusRequest{})
		cancel()
		if err != nil {
			continue
		}
		if len(st.Unavailable) > 0 {
			return fmt.Errorf("partitions %v unavailable", st.Unavailable)
		}
		if len(st.Partitions) != int(st.PartitionCount) {
			return fmt.Errorf("%d partitions reported, want %d", len(st.Partitions), st.PartitionCount)
		}
		for _, p := range st.Partitions {
			if p.State != "serving" || p.Lag > 0 {
				return fmt.Errorf("partition %d: state %s lag %d", p.Partition, p.State, p.Lag)
			}
		}
		return nil
	}
	return err
}

// windows are the multi-minute windows the exact checks ask about.
func (r *runner) windows() [][2]int64 {
	f0, end := r.tr.firstMin, r.tr.lastMin+1
	n := end - f0
	all := [][2]int64{{f0, end}, {f0, f0 + 1}, {f0 + n/2, f0 + n/2 + 1}, {f0 + n/4, f0 + n/2}, {f0 + n/2, end}, {end - 1, end}}
	var out [][2]int64
	for _, w := range all {
		if w[1] > w[0] && !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	return out
}

// checkFinal asks every exact question through every queryd.
func (r *runner) checkFinal(ctx context.Context) error {
	// Every (ad, minute), spread over the gRPC askers.
	ads, minutes, counts := r.tr.adMinutes()
	var grpcs []asker
	for _, a := range r.askers {
		if _, ok := a.(grpcAsker); ok {
			grpcs = append(grpcs, a)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range ads {
		a := grpcs[i%len(grpcs)]
		q := question{ad: ads[i], from: minutes[i], to: minutes[i] + 1, f: noFilter}
		want := counts[i]
		g.Go(func() error {
			ans, err := askRetry(gctx, a, q)
			if err != nil {
				return err
			}
			why := ""
			if ans.count != want || !ans.complete {
				why = fmt.Sprintf("%s = %d complete=%v, want %d complete", q, ans.count, ans.complete, want)
			}
			r.tally.check("final", a, why)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	r.printf("checked %d (ad, minute) counts", len(ads))

	// Every ad id the workload could draw, over the whole run: a count
	// in a minute where the truth has none, or of an ad never clicked,
	// is not among the (ad, minute) pairs above.
	f0, end := r.tr.firstMin, r.tr.lastMin+1
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(8)
	for ad := range r.w.ads {
		a := grpcs[ad%len(grpcs)]
		want := r.expect(question{ad: ad, from: f0, to: end, f: noFilter})
		g.Go(func() error {
			ans, err := askRetry(gctx, a, question{ad: ad, from: f0, to: end, f: noFilter})
			if err != nil {
				return err
			}
			r.tally.check("final", a, want(ans))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	r.printf("checked the whole-run count of all %d ad ids", r.w.ads)

	// Windows, filters and top lists on every asker.
	qs := r.finalQuestions()
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, q := range qs {
		want := r.expect(q)
		for _, a := range r.askers {
			g.Go(func() error {
				ans, err := askRetry(gctx, a, q)
				if err != nil {
					return err
				}
				r.tally.check("final", a, want(ans))
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	r.printf("checked %d window, filter and top questions on %d queryd APIs", len(qs), len(r.askers))
	return r.checkPublished(ctx)
}

// askRetry asks q, again after a failure: the cluster is healthy and
// complete, but a process may be slow on 2 busy cores.
func askRetry(ctx context.Context, a asker, q question) (answer, error) {
	var err error
	for try := range 5 {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		var ans answer
		ans, err = a.ask(actx, q)
		cancel()
		if err == nil || ctx.Err() != nil {
			return ans, err
		}
		time.Sleep(time.Duration(try+1) * time.Second)
	}
	return answer{}, fmt.Errorf("%s: %s: %w", a, q, err)
}

// finalQuestions are the exact questions besides every (ad, minute).
func (r *runner) finalQuestions() []question {
	var qs []question
	f0, end := r.tr.firstMin, r.tr.lastMin+1
	top := r.tr.top(f0, end, 10, noFilter)
	for _, f := range filters() {
		ads := []int{10_000_000} // an ad without clicks
		for _, a := range top {
			ads = append(ads, parseAd(a.AdId))
		}
		for _, a := range r.tr.top(f0, end, 5, f) {
			if ad := parseAd(a.AdId); !slices.Contains(ads, ad) {
				ads = append(ads, ad)
			}
		}
		for _, w := range r.windows() {
			for _, ad := range ads {
				qs = append(qs, question{ad: ad, from: w[0], to: w[1], f: f})
			}
			qs = append(qs, question{from: w[0], to: w[1], n: 10, f: f}, question{from: w[0], to: w[1], n: 100, f: f})
		}
	}
	return qs
}

// expect computes q's true answer once and returns the check of an
// answer against it. The data is final when it is used, so the answer
// must also say it is complete.
func (r *runner) expect(q question) func(answer) string {
	if q.n == 0 {
		want := r.tr.count(q.ad, q.from, q.to, q.f)
		return func(a answer) string {
			if a.count != want || !a.complete {
				return fmt.Sprintf("%s = %d complete=%v, want %d complete", q, a.count, a.complete, want)
			}
			return ""
		}
	}
	want := r.tr.top(q.from, q.to, q.n, q.f)
	return func(a answer) string {
		if d := firstDiff(a.ads, want); d != "" || !a.complete {
			return fmt.Sprintf("%s: %d ads complete=%v, want %d complete; %s", q, len(a.ads), a.complete, len(want), d)
		}
		return ""
	}
}

// checkPublished compares the published top 100 of every minute of the
// workload with the truth. Late clicks correct a published minute
// (package queryd republishes it), and the corrections may still be on
// their way when the counts are final, so each minute gets a minute to
// converge before its list is counted wrong.
func (r *runner) checkPublished(ctx context.Context) error {
	rdb := r.cl.RedisClient()
	deadline := time.Now().Add(time.Minute)
	for m := r.tr.firstMin; m <= r.tr.lastMin; m++ {
		want := r.tr.top(m, m+1, 100, noFilter)
		for {
			why := ""
			raw, err := rdb.Get(ctx, toplist.Key(redisPrefix, m)).Bytes()
			if err != nil {
				why = fmt.Sprintf("published minute %d: %v", m, err)
			} else {
				var pub clickaggv1.GetPopularAdsResponse
				if err := protojson.Unmarshal(raw, &pub); err != nil {
					return fmt.Errorf("published minute %d: %w", m, err)
				}
				if d := firstDiff(pub.Ads, want); d != "" || !pub.Complete {
					why = fmt.Sprintf("published minute %d: complete=%v, %s", m, pub.Complete, d)
				}
			}
			if why == "" || time.Now().After(deadline) {
				r.tally.check("final", name("published top 100 in redis"), why)
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	r.printf("checked the published top 100 of %d minutes", r.tr.lastMin-r.tr.firstMin+1)
	return nil
}

// redisPrefix is the clickagg processes' -redis.prefix (the default).
const redisPrefix = "clickagg"

// verifyUnderFaults queries the final data while an aggregator is
// killed, another paused past its lease and a third's link reset: every
// answer that succeeds must be exact.
func (r *runner) verifyUnderFaults(ctx context.Context) error {
	faults := r.verifyFaults()
	qs := r.finalQuestions()
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 0x7e5))
	rng.Shuffle(len(qs), func(i, j int) { qs[i], qs[j] = qs[j], qs[i] })
	qs = qs[:min(len(qs), 300)]
	wants := make([]func(answer) string, len(qs))
	for i, q := range qs {
		wants[i] = r.expect(q)
	}
	printSchedule(r.out, "verify-under-faults schedule", r.cfg.Seed, faults)
	qctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for k := range 4 {
		wg.Go(func() {
			for i := k; qctx.Err() == nil; i += 4 {
				q, a := qs[i%len(qs)], r.askers[(i/len(qs)+k)%len(r.askers)]
				actx, cancel := context.WithTimeout(qctx, 10*time.Second)
				ans, err := a.ask(actx, q)
				cancel()
				if qctx.Err() != nil {
					return
				}
				if err != nil {
					failed.Add(1)
					r.tally.failed.Add(1)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				r.tally.check("verify", a, wants[i%len(qs)](ans))
				// Paced: the cores are shared with the cluster under test.
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	var errs []string
	var emu sync.Mutex
	start := time.Now()
	r.playSchedule(ctx, faults, start, false, func(err error) {
		emu.Lock()
		errs = append(errs, err.Error())
		emu.Unlock()
	})
	if d := time.Until(start.Add(verifyFor)); d > 0 {
		time.Sleep(d)
	}
	stop()
	wg.Wait()
	r.printf("verify under faults: %d queries failed (not wrong)", failed.Load())
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// verifyFaults are the faults of the verify-under-faults phase: on the
// aggregators, the queryds' sources of answers.
func (r *runner) verifyFaults() []Fault {
	pick := func(k Kind, skip ...string) string {
		for _, t := range r.cl.Targets(k) {
			if strings.HasPrefix(t, "aggregator-") && !slices.Contains(skip, t) {
				return t
			}
		}
		return ""
	}
	var out []Fault
	killed := pick(KillOne)
	reset := pick(NetReset, killed)
	if killed != "" {
		out = append(out, Fault{At: 2 * time.Second, Kind: KillOne, Targets: []string{killed}, Duration: 3 * time.Second})
	}
	if paused := pick(Pause, killed, reset); paused != "" {
		out = append(out, Fault{At: 12 * time.Second, Kind: Pause, Targets: []string{paused}, Duration: r.cfg.Cluster.LeaseTTL + 2*time.Second})
	}
	if reset != "" {
		out = append(out, Fault{At: 6 * time.Second, Kind: NetReset, Targets: []string{reset}, Duration: 4 * time.Second})
	}
	slices.SortFunc(out, func(a, b Fault) int { return int(a.At - b.At) })
	return out
}

// replayCommand is the command line that replays cfg.
func replayCommand(cfg Config) string {
	kinds := kindList(cfg.Kinds)
	if kinds == kindList(Kinds) {
		kinds = "all"
	}
	args := []string{"clickagg", "chaos", "run",
		fmt.Sprintf("-seed=%d", cfg.Seed),
		fmt.Sprintf("-events=%d", cfg.Events),
		fmt.Sprintf("-faults=%d", cfg.Faults),
		fmt.Sprintf("-rate=%d", cfg.Rate),
		"-kinds=" + kinds,
		fmt.Sprintf("-partitions=%d", cfg.Cluster.Partitions),
	}
	return strings.Join(args, " ")
}
