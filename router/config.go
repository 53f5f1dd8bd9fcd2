package router

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"time"
	"unicode/utf8"
)

// Config configures a Router.
type Config struct {
	// MaxSkew bounds how far in the future a click_time may be.
	MaxSkew time.Duration
	// Horizon bounds how old a click_time may be. The aggregators' dedup
	// horizon must be at least this long, or a retried event older than their
	// horizon could be counted twice.
	Horizon time.Duration
	// TickInterval is how often a tick is appended to every partition.
	TickInterval time.Duration
	// IdleLag is how far behind the wall clock a tick may say event time is
	// when no newer click was accepted.
	IdleLag time.Duration
	// MaxEvents bounds the events of one request.
	MaxEvents int
	// MaxIDLength bounds ad_id, event_id and user_id, in bytes.
	MaxIDLength int
	// AppendConcurrency bounds the appends in flight; requests arriving
	// meanwhile are appended together by the next one.
	AppendConcurrency int
	// MaxBatchEvents bounds the events appended together.
	MaxBatchEvents int
	// AppendTimeout bounds how long a request waits for its events to be
	// appended, and each append.
	AppendTimeout time.Duration
	// StreamWindow bounds the requests of one IngestStream ingested at
	// once.
	StreamWindow int
	// MaxRedisMemoryFraction is the share of a Redis primary's maxmemory
	// at which clicks are refused (WithMemoryBound); 0 turns the bound
	// off (the memory is still read and exported).
	MaxRedisMemoryFraction float64
	// MemoryCheckInterval is how often Redis's memory is read for the
	// bound.
	MemoryCheckInterval time.Duration
	// CallerRate is the clicks per second each caller may send; 0 is no
	// limit. The server enforces it in front of the router (package
	// ratelimit), with bursts of CallerBurstOrDefault.
	CallerRate float64
	// CallerBurst is the most clicks a caller may send at once; 0 means
	// CallerBurstOrDefault's default.
	CallerBurst int
}

// Defaults used by RegisterFlags.
const (
	DefaultMaxSkew      = time.Minute
	DefaultHorizon      = 6 * time.Hour
	DefaultTickInterval = time.Second
	DefaultIdleLag      = time.Minute
	DefaultMaxEvents    = 10000
	DefaultMaxIDLength  = 128

	DefaultAppendConcurrency = 4
	DefaultMaxBatchEvents    = 20000
	DefaultAppendTimeout     = 10 * time.Second
	DefaultStreamWindow      = 16

	DefaultMaxRedisMemoryFraction = 0.8
	DefaultMemoryCheckInterval    = time.Second
)

// maxRouterIDLength bounds a router's ID: it is repeated in every log
// entry.
const maxRouterIDLength = 128

// RegisterFlags registers the router's flags on fs with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.MaxSkew, "router.max-clock-skew", DefaultMaxSkew,
		"Largest amount by which a click_time, or a tick's event time, may be ahead of this router's clock; clicks further in the future are rejected.")
	fs.DurationVar(&c.Horizon, "router.acceptance-horizon", DefaultHorizon,
		"Oldest click_time accepted, as an age on this router's clock; older clicks are rejected. -aggregator.dedup-horizon must exceed it plus clock skew.")
	fs.DurationVar(&c.TickInterval, "router.tick-interval", DefaultTickInterval,
		"How often this router appends a tick (its event-time frontier) to every partition log, so that idle partitions' watermarks still advance.")
	fs.DurationVar(&c.IdleLag, "router.idle-watermark-lag", DefaultIdleLag,
		"When no newer click arrives, ticks move event time to now minus this, so minutes complete on an idle cluster; above the age of the data you send.")
	fs.IntVar(&c.MaxEvents, "router.max-events-per-request", DefaultMaxEvents,
		"Largest number of events in one Ingest request or stream message; larger requests fail with RESOURCE_EXHAUSTED.")
	fs.IntVar(&c.MaxIDLength, "router.max-id-length", DefaultMaxIDLength,
		"Longest event_id, ad_id and user_id accepted, in bytes.")
	fs.IntVar(&c.AppendConcurrency, "router.append-concurrency", DefaultAppendConcurrency,
		"Largest number of appends to the partition log in flight; requests arriving meanwhile are appended together by the next one.")
	fs.IntVar(&c.MaxBatchEvents, "router.max-batch-events", DefaultMaxBatchEvents,
		"Largest number of events of concurrent requests appended together; bounds the size of log entries and of the aggregators' reads.")
	fs.IntVar(&c.StreamWindow, "router.stream-window", DefaultStreamWindow,
		"Largest number of requests of one IngestStream validated and appended at once; responses come back in request order.")
	fs.DurationVar(&c.AppendTimeout, "router.append-timeout", DefaultAppendTimeout,
		"Longest time an ingest request waits for its events to be appended to the partition log, queueing included; then it fails with UNAVAILABLE.")
	fs.Float64Var(&c.MaxRedisMemoryFraction, "router.max-redis-memory-fraction", DefaultMaxRedisMemoryFraction,
		"Share of Redis's maxmemory (any one primary's, on a Redis Cluster) at which this router refuses clicks with UNAVAILABLE; 0 turns it off.")
	fs.DurationVar(&c.MemoryCheckInterval, "router.redis-memory-check-interval", DefaultMemoryCheckInterval,
		"How often this router reads every Redis primary's memory (INFO memory) for -router.max-redis-memory-fraction and clickagg_redis_used_memory_bytes.")
	fs.Float64Var(&c.CallerRate, "router.caller-rate", 0,
		"Clicks per second each caller (its authenticated identity, else its IP address) may send; more is refused with RESOURCE_EXHAUSTED. 0: no limit.")
	fs.IntVar(&c.CallerBurst, "router.caller-burst", 0,
		"Most clicks a caller may send at once after a pause, at least -router.max-events-per-request; 0: that or one second of -router.caller-rate, if larger.")
}

