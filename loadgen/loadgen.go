package loadgen

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/grpcclient"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/retry"
)

// Config is the shape and rate of the synthetic load.
type Config struct {
	Target    string
	Rate      int
	Batch     int
	Ads       int
	ZipfS     float64
	Users     int
	Duration  time.Duration
	Countries int
	// Dial holds how the connection to the router is secured: TLS and
	// a bearer token (the command builds them from its -tls.* and
	// -auth.token-file flags); none is plaintext, as clickagg dev uses.
	Dial []grpc.DialOption
}

// RegisterFlags registers the loadgen flags under -loadgen.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Target, "loadgen.target", "127.0.0.1:9090", "router gRPC address to send clicks to; dns:///router-headless.<namespace>.svc:9090 (a headless Service) spreads them over every router pod")
	fs.IntVar(&c.Rate, "loadgen.rate", 2000, "clicks per second")
	fs.IntVar(&c.Batch, "loadgen.batch", 500, "clicks per streamed request")
	fs.IntVar(&c.Ads, "loadgen.ads", 50000, "number of distinct ads")
	fs.Float64Var(&c.ZipfS, "loadgen.zipf-s", 1.1, "Zipf exponent of ad popularity (> 1)")
	fs.IntVar(&c.Users, "loadgen.users", 1000000, "number of distinct users (and about as many IPs)")
	fs.IntVar(&c.Countries, "loadgen.countries", 20, "number of distinct countries")
	fs.DurationVar(&c.Duration, "loadgen.duration", 0, "stop after this long; 0 runs until interrupted")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.Target == "":
		return errors.New("-loadgen.target: must not be empty")
	case c.Rate <= 0, c.Batch <= 0, c.Ads <= 0, c.Users <= 0:
		return errors.New("-loadgen.rate, -loadgen.batch, -loadgen.ads and -loadgen.users must be positive")
	case c.ZipfS <= 1:
		return errors.New("-loadgen.zipf-s: must be greater than 1")
	case c.Countries < 1 || c.Countries > len(countries):
		return fmt.Errorf("-loadgen.countries: must be in [1, %d]", len(countries))
	}
	return nil
}

// countries are real ISO 3166-1 alpha-2 codes, most populous markets first.
var countries = []string{"US", "IN", "CN", "BR", "ID", "JP", "DE", "GB", "FR", "MX", "NG", "RU", "TR", "IT", "KR", "ES", "CA", "PK", "VN", "PH", "EG", "TH", "AR", "PL", "CO", "ZA", "SA", "AU", "NL", "UA"}

// Stats are the generator's counters.
type Stats struct {
	Sent, Accepted, Rejected atomic.Int64
}

// Generator makes clicks.
type Generator struct {
	cfg    Config
	rng    *rand.Rand
	zipf   *rand.Zipf
	prefix string
	seq    uint64
}

// NewGenerator returns a generator whose event ids start with a random
// prefix, so that two runs never collide.
func NewGenerator(cfg Config, seed uint64) *Generator {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &Generator{
		cfg:    cfg,
		rng:    rng,
		zipf:   rand.NewZipf(rng, cfg.ZipfS, 1, uint64(cfg.Ads-1)),
		prefix: strconv.FormatUint(rng.Uint64(), 36),
	}
}

// Next returns one click at time t.
func (g *Generator) Next(t time.Time) *clickaggv1.ClickEvent {
	g.seq++
	u := g.rng.IntN(g.cfg.Users)
	return &clickaggv1.ClickEvent{
		EventId:   g.prefix + "-" + strconv.FormatUint(g.seq, 36),
		AdId:      "ad-" + strconv.FormatUint(g.zipf.Uint64(), 10),
		ClickTime: timestamppb.New(t),
		UserId:    "user-" + strconv.Itoa(u),
		Ip:        fmt.Sprintf("10.%d.%d.%d", u>>16&255, u>>8&255, u&255),
		Country:   countries[g.rng.IntN(g.cfg.Countries)],
	}
}

// ingestPause paces the resends of a batch the router did not take.
var ingestPause = retry.Policy{Min: 100 * time.Millisecond, Max: 2 * time.Second}

// ingestTimeout bounds one send, as long as a router's own bound on an
// append (-router.append-timeout's default): a stopped router (SIGSTOP)
// keeps its connection open, and a send without a deadline would wait on
// it for as long as it is stopped instead of going, resent, to another
// router of the target.
const ingestTimeout = 10 * time.Second

// Run sends clicks at cfg.Rate until ctx ends or cfg.Duration passes.
func Run(ctx context.Context, cfg Config, st *Stats) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	opts := cfg.Dial
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(cfg.Target, grpcclient.With(opts...)...)
	if err != nil {
		return fmt.Errorf("dial router %s: %w", cfg.Target, err)
	}
	defer conn.Close()
	client := clickaggv1.NewIngestServiceClient(conn)
	gen := NewGenerator(cfg, uint64(time.Now().UnixNano()))
	interval := time.Duration(float64(time.Second) * float64(cfg.Batch) / float64(cfg.Rate))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		req := &clickaggv1.IngestRequest{Events: make([]*clickaggv1.ClickEvent, cfg.Batch)}
		now := time.Now()
		for i := range req.Events {
			req.Events[i] = gen.Next(now)
		}
		// Plain Ingest retried on failure: the same events (same ids) are
		// sent again, which the cluster counts once.
		var resp *clickaggv1.IngestResponse
		if retry.Do(ctx, ingestPause, nil, func() (err error) {
			cctx, cancel := context.WithTimeout(ctx, ingestTimeout)
			defer cancel()
			resp, err = client.Ingest(cctx, req)
			return err
		}) != nil {
			return nil // only ctx ends Do
		}
		st.Sent.Add(int64(len(req.Events)))
		st.Accepted.Add(resp.Accepted)
		st.Rejected.Add(int64(len(resp.Rejected)))
	}
}
