package aggregator

import (
	"flag"
	"fmt"
	"runtime"
	"time"

	"github.com/clickagg/clickagg/tally"
)

// Config configures an Aggregator.
type Config struct {
	// SnapshotInterval is how often each partition is snapshotted.
	SnapshotInterval time.Duration
	// ReadCount bounds the entries read per partition per XREAD.
	ReadCount int64
	// ReadBlock is how long one XREAD waits for new entries.
	ReadBlock time.Duration
	// ApplyParallelism is how many partitions are applied, and snapshots
	// encoded, at once; 0 means GOMAXPROCS.
	ApplyParallelism int
	// AllowedLateness, DedupHorizon and Retention are the tally.Options of
	// every partition. Every owner of a partition must use the same values,
	// or a replay would count differently.
	AllowedLateness time.Duration
	DedupHorizon    time.Duration
	Retention       time.Duration
	// RawRetention is how long raw log entries are kept at least; the log is
	// trimmed only below both this age and the snapshot offset (and, with
	// an archive, the archived offset).
	RawRetention time.Duration
	// ReleaseTimeout is how long a partition released for a handoff waits
	// for the assignment that moves it before it is taken back.
	ReleaseTimeout time.Duration
	// LeaveTimeout bounds how long a shutdown waits for the coordinator to
	// hand the partitions over live (Leave); 0 skips that step.
	LeaveTimeout time.Duration
	// ClaimTimeout is how long the partitions may fail to be taken, or the
	// logs to be read, before the aggregator gives its partitions back
	// (Member.Unhealthy); 0 means DefaultClaimTimeout.
	ClaimTimeout time.Duration
}

// Defaults used by RegisterFlags.
const (
	DefaultSnapshotInterval = 5 * time.Second
	DefaultReadCount        = 256
	DefaultReadBlock        = 100 * time.Millisecond
	DefaultAllowedLateness  = 10 * time.Second
	DefaultDedupHorizon     = 6*time.Hour + 30*time.Minute
	DefaultRetention        = 24 * time.Hour
	DefaultRawRetention     = 0
	DefaultReleaseTimeout   = 15 * time.Second
	DefaultLeaveTimeout     = 10 * time.Second
	DefaultClaimTimeout     = 30 * time.Second
)

// maxReadBlock bounds ReadBlock: a blocked XREAD is not interrupted by
// cancellation, so it delays shutdown and the reaction to assignment changes
// by up to this long.
const maxReadBlock = 10 * time.Second

// RegisterFlags registers the aggregator's flags on fs with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.SnapshotInterval, "aggregator.snapshot-interval", DefaultSnapshotInterval,
		"How often each partition's state and log offset are written to Redis; a new owner replays the log from the last one.")
	fs.Int64Var(&c.ReadCount, "aggregator.read-count", DefaultReadCount,
		"Largest number of log entries read from one partition per XREAD. Larger values replay faster and make each read slower.")
	fs.DurationVar(&c.ReadBlock, "aggregator.read-block", DefaultReadBlock,
		"How long one XREAD waits for new log entries, at most 10s; a handoff or shutdown may wait this long for it, so keep it short.")
	fs.IntVar(&c.ApplyParallelism, "aggregator.apply-parallelism", 0,
		"Partitions applied, and snapshots encoded, at once; each partition is applied in log order. 0: GOMAXPROCS.")
	fs.DurationVar(&c.AllowedLateness, "aggregator.allowed-lateness", DefaultAllowedLateness,
		"Watermark = newest router tick minus this. A minute is complete once the watermark passes its end. Must be the same on every aggregator.")
	fs.DurationVar(&c.DedupHorizon, "aggregator.dedup-horizon", DefaultDedupHorizon,
		"How long a complete minute still counts events and remembers their event_ids; above -router.acceptance-horizon plus clock skew, the same on every aggregator.")
	fs.DurationVar(&c.Retention, "aggregator.retention", DefaultRetention,
		"How long a complete minute stays in memory, at least -aggregator.dedup-horizon; older ones are read from the history files (-archive.bucket), else OUT_OF_RANGE.")
	fs.DurationVar(&c.RawRetention, "aggregator.raw-retention", DefaultRawRetention,
		"Raw log entries stay in Redis at least this long, besides what the last snapshot and the archive (-archive.bucket) still need; 0: only those.")
	fs.DurationVar(&c.ReleaseTimeout, "aggregator.release-timeout", DefaultReleaseTimeout,
		"A partition released for a live handoff is taken back if no new owner is assigned within this long; keep it well above -coordinator.release-timeout.")
	fs.DurationVar(&c.LeaveTimeout, "aggregator.leave-timeout", DefaultLeaveTimeout,
		"On shutdown, how long to wait for this aggregator's partitions to be handed over live before stopping anyway; 0 skips the live handoff.")
	fs.DurationVar(&c.ClaimTimeout, "aggregator.claim-timeout", DefaultClaimTimeout,
		"How long Redis may fail this aggregator's claims, loads or log reads before it marks itself unhealthy and gives its partitions back.")
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.SnapshotInterval <= 0:
		return fmt.Errorf("-aggregator.snapshot-interval %v: must be positive", c.SnapshotInterval)
	case c.ReadCount < 1:
		return fmt.Errorf("-aggregator.read-count %d: must be at least 1", c.ReadCount)
	case c.ReadBlock <= 0 || c.ReadBlock > maxReadBlock:
		return fmt.Errorf("-aggregator.read-block %v: must be in (0, %v]", c.ReadBlock, maxReadBlock)
	case c.ApplyParallelism < 0:
		return fmt.Errorf("-aggregator.apply-parallelism %d: must not be negative", c.ApplyParallelism)
	case c.RawRetention < 0:
		return fmt.Errorf("-aggregator.raw-retention %v: must not be negative", c.RawRetention)
	case c.ReleaseTimeout <= 0:
		return fmt.Errorf("-aggregator.release-timeout %v: must be positive", c.ReleaseTimeout)
	case c.LeaveTimeout < 0:
		return fmt.Errorf("-aggregator.leave-timeout %v: must not be negative", c.LeaveTimeout)
	case c.ClaimTimeout < 0:
		return fmt.Errorf("-aggregator.claim-timeout %v: must not be negative", c.ClaimTimeout)
	}
	if err := c.tallyOptions().Validate(); err != nil {
		return fmt.Errorf("-aggregator.allowed-lateness, -aggregator.dedup-horizon, -aggregator.retention: %w", err)
	}
	return nil
}

// applyParallelism is ApplyParallelism with its default.
func (c *Config) claimTimeout() time.Duration {
	if c.ClaimTimeout <= 0 {
		return DefaultClaimTimeout
	}
	return c.ClaimTimeout
}

func (c *Config) applyParallelism() int {
	if c.ApplyParallelism == 0 {
		return runtime.GOMAXPROCS(0)
	}
	return c.ApplyParallelism
}

func (c *Config) tallyOptions() tally.Options {
	return tally.Options{
		AllowedLateness: c.AllowedLateness,
		DedupHorizon:    c.DedupHorizon,
		Retention:       c.Retention,
	}
}
