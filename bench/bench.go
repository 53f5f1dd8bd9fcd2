package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/pprof/profile"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/clickagg/clickagg/grpcclient"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/tally"
)

// Targets are the cluster under test and the servers around it.
type Targets struct {
	// Router, Queryd and Coordinator are gRPC addresses.
	Router, Queryd, Coordinator string
	// ClusterRedis is the cluster's Redis, read only for its CPU time; empty
	// when unknown.
	ClusterRedis string
	// ClusterRedisPassword is its default user's password, if any.
	ClusterRedisPassword string
	// RedisNodes are every server of the cluster's Redis (primaries and
	// replicas), all with ClusterRedisPassword, for RunTopology.
	RedisNodes []string
	// Redis serves the naive baseline and the snapshot measurement. Every
	// key they write has a prefix of its own and is deleted afterwards.
	Redis string
	// RedisPassword is its default user's password, if any.
	RedisPassword string
	// InProcess says the cluster runs in this process: its heap and CPU
	// profile are then this process's.
	InProcess bool
	// StopCluster, when set, stops the cluster once it has been measured,
	// so that the baselines get the machine and its memory to themselves.
	StopCluster func()
	// Tally is the aggregators' tally.Options, for the in-process limit.
	Tally tally.Options
	// Command is the command line, for the report.
	Command string
	// Settings describe the cluster for the report.
	Settings []Setting
	// DialOptions are how every connection of the bench to the cluster
	// is made (TLS, a bearer token); none is plaintext.
	DialOptions []grpc.DialOption
}

// dial connects to the cluster member at addr with t.DialOptions.
func (t *Targets) dial(addr string) (*grpc.ClientConn, error) {
	opts := t.DialOptions
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return grpc.NewClient(addr, grpcclient.With(opts...)...)
}

// dialStreams connects n times to the router, a connection per
// IngestStream.
func (t *Targets) dialStreams(n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, n)
	for i := range conns {
		c, err := t.dial(t.Router)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return nil, fmt.Errorf("dial router: %w", err)
		}
		conns[i] = c
	}
	return conns, nil
}

// run is one benchmark run.
type run struct {
	cfg        Config
	targets    Targets
	names      Names
	kinds      []queryKind
	spanStart  int64 // Unix ms, minute-aligned
	spanEnd    int64
	partitions int
	ingestMid  int64 // a minute of the measured window, for 1-minute queries
	// started is when Run started, runStart when the load did: the
	// timeline counts from it.
	started  time.Time
	runStart time.Time
	// loadAtStart is the 1-minute load average when the run started.
	loadAtStart float64

	coord      clickaggv1.CoordinatorServiceClient
	query      clickaggv1.QueryServiceClient
	ingest     clickaggv1.IngestServiceClient
	clusterRdb *redis.Client
	progress   *progress

	// queryProfile is the CPU profile of the cluster's query phase.
	queryProfile []byte

	// batchTimes is the sweep time of every batch sent, in the order the
	// one generator made them: with the workload it reproduces every event.
	batchTimes []int64

	mu       sync.Mutex
	probes   []Event // acknowledged probes
	timeline Timeline
}

func (r *run) redisCPU(ctx context.Context) float64 {
	if r.clusterRdb == nil {
		return -1
	}
	return redisCPUOf(ctx, r.clusterRdb)
}

// machineCPU returns the CPU seconds every process of the machine has
// used (busy time from /proc/stat), and the seconds a hypervisor gave this
// machine's CPUs to others (steal); NaN when unknown.
func machineCPU() (busy, steal float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return math.NaN(), math.NaN()
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return math.NaN(), math.NaN()
	}
	// user nice system idle iowait irq softirq steal guest guest_nice:
	// idle and iowait are not busy, guest time is already in user, and
	// steal is time this machine did not get.
	for i, v := range f[1:9] {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return math.NaN(), math.NaN()
		}
		switch i {
		case 0, 1, 2, 5, 6:
			busy += x
		case 7:
			steal += x
		}
	}
	return busy / 100, steal / 100 // USER_HZ is 100 on Linux
}

// loadAverage returns the 1-minute load average, NaN when unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return math.NaN()
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return math.NaN()
	}
	x, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return math.NaN()
	}
	return x
}

// cpuShares is the CPU time, in seconds, used so far by this process and
// its children (the redis-servers it started), by kernel threads (which do,
// among other things, the writing and syncing of Redis's AOF), by the
// whole machine, and taken by the hypervisor (steal).
type cpuShares struct {
	self, kernel, machine, steal float64
}

