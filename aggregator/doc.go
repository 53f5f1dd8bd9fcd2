// Package aggregator owns partitions: it keeps their click counts from
// their logs, snapshots them to Redis, and answers queryd's internal
// AggregatorService.
//
// # Ownership
//
// Run registers the aggregator in etcd; each registration (lease) is one
// incarnation. The aggregator owns partition p while the coordinator's
// assignment names its ID and its current incarnation for p. The
// assignment's epoch for p fences every snapshot write (package snapshot):
// taking a partition starts with snapshot.Store.Claim, after which no older
// owner can write, then loads the snapshot and replays the log after its
// offset. If the lease is lost, every partition stops being served at once
// and the aggregator registers again as a new incarnation, which the
// coordinator must assign before it serves anything again.
//
// # One writer
//
// One goroutine per incarnation, the consumer, does everything that changes
// state: it follows the assignment, takes and releases partitions, reads
// the logs of all owned partitions in one XREAD, applies entries to the
// tally.Partition of each, and snapshots each partition every
// -aggregator.snapshot-interval. Queries read the tally concurrently. A log
// entry that does not decode stops its partition (it is never skipped,
// which would lose clicks silently). A snapshot refused for a stale epoch
// means another owner has claimed the partition: it is dropped at once.
//
// # Exactness of answers
//
// A partition answers only while serving: after its replay reached the log
// end seen right after the load. Anything else is ErrNotServing
// (UNAVAILABLE), never zero. Windows reaching before the minutes kept in
// memory (-aggregator.retention before the watermark) fail with
// ErrOutOfRange: the snapshot after a minute leaves memory deletes it from
// Redis too, so no exact answer exists for it.
//
// # Log trimming
//
// Each snapshot trims the partition log below the smaller of the
// snapshot's offset and the start of the raw-retention window, in the same
// atomic step as the snapshot write, so the log always holds what the
// stored snapshot needs for a replay.
package aggregator
