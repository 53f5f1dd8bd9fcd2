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
// A process paused (GC, SIGSTOP) past its lease may wake with partitions
// that another owner now serves. Before answering a query or a Release it
// checks that its lease is certainly alive (cluster.Registration.
// ValidUntil), so it refuses from the first instant, before its keepalive
// has even noticed; whatever it then tries to write is refused by the new
// owner's fence and counted (Stats.FencedWrites).
//
// # Handoffs
//
// A planned move starts with Release(partition, epoch): the partition
// stops being served, its consumer stops applying it, and a final snapshot
// is written under its epoch; the coordinator then assigns it elsewhere,
// naming that snapshot's offset (cluster.Owner.Released), and the new
// owner, once it has loaded exactly that snapshot, serves at once: it holds
// what the old owner served when it stopped, and catches up while serving.
// Any other take restores first (the snapshot may be older than what was
// served). Only a serving partition can be released. A
// released partition is never written or served again by this incarnation
// at that epoch, unless no assignment moves it within
// -aggregator.release-timeout (the coordinator died in between): then it
// is taken back like any other partition. On shutdown, Leave first marks
// the member as leaving, so that the coordinator hands every partition
// over that way while the aggregator still answers.
//
// # Load
//
// Each partition counts the events it applies per second of the injected
// clock over the last minute; PartitionStatus reports that rate, the lag
// in entries and in seconds (the age of the oldest unapplied entry, from
// its stream ID), and since when the partition is served.
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
// (UNAVAILABLE), never zero. Minutes before the ones kept in memory
// (-aggregator.retention before the watermark) are deleted from the
// snapshots too: with a history (WithHistoryReader), counts and top lists
// read them from its files (Count, topHistory), up to the partition's
// history mark; without one, or past the mark, a window reaching them
// fails with ErrOutOfRange rather than undercount.
//
// # Log trimming
//
// Each snapshot trims the partition log below the smaller of the
// snapshot's offset and the start of the raw-retention window, in the same
// atomic step as the snapshot write, so the log always holds what the
// stored snapshot needs for a replay. With an archiver (WithArchiver) the
// trim also stays at or below the archived offset.
//
// # Raw archive
//
// With WithArchiver, every partition held (restoring or serving) has an
// archiver running at the epoch it is held at (runArchivers), which writes
// its log to the object store and moves the fenced archived offset (package
// archive). A partition that leaves stops its archiver; one that comes back
// at a new epoch starts a new one.
package aggregator