// readCPUShares reads /proc. Processes that ended since the last reading
// are missing from self and kernel but not from machine, so a short-lived
// process counts as another process: what it is.
func readCPUShares() cpuShares {
	s := cpuShares{self: math.NaN(), kernel: math.NaN()}
	s.machine, s.steal = machineCPU()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return s
	}
	me := os.Getpid()
	s.self, s.kernel = 0, 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime stime: comm may hold spaces and
		// parentheses, so the fields are counted after its last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		cpu := (utime + stime) / 100 // USER_HZ
		switch {
		case pid == me || ppid == me:
			s.self += cpu
		case pid == 2 || ppid == 2:
			s.kernel += cpu
		}
	}
	return s
}

// processCPU returns the CPU seconds this process has used.
func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// Run benchmarks the cluster at t and the two baselines, prints progress
// and the table to out, and writes the report files unless cfg.Out is
// empty.
func Run(ctx context.Context, cfg Config, t Targets, out io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !t.InProcess {
		cfg.ProfileDuration = 0
	}
	r := newRun(cfg, t, out)
	defer r.progress.stop()
	rdb, closeClients, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer closeClients()
	mach := machine(ctx, r.clusterRdb, rdb)
	m, err := r.measureAll(ctx, rdb)
	if err != nil {
		return nil, err
	}
	r.progress.stop()
	rep := r.report(m)
	rep.Machine = mach
	if err := r.addProfiles(rep, m); err != nil {
		return nil, err
	}
	if err := rep.WriteText(out); err != nil {
		return rep, err
	}
	if cfg.Out != "" {
		rep.Chart = cfg.Chart
		svg := ChartSVG(r.timeline, "clickagg bench: throughput and freshness")
		if err := rep.WriteFiles(cfg.Out, svg); err != nil {
			return rep, err
		}
		fmt.Fprintf(out, "\nreport written to %s, chart to %s\n", cfg.Out, cfg.Chart)
	}
	return rep, nil
}

// newRun is a run of cfg on t, starting now, showing its progress on out.
func newRun(cfg Config, t Targets, out io.Writer) *run {
	r := &run{
		started:     time.Now(),
		loadAtStart: loadAverage(),
		cfg:         cfg,
		targets:     t,
		names:       Names{Tag: strconv.FormatUint(rand.Uint64()%(36*36*36*36*36), 36)},
	}
	r.spanEnd = r.started.UnixMilli() / 60_000 * 60_000
	r.spanStart = r.spanEnd - cfg.Span.Milliseconds()
	r.kinds = queryKinds(int64(cfg.Span / time.Minute))
	live := cfg.View == "on" || (cfg.View == "auto" && isTerminal(out))
	r.progress = newProgress(out, live, cfg.View != "off")
	return r
}

// connect makes the run's clients of the cluster and of its Redis, and
// returns the baseline Redis's (nil without t.Redis); closeClients closes
// them all.
func (r *run) connect(ctx context.Context) (rdb *redis.Client, closeClients func(), err error) {
	t := r.targets
	var closers []func() error
	closeClients = func() {
		for _, c := range slices.Backward(closers) {
			c()
		}
	}
	defer func() {
		if err != nil {
			closeClients()
		}
	}()
	conn, err := t.dial(t.Queryd)
	if err != nil {
		return nil, nil, fmt.Errorf("dial queryd: %w", err)
	}
	closers = append(closers, conn.Close)
	r.query = clickaggv1.NewQueryServiceClient(conn)
	cconn := conn
	if t.Coordinator != t.Queryd {
		if cconn, err = t.dial(t.Coordinator); err != nil {
			return nil, nil, fmt.Errorf("dial coordinator: %w", err)
		}
		closers = append(closers, cconn.Close)
	}
	r.coord = clickaggv1.NewCoordinatorServiceClient(cconn)
	// Probes use a connection of their own, not one of the loaded streams'.
	pconn, err := t.dial(t.Router)
	if err != nil {
		return nil, nil, fmt.Errorf("dial router: %w", err)
	}
	closers = append(closers, pconn.Close)
	r.ingest = clickaggv1.NewIngestServiceClient(pconn)
	if t.ClusterRedis != "" {
		r.clusterRdb = redis.NewClient(&redis.Options{Addr: t.ClusterRedis, Password: t.ClusterRedisPassword})
		closers = append(closers, r.clusterRdb.Close)
	}
	if t.Redis != "" {
		rdb = redis.NewClient(&redis.Options{Addr: t.Redis, Password: t.RedisPassword, PoolSize: 2 * r.cfg.Streams * r.cfg.Inflight, ReadTimeout: 2 * time.Minute})
		closers = append(closers, rdb.Close)
		if err := rdb.Ping(ctx).Err(); err != nil {
			return nil, nil, fmt.Errorf("baseline redis %s: %w", t.Redis, err)
		}
	}
	return rdb, closeClients, nil
}

