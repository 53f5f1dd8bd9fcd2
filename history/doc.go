// Package history keeps the finished counts for good: once every minute of
// a period (-history.period, an hour by default) of a partition can no
// longer change (it has left the dedup horizon), the period's rows, clicks
// per (minute, ad_id, country), are written to one Parquet file in the
// object store, long before the minutes leave the aggregator's memory
// (-aggregator.retention).
//
// # Files
//
//	history/date=2026-12-07/hour=03/partition=017/29420100-29420160_r0.parquet
//
// holds partition 17's rows of the Unix minutes [29420100, 29420160), in
// the UTC hour of its first minute, at revision 0, sorted by ad_id, then
// minute, then country (Row has the columns: with each row the user_id and
// ip hashes of its clicks, which filters compare). Periods divide an hour,
// so a file lies in one hour folder. A file exists for every period from
// the first one a partition wrote, empty when it had no clicks, so a
// missing file is a hole, never a zero. The rows are the billing export:
// Hive-style paths and a documented schema.
//
// Revision 0 is what the aggregators counted; a recount (clickagg recalc)
// writes a higher revision beside it and never replaces a file.
//
// # Exactly once
//
// The rows of a final period are a function of the partition log alone
// (tally.Partition.Final), so every owner writes the same bytes under the
// same key, and writing a file again after a crash changes nothing. After
// the file, Writer records the period's end as the partition's history
// mark in Redis with the owner's epoch (snapshot.Store.SaveHistory), fenced
// like the snapshots and only forward; the next period starts there.
// The first mark also records where the partition's history begins, so
// that a query for older minutes is told they were never kept, not that a
// file is missing.
//
// A period whose minutes left memory before the writer got to it (the
// store was unreachable for longer than -aggregator.retention minus
// -aggregator.dedup-horizon) cannot be written from memory: the writer
// counts it in clickagg_history_gaps_total, logs it, and goes on; its file
// stays missing, which queries and reconcile report, and a recount from the
// raw archive fills it.
//
// # Reading
//
// Reader sums a partition's clicks over a range of minutes, for the
// aggregators' counts and popular-ads queries over minutes that left
// memory, from each period's file of the latest applied revision (a View
// of the applied revisions, taken once per query: see Applied). It lists
// the files of the range on every call and checks that they tile it
// (ErrHole, ErrCorrupt, naming the file). With WithCache it keeps decoded
// files, least recently used dropped first past a bound in bytes
// (-history.cache-bytes on aggregators); a cached file is used only while
// the listing shows its object unchanged (size and modification time), and
// the listing still finds a file that went missing.
//
// # Rollups
//
// Once the periods of a partition's UTC day are all written, the writer
// reads them back and writes the day's rollup beside the history
// (history-rollup/date=/partition=/ads.parquet): clicks per ad, sorted by
// ad_id, in row groups of RollupRowGroup rows, with the period files it
// summed (from-to_rN) in its metadata; writing it again gives the same
// bytes. A sum without a filter reads each whole UTC day of its range from
// the day's rollup instead of the day's files, when the rollup names the
// revisions the View serves for every period of the day: a revision
// applied over part of the day since makes it stale, and the day's files
// are read. A count of one ad reads only the row group whose ad_id bounds
// hold it, through Bucket.OpenReaderAt (a pread on a directory bucket). A
// missing rollup means reading the files, where a missing file is still a
// hole. A rollup is not checked against the listing of its day's files:
// it was written only after all of them, and holds their sums.
//
// Filters (country, user_id, ip) read the files: a rollup has no country
// column, so that a popular-ads query over days reads one row per ad and
// day, however many countries the ad's clicks came from.
package history
