package queryd

import (
	"flag"
	"fmt"
	"time"
)

// Config configures queryd.
type Config struct {
	// MaxCount bounds the count of GetPopularAds and WatchPopularAds.
	MaxCount int
	// DefaultCount is the count when a request leaves it at 0.
	DefaultCount int
	// MaxWindow is the longest window a query may ask for; a whole number of
	// minutes.
	MaxWindow time.Duration
	// CallTimeout bounds each call to an aggregator.
	CallTimeout time.Duration
	// MoveWait is how long a query waits for a partition that has no
	// serving owner (a handoff in progress, an owner being replaced)
	// before it fails with UNAVAILABLE.
	MoveWait time.Duration
	// PollInterval is how often the publisher looks for newly completed
	// minutes.
	PollInterval time.Duration
	// PublishCount is the length of each minute's published top list.
	PublishCount int
	// RepublishMinutes is how many recent completed minutes a starting
	// queryd publishes; older ones were published by a previous run. It
	// no longer bounds corrections: those are found by revision over
	// RepublishHorizon.
	RepublishMinutes int
	// RecheckInterval is how often, besides every poll that hands out a
	// new minute, the publisher asks the owners for the revisions of the
	// minutes within RepublishHorizon (one call per owner, cheap whatever
	// the horizon); each minute whose revision sum changed gets its top
	// list computed again, and published again when it changed. 0 asks on
	// every poll.
	RecheckInterval time.Duration
	// RepublishHorizon is how long after a minute is complete late events
	// can still change it: the aggregators' -aggregator.dedup-horizon. A
	// shorter one misses the corrections of older minutes; a longer one
	// only asks for minutes that can no longer change.
	RepublishHorizon time.Duration
	// PublishTTL is how long a published minute's key stays in Redis; 0 keeps
	// it forever.
	PublishTTL time.Duration
}

// RegisterFlags registers the flags of c under -queryd. with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxCount, "queryd.max-count", 1000, "largest number of ads a popular-ads query may ask for")
	fs.IntVar(&c.DefaultCount, "queryd.default-count", 100, "number of ads a popular-ads query returns when it does not say")
	fs.DurationVar(&c.MaxWindow, "queryd.max-window", 24*time.Hour, "longest window of a query, in whole minutes; minutes older than -aggregator.retention are read from the history files (-archive.bucket), else OUT_OF_RANGE")
	fs.DurationVar(&c.CallTimeout, "queryd.call-timeout", 5*time.Second, "deadline of each call to an aggregator; an owner that does not answer in time makes the query fail with UNAVAILABLE")
	fs.DurationVar(&c.MoveWait, "queryd.move-wait", 3*time.Second, "how long a query waits for a partition with no serving owner (a handoff, a lost aggregator) before it fails with UNAVAILABLE; 0 fails at once")
	fs.DurationVar(&c.PollInterval, "queryd.poll-interval", time.Second, "how often to look for newly completed minutes to publish")
	fs.IntVar(&c.PublishCount, "queryd.publish-count", 100, "number of ads in each minute's published top list")
	fs.IntVar(&c.RepublishMinutes, "queryd.republish-minutes", 10, "number of recent completed minutes a starting queryd publishes; it does not bound republishing (-queryd.republish-horizon)")
	fs.DurationVar(&c.RecheckInterval, "queryd.recheck-interval", 10*time.Second, "how often, besides polls that publish a new minute, the aggregators are asked which minutes within -queryd.republish-horizon changed; 0: every poll")
	fs.DurationVar(&c.RepublishHorizon, "queryd.republish-horizon", defaultRepublishHorizon, "how long after a minute is complete its published top list is corrected for late events; set it to -aggregator.dedup-horizon; 0: never")
	fs.DurationVar(&c.PublishTTL, "queryd.publish-ttl", 7*24*time.Hour, "how long each minute's published top list stays in Redis; 0 keeps it forever")
}

// maxMaxCount bounds MaxCount: every owner returns up to that many ads per
// query, and the count travels as an int32.
const maxMaxCount = 100_000

// maxRepublishMinutes bounds RepublishMinutes: a starting queryd computes
// a top list per minute.
const maxRepublishMinutes = 60

// defaultRepublishHorizon is the aggregators' default
// -aggregator.dedup-horizon.
const defaultRepublishHorizon = 6*time.Hour + 30*time.Minute

// Validate checks c.
func (c *Config) Validate() error {
	if c.MaxCount < 1 || c.MaxCount > maxMaxCount {
		return fmt.Errorf("-queryd.max-count %d: must be in [1, %d]", c.MaxCount, maxMaxCount)
	}
	if c.DefaultCount < 1 || c.DefaultCount > c.MaxCount {
		return fmt.Errorf("-queryd.default-count %d: must be in [1, -queryd.max-count=%d]", c.DefaultCount, c.MaxCount)
	}
	if c.MaxWindow < time.Minute || c.MaxWindow%time.Minute != 0 {
		return fmt.Errorf("-queryd.max-window %v: must be a whole number of minutes, at least 1m", c.MaxWindow)
	}
	if c.CallTimeout <= 0 {
		return fmt.Errorf("-queryd.call-timeout %v: must be positive", c.CallTimeout)
	}
	if c.MoveWait < 0 {
		return fmt.Errorf("-queryd.move-wait %v: must not be negative", c.MoveWait)
	}
	if c.PollInterval <= 0 {
		return fmt.Errorf("-queryd.poll-interval %v: must be positive", c.PollInterval)
	}
	if c.PublishCount < 1 || c.PublishCount > c.MaxCount {
		return fmt.Errorf("-queryd.publish-count %d: must be in [1, -queryd.max-count=%d]", c.PublishCount, c.MaxCount)
	}
	if c.RecheckInterval < 0 {
		return fmt.Errorf("-queryd.recheck-interval %v: must not be negative", c.RecheckInterval)
	}
	if c.RepublishMinutes < 0 || c.RepublishMinutes > maxRepublishMinutes {
		return fmt.Errorf("-queryd.republish-minutes %d: must be in [0, %d]", c.RepublishMinutes, maxRepublishMinutes)
	}
	if c.RepublishHorizon < 0 {
		return fmt.Errorf("-queryd.republish-horizon %v: must not be negative", c.RepublishHorizon)
	}
	if c.PublishTTL < 0 {
		return fmt.Errorf("-queryd.publish-ttl %v: must not be negative", c.PublishTTL)
	}
	return nil
}

// maxWindowMinutes is MaxWindow in minutes.
func (c *Config) maxWindowMinutes() int64 { return int64(c.MaxWindow / time.Minute) }
