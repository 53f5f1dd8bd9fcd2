// Package archive keeps every entry of every partition log for good: it
// writes the log, exactly once, to Apache Parquet files in an object store
// (gocloud.dev/blob: a directory, S3 and S3-compatible servers), before the
// log may be trimmed below it, and reads the files back for recounts.
//
// # Files
//
// A file holds one chunk: consecutive entries of one partition's log, from
// the entry after the previous chunk to its last entry. Its key is
//
//	raw/date=2026-12-07/hour=03/partition=017/1796618677308-0_1796618737305-3.parquet
//
// with the UTC date and hour of the chunk's first entry ID (the time Redis
// appended it, not a click time) and the IDs of its first and last
// entries. The "key=value" folders are Hive-style partitions, so DuckDB,
// Spark, Trino and Athena read the archive with no glue (DuckDB:
// read_parquet('raw/**/*.parquet', hive_partitioning = true)).
//
// A row is one click event, in log order (Row lists the columns). Entries
// that hold only a tick have no rows; the file's key-value metadata names
// the chunk (partition, first and last offset, number of entries and
// events) and lists every tick with its entry, so a recount replays the
// chunk exactly as the log had it (Chunk.Entries). Columns are compressed
// with zstd; ad_id, country and log_offset are dictionary-encoded.
//
// # Chunks are decided by the log alone
//
// A chunk starts at the entry after the last one archived and ends before
// the first entry that is appended in a later Interval (by entry ID time)
// or that would take it past MaxEvents events (Chunking.Cut). A chunk is
// written only once the entry after it exists: from then on nothing can
// change it, since stream IDs only grow. So the chunk that starts at a
// given entry always has the same entries, the same key and the same
// bytes, whoever writes it and however often: writing it again after a
// crash (between the object and the offset) replaces the object with
// itself, which is what makes the archive exactly once even on a store
// without conditional writes. Kafka Connect's S3 sink decides its files the
// same way.
//
// # The archived offset, fenced
//
// After a chunk's object is written, Archiver records its last entry ID as
// the partition's archived offset (Offsets.SaveArchived) with the owner's
// epoch: the partition's fence refuses an owner that has been replaced, so
// only the current owner moves it, and only forward. The log is trimmed
// only below both the snapshot's offset and the archived offset (package
// snapshot), so every entry is in the log or in the archive, and a chunk
// being written is still in the log to be written again.
//
// Each file also names the last entry of the chunk before it (its
// metadata's previous offset: the archived offset it was cut after), so a
// partition's files form a chain and a missing file shows where the chain
// breaks: the next file names an entry no file ends with.
//
// The archive begins where the log began when archiving was first turned
// on: entries trimmed before that were never archived. Its first file
// says which: its previous offset is LogStart when nothing had been
// trimmed (Redis counts every entry ever added to a stream), empty when
// the log's start was lost.
//
// A new kind of object store for Bucket must pass the contract suite in
// package archivetest, as directories and S3 (SeaweedFS) do.
package archive
