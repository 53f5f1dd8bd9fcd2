package hotkey

import (
	"flag"
	"fmt"
	"time"
)

// Config configures every part of hot-key splitting: the routers' and
// queryds' Follower, the coordinator's Publisher and Planner, and the
// aggregators' Sketch. Every process of a cluster must use the same values.
type Config struct {
	// MaxStaleness bounds how long ago a Follower's copy of the table must
	// have been confirmed current for Table to return it.
	MaxStaleness time.Duration
	// ConfirmInterval is how often a Follower confirms its copy with a
	// linearizable read.
	ConfirmInterval time.Duration
	// LeadTime is how long before a router may accept a click of a change's
	// effective minute the change is written.
	LeadTime time.Duration
	// Safety is how long before that moment every live router must have
	// acknowledged the change; otherwise it is withdrawn.
	Safety time.Duration
	// AckPollInterval is how often the Publisher re-reads routers and acks
	// while it waits.
	AckPollInterval time.Duration
	// Keep is how long an ended split stays in the table after its end.
	Keep time.Duration
	// MaxSkew is the routers' -router.max-clock-skew; the process sets it.
	MaxSkew time.Duration

	// SplitRate is the events/s over the last minute above which the
	// Planner splits an ad.
	SplitRate float64
	// UnsplitRate is the events/s below which a split ad is unsplit.
	UnsplitRate float64
	// MinSplit is how long a split lasts at least before it may be undone.
	MinSplit time.Duration
	// MaxWays bounds the partitions (and aggregators) of one split.
	MaxWays int
	// CheckInterval is how often the coordinator's Controller looks for hot
	// and cooled ads.
	CheckInterval time.Duration
	// SketchCapacity is the number of counters of each aggregator's
	// heavy-hitter sketch, per partition and 10s slot.
	SketchCapacity int
}

// Defaults used by RegisterFlags.
const (
	DefaultMaxStaleness    = 5 * time.Second
	DefaultConfirmInterval = time.Second
	DefaultLeadTime        = 30 * time.Second
	DefaultSafety          = 10 * time.Second
	DefaultAckPollInterval = 100 * time.Millisecond
	DefaultKeep            = 25 * time.Hour
	DefaultSplitRate       = 1000
	DefaultUnsplitRate     = 250
	DefaultMinSplit        = 2 * time.Minute
	DefaultMaxWays         = 8
	DefaultCheckInterval   = 10 * time.Second
	DefaultSketchCapacity  = 64
)

// maxWays bounds MaxWays: a split ad costs every query of it one call per
// partition.
const maxWays = 64