// measurements are what a run measured; a baseline's is nil when it did
// not run.
type measurements struct {
	ing                   *ingestResult
	cq                    map[string]*queryResult
	ip                    *inprocResult
	nv                    *naiveResult
	heapBefore, heapAfter uint64
	heapProfile           []byte
}

// measureAll measures the cluster, its heap and its queries, stops it,
// and measures the baselines, rdb serving the naive one.
func (r *run) measureAll(ctx context.Context, rdb *redis.Client) (*measurements, error) {
	r.progress.set("cluster", "waiting for every partition to be served")
	st, err := r.waitServing(ctx)
	if err != nil {
		return nil, err
	}
	r.partitions = st.partitions
	m := &measurements{}
	if r.targets.InProcess {
		m.heapBefore = liveHeap()
	}
	if m.ing, err = r.runCluster(ctx); err != nil {
		return nil, err
	}
	r.ingestMid = m.ing.ingestMid
	if r.targets.InProcess {
		r.progress.set("cluster", "measuring the heap")
		m.heapAfter = liveHeap()
		var buf bytes.Buffer
		if err := pprof.Lookup("heap").WriteTo(&buf, 0); err == nil {
			m.heapProfile = buf.Bytes()
		}
	}
	if m.cq, err = r.runClusterQueries(ctx); err != nil {
		return nil, err
	}
	if r.targets.StopCluster != nil {
		r.progress.set("cluster", "stopping")
		r.targets.StopCluster()
	}
	if r.cfg.Inproc {
		if m.ip, err = r.runInproc(ctx, rdb, m.ing.rate); err != nil {
			return nil, fmt.Errorf("in-process limit: %w", err)
		}
	}
	if r.cfg.Naive && rdb != nil {
		if m.nv, err = r.runNaive(ctx, rdb); err != nil {
			return nil, fmt.Errorf("naive baseline: %w", err)
		}
	}
	return m, nil
}

// addProfiles adds the profiles' tops and shares to rep, and writes the
// raw profiles to cfg.PprofDir.
func (r *run) addProfiles(rep *Report, m *measurements) error {
	var recoveryProfile []byte
	if m.ip != nil {
		recoveryProfile = m.ip.recoveryProfile
	}
	rep.Profiles = profiles(m.ing.cpuProfile, r.queryProfile, m.heapProfile, recoveryProfile)
	if r.cfg.PprofDir != "" {
		if err := writeProfiles(r.cfg.PprofDir, map[string][]byte{"ingest.pprof": m.ing.cpuProfile, "queries.pprof": r.queryProfile, "heap.pprof": m.heapProfile, "recovery.pprof": recoveryProfile}); err != nil {
			return err
		}
	}
	if share := profileShares(m.ing.cpuProfile); share != "" {
		rep.Notes = append(rep.Notes, "CPU of this process while the load added keys (profiled, the pipeline saturated at the targets' scale), by the part of the pipeline on the stack (parts overlap): "+share+".")
	}
	if share := profileShares(r.queryProfile); share != "" {
		rep.Notes = append(rep.Notes, "CPU of this process while the cluster's queries were measured (profiled; nothing else ran but the cluster's own background work), by the part of the pipeline on the stack (parts overlap): "+share+".")
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress shows what the run is doing: on a terminal one line rewritten
// every second, otherwise one line per second.
type progress struct {
	out    io.Writer
	live   bool
	on     bool
	start  time.Time
	mu     sync.Mutex
	phase  string
	detail string
	shown  string // the phase of the last line printed
	done   chan struct{}
	once   sync.Once
	exited chan struct{}
}

func newProgress(out io.Writer, live, on bool) *progress {
	p := &progress{out: out, live: live, on: on, start: time.Now(), done: make(chan struct{}), exited: make(chan struct{})}
	go p.loop()
	return p
}

func (p *progress) set(phase, detail string) {
	p.mu.Lock()
	p.phase, p.detail = phase, detail
	p.mu.Unlock()
}

func (p *progress) loop() {
	defer close(p.exited)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			if p.live && p.shown != "" {
				fmt.Fprintln(p.out)
			}
			return
		case <-t.C:
		}
		p.mu.Lock()
		phase, detail := p.phase, p.detail
		p.mu.Unlock()
		if !p.on || phase == "" {
			continue
		}
		line := fmt.Sprintf("[%4.0fs] %s: %s", time.Since(p.start).Seconds(), phase, detail)
		switch {
		case !p.live:
			fmt.Fprintln(p.out, line)
		case phase != p.shown && p.shown != "":
			fmt.Fprint(p.out, "\n"+line)
		default:
			fmt.Fprint(p.out, "\r\033[K"+line)
		}
		p.shown = phase
	}
}

