package tally

import (
	"errors"
	"fmt"
	"time"
)

// Options fix the event-time rules of a partition. Every replica and every
// replay of a partition must use the same Options, or the same log would
// produce different counts.
type Options struct {
	// AllowedLateness is subtracted from the largest tick applied to give the
	// watermark: a minute counts as complete once the watermark passes its
	// end.
	AllowedLateness time.Duration
	// DedupHorizon is how long after the watermark has passed a minute's end
	// that minute still accepts events. Its dedup set is kept exactly that
	// long; an event for an older minute is refused and counted in
	// Stats.Expired, because it could no longer be told apart from a
	// duplicate.
	DedupHorizon time.Duration
	// Retention is how long after the watermark has passed a minute's end the
	// minute stays in memory for queries. It must be at least DedupHorizon,
	// so that a minute that can still change is always in memory.
	Retention time.Duration
}

// ErrInvalidOptions is wrapped by the errors of Options.Validate.
var ErrInvalidOptions = errors.New("tally: invalid options")

// Validate checks the relations between the durations.
func (o Options) Validate() error {
	switch {
	case o.AllowedLateness < 0:
		return fmt.Errorf("%w: allowed lateness %v is negative", ErrInvalidOptions, o.AllowedLateness)
	case o.DedupHorizon < time.Millisecond:
		return fmt.Errorf("%w: dedup horizon %v must be at least 1ms", ErrInvalidOptions, o.DedupHorizon)
	case o.Retention < o.DedupHorizon:
		return fmt.Errorf("%w: retention %v is shorter than the dedup horizon %v", ErrInvalidOptions, o.Retention, o.DedupHorizon)
	}
	return nil
}