// RegisterFlags registers the -hotkey.* flags with their defaults.
// MaxSkew has no flag: the process copies -router.max-clock-skew.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.MaxStaleness, "hotkey.max-staleness", DefaultMaxStaleness,
		"How long ago a router's or queryd's split table may have been confirmed with etcd before it refuses ingests and queries; below -hotkey.safety minus clock skew.")
	fs.DurationVar(&c.ConfirmInterval, "hotkey.confirm-interval", DefaultConfirmInterval,
		"How often routers and queryds confirm their copy of the split table with a linearizable etcd read; below -hotkey.max-staleness.")
	fs.DurationVar(&c.LeadTime, "hotkey.lead-time", DefaultLeadTime,
		"A split or unsplit applies from the first click minute routers can accept no sooner than this after it is written (counting -router.max-clock-skew).")
	fs.DurationVar(&c.Safety, "hotkey.safety", DefaultSafety,
		"Every live router must acknowledge a split or unsplit this long before it could accept a click of its first minute, or it is withdrawn; below -hotkey.lead-time.")
	fs.DurationVar(&c.AckPollInterval, "hotkey.ack-poll-interval", DefaultAckPollInterval,
		"How often the coordinator re-reads the routers' acknowledgements while a change waits for them.")
	fs.DurationVar(&c.Keep, "hotkey.keep", DefaultKeep,
		"How long an ended split stays in the table: queries over windows that old must still know it. At least -aggregator.retention and -router.acceptance-horizon.")
	fs.Float64Var(&c.SplitRate, "hotkey.split-rate", DefaultSplitRate,
		"Events per second over the last minute above which the coordinator splits an ad over several aggregators.")
	fs.Float64Var(&c.UnsplitRate, "hotkey.unsplit-rate", DefaultUnsplitRate,
		"Events per second over the last minute below which the coordinator ends an ad's split; below -hotkey.split-rate.")
	fs.DurationVar(&c.MinSplit, "hotkey.min-split", DefaultMinSplit,
		"Shortest life of a split before the coordinator may end it for cooling down, so that a bursty ad is not split and unsplit every check.")
	fs.IntVar(&c.MaxWays, "hotkey.max-ways", DefaultMaxWays,
		"Largest number of partitions (on distinct aggregators) one hot ad is split over.")
	fs.DurationVar(&c.CheckInterval, "hotkey.check-interval", DefaultCheckInterval,
		"How often the coordinator leader looks for hot ads to split and split ads to unsplit.")
	fs.IntVar(&c.SketchCapacity, "hotkey.sketch-capacity", DefaultSketchCapacity,
		"Counters of each aggregator's heavy-hitter sketch per partition: any ad with more than 1/capacity of a partition's events over the last minute is reported.")
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.MaxStaleness <= 0:
		return fmt.Errorf("-hotkey.max-staleness %v: must be positive", c.MaxStaleness)
	case c.ConfirmInterval <= 0 || c.ConfirmInterval >= c.MaxStaleness:
		return fmt.Errorf("-hotkey.confirm-interval %v: must be positive and below -hotkey.max-staleness=%v", c.ConfirmInterval, c.MaxStaleness)
	case c.Safety <= c.MaxStaleness:
		return fmt.Errorf("-hotkey.safety %v: must be above -hotkey.max-staleness=%v", c.Safety, c.MaxStaleness)
	case c.LeadTime <= c.Safety:
		return fmt.Errorf("-hotkey.lead-time %v: must be above -hotkey.safety=%v", c.LeadTime, c.Safety)
	case c.AckPollInterval <= 0:
		return fmt.Errorf("-hotkey.ack-poll-interval %v: must be positive", c.AckPollInterval)
	case c.Keep < time.Hour:
		return fmt.Errorf("-hotkey.keep %v: must be at least 1h", c.Keep)
	case c.MaxSkew < 0:
		return fmt.Errorf("max clock skew %v: must not be negative", c.MaxSkew)
	case !(c.SplitRate > 0):
		return fmt.Errorf("-hotkey.split-rate %v: must be positive", c.SplitRate)
	case !(c.UnsplitRate >= 0) || c.UnsplitRate >= c.SplitRate:
		return fmt.Errorf("-hotkey.unsplit-rate %v: must be in [0, -hotkey.split-rate=%v)", c.UnsplitRate, c.SplitRate)
	case c.MinSplit < 0:
		return fmt.Errorf("-hotkey.min-split %v: must not be negative", c.MinSplit)
	case c.MaxWays < 2 || c.MaxWays > maxWays:
		return fmt.Errorf("-hotkey.max-ways %d: must be in [2, %d]", c.MaxWays, maxWays)
	case c.CheckInterval <= 0:
		return fmt.Errorf("-hotkey.check-interval %v: must be positive", c.CheckInterval)
	case c.SketchCapacity < 1 || c.SketchCapacity > maxSketchCapacity:
		return fmt.Errorf("-hotkey.sketch-capacity %d: must be in [1, %d]", c.SketchCapacity, maxSketchCapacity)
	}
	return nil
}

// ackDeadline is the last moment every live router must have acknowledged
// a change effective from minute m.
func (c *Config) ackDeadline(m int64) time.Time {
	return time.UnixMilli(m * minuteMs).Add(-c.MaxSkew - c.Safety)
}