func (p *progress) stop() {
	p.once.Do(func() { close(p.done) })
	<-p.exited
}

// machine describes this machine.
func machine(ctx context.Context, clusterRdb, rdb *redis.Client) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				m.MemoryBytes = kb << 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.OS += ", Linux " + strings.TrimSpace(string(b))
	}
	for _, c := range []*redis.Client{clusterRdb, rdb} {
		if c == nil {
			continue
		}
		if v, err := infoField(ctx, c, "server", "redis_version"); err == nil {
			m.Redis = v
			break
		}
	}
	return m
}

// profileGroups attribute CPU to the parts of the pipeline: the share of
// samples whose stack passes through each.
var profileGroups = map[string][]string{
	"load generator and bench client": {"github.com/clickagg/clickagg/bench."},
	"router":                          {"github.com/clickagg/clickagg/router."},
	"aggregator":                      {"github.com/clickagg/clickagg/aggregator."},
	"tally (count, dedup, snapshot)":  {"github.com/clickagg/clickagg/tally."},
	"queryd":                          {"github.com/clickagg/clickagg/queryd."},
	"go-redis client":                 {"github.com/redis/go-redis/"},
	"gRPC":                            {"google.golang.org/grpc"},
	"protobuf":                        {"google.golang.org/protobuf"},
	"garbage collection":              {"runtime.gcBgMarkWorker", "runtime.gcAssistAlloc", "runtime.bgsweep", "runtime.bgscavenge"},
	"embedded etcd":                   {"go.etcd.io/"},
}

func profileShares(cpu []byte) string {
	if len(cpu) == 0 {
		return ""
	}
	p, err := profile.ParseData(cpu)
	if err != nil {
		return ""
	}
	shares, err := groupShares(p, "cpu", profileGroups)
	if err != nil {
		return ""
	}
	names := make([]string, 0, len(shares))
	for n := range shares {
		names = append(names, n)
	}
	// Largest first, then by name.
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(shares[b], shares[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", n, 100*shares[n]))
	}
	return strings.Join(parts, ", ")
}

// profiles renders the tops of the CPU profiles of ingest and of the
// query phase, and of the heap profile.
func profiles(cpu, queries, heap, recovery []byte) []ProfileTop {
	var out []ProfileTop
	out = append(out, cpuTops(cpu, "CPU profile of the pipeline (in-process cluster, saturated while adding keys up to the targets' scale", 25)...)
	out = append(out, cpuTops(queries, "CPU profile of the cluster's query phase (in-process cluster", 15)...)
	out = append(out, cpuTops(recovery, "CPU profile of the recovery of the snapshotted partitions (claim, load, restore", 15)...)
	if len(heap) > 0 {
		if p, err := profile.ParseData(heap); err == nil {
			if stats, total, err := funcTop(p, "inuse_space"); err == nil {
				out = append(out, ProfileTop{
					Title: "Heap profile after ingest (in use, top 15 by flat)",
					Text:  FormatTop(stats, total, 15, func(v int64) string { return formatBytes(float64(v)) }),
				})
			}
		}
	}
	return out
}

// writeProfiles writes the profiles that were taken into dir.
func writeProfiles(dir string, profiles map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("-bench.pprof-dir: %w", err)
	}
	for name, b := range profiles {
		if len(b) == 0 {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("-bench.pprof-dir: %w", err)
		}
	}
	return nil
}

// cpuTops renders a CPU profile's top n by flat time, and the same profile
// by cumulative time for clickagg's own functions (where the pipeline
// spends it); title ends in an open parenthesis that each closes.
func cpuTops(cpu []byte, title string, n int) []ProfileTop {
	if len(cpu) == 0 {
		return nil
	}
	p, err := profile.ParseData(cpu)
	if err != nil {
		return nil
	}
	stats, total, err := funcTop(p, "cpu")
	if err != nil {
		return nil
	}
	dur := func(v int64) string { return time.Duration(v).Round(time.Millisecond).String() }
	own := slices.DeleteFunc(slices.Clone(stats), func(s FuncStat) bool {
		return !strings.HasPrefix(s.Name, "github.com/clickagg/clickagg/") || strings.HasPrefix(s.Name, "github.com/clickagg/clickagg/bench.")
	})
	slices.SortStableFunc(own, func(a, b FuncStat) int { return cmp.Compare(b.Cum, a.Cum) })
	return []ProfileTop{
		{Title: fmt.Sprintf("%s, top %d by flat)", title, n), Text: FormatTop(stats, total, n, dur)},
		{Title: fmt.Sprintf("%s, clickagg's functions by cumulative time, top %d)", title, n), Text: FormatTop(own, total, n, dur)},
	}
}
