// Package recount counts a partition's minutes again from the raw archive
// (package archive), with the counting code of the aggregators (package
// tally), dedup and event-time rules included: what clickagg recalc writes
// as a new revision of the history and what clickagg reconcile compares
// with the history the cluster serves.
//
// # Replaying from the middle of a log
//
// A partition's counts are a function of its log, and the archive holds
// the log entry for entry, ticks included. A recount of the minutes
// [from, to) does not replay the log from its beginning: it starts with the
// archive file that holds the log at Margin before from and applies the
// files in order until the minutes are final (past the dedup horizon), as
// the aggregator would. That gives the aggregator's counts as long as two
// things held when the clicks were appended, which Margin bounds:
//
//   - no click of the range was appended more than Margin before its
//     minute began (routers refuse clicks more than -router.max-clock-skew
//     in the future, by their clocks);
//   - the largest tick appended before the replay's start was not above
//     the ticks of the Margin after it (routers tick with their clocks,
//     which agree to well within Margin).
//
// Then the replay's watermark equals the aggregator's whenever a click of
// the range is applied, so both accept, refuse and deduplicate the same
// clicks.
//
// # Holes
//
// The archive files of a partition form a chain (archive.Chunk.Previous):
// a recount checks every link it crosses, and a missing file is a Hole,
// never fewer clicks. A recount that must not guess (recalc) fails on it;
// reconcile reports it with the minutes it could not check, and goes on
// with a replay that starts again after the hole. Minutes older than the
// archive (archiving began after the log's start had been trimmed) are
// ErrBeforeArchive, never zero clicks.
package recount