// CallerBurstOrDefault is the burst of the per-caller limit: CallerBurst,
// or by default the larger of MaxEvents (a request of the largest size
// must be able to pass) and one second of CallerRate.
func (c *Config) CallerBurstOrDefault() int {
	if c.CallerBurst > 0 {
		return c.CallerBurst
	}
	return max(c.MaxEvents, int(min(math.Ceil(c.CallerRate), math.MaxInt32)))
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.MaxSkew < 0:
		return fmt.Errorf("router.max-clock-skew %v: must not be negative", c.MaxSkew)
	case c.Horizon <= 0:
		return fmt.Errorf("router.acceptance-horizon %v: must be positive", c.Horizon)
	case c.TickInterval <= 0:
		return fmt.Errorf("router.tick-interval %v: must be positive", c.TickInterval)
	case c.IdleLag < 0:
		return fmt.Errorf("router.idle-watermark-lag %v: must not be negative", c.IdleLag)
	case c.MaxEvents < 1:
		return fmt.Errorf("router.max-events-per-request %d: must be at least 1", c.MaxEvents)
	case c.MaxIDLength < 1:
		return fmt.Errorf("router.max-id-length %d: must be at least 1", c.MaxIDLength)
	case c.AppendConcurrency < 1:
		return fmt.Errorf("router.append-concurrency %d: must be at least 1", c.AppendConcurrency)
	case c.MaxBatchEvents < c.MaxEvents:
		return fmt.Errorf("router.max-batch-events %d: must be at least router.max-events-per-request=%d", c.MaxBatchEvents, c.MaxEvents)
	case c.StreamWindow < 1:
		return fmt.Errorf("router.stream-window %d: must be at least 1", c.StreamWindow)
	case c.AppendTimeout <= 0:
		return fmt.Errorf("router.append-timeout %v: must be positive", c.AppendTimeout)
	case !(c.MaxRedisMemoryFraction >= 0 && c.MaxRedisMemoryFraction <= 1):
		return fmt.Errorf("router.max-redis-memory-fraction %v: must be between 0 and 1", c.MaxRedisMemoryFraction)
	case c.MemoryCheckInterval <= 0:
		return fmt.Errorf("router.redis-memory-check-interval %v: must be positive", c.MemoryCheckInterval)
	case !(c.CallerRate >= 0 && c.CallerRate <= math.MaxFloat64):
		return fmt.Errorf("router.caller-rate %v: must be a number of clicks per second, at least 0", c.CallerRate)
	case c.CallerBurst < 0:
		return fmt.Errorf("router.caller-burst %d: must not be negative", c.CallerBurst)
	case c.CallerBurst > 0 && c.CallerBurst < c.MaxEvents:
		return fmt.Errorf("router.caller-burst %d: must be at least router.max-events-per-request=%d, or a request that large would never pass", c.CallerBurst, c.MaxEvents)
	}
	return nil
}

// ValidateID reports why id cannot name a router (the process's -id): it
// is written into every log entry the router appends.
func ValidateID(id string) error {
	switch {
	case len(id) > maxRouterIDLength:
		return fmt.Errorf("-id is %d bytes long, at most %d allowed for a router", len(id), maxRouterIDLength)
	case !utf8.ValidString(id):
		return errors.New("-id is not valid UTF-8")
	}
	return nil
}

// defaultID returns hostname-pid, unique per process on a host and, on
// Kubernetes, per pod.
func defaultID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "router"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}
