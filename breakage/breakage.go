package breakage

// Switch is one way to break clickagg. The names CLICKAGG_BREAK takes are
// in the comments.
type Switch int

const (
	// DedupOff ("dedup-off") identifies a click by its delivery, its
	// position in the partition log, instead of (ad_id, event_id): every
	// re-sent copy is counted again.
	DedupOff Switch = iota + 1
	// OffsetApart ("offset-apart") writes a snapshot's log offset apart
	// from its state, in a later write that records the offset the
	// partition has reached by then: a restore replays from past what the
	// state holds, and loses the entries in between.
	OffsetApart
	// FencingOff ("fencing-off") makes the Redis-side fence accept an
	// older epoch: an ex-owner's writes go through.
	FencingOff
	// AckBeforeRedis ("ack-before-redis") makes the router acknowledge a
	// request before its append, which goes on in the background and
	// whose failure is dropped.
	AckBeforeRedis
	// PartialQueryd ("partial-queryd") makes queryd answer from the owners
	// that answered, leaving out the ones whose call failed, with OK.
	PartialQueryd
)
