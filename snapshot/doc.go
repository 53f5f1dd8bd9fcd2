// Package snapshot stores each partition's aggregation state in Redis,
// together with its log offset and its owner's epoch, and fences out owners
// that are no longer current.
//
// # Keys
//
// For partition p under prefix (e.g. "clickagg"):
//
//	prefix:{pN}:epoch  string  the fence: the highest epoch that claimed or saved p
//	prefix:{pN}:snap   hash    "meta" (encoded SnapshotMeta, which holds the log
//	                           offset), one field "m:<unix minute>" per minute
//	                           (package tally's versioned minute encoding), and
//	                           "l:<unix minute>" for a minute's late part
//	prefix:{pN}:log    stream  the partition log (package partlog)
//	prefix:{pN}:archived string the ID of the last log entry the raw
//	                           archive holds (package archive)
//	prefix:{pN}:history string the Unix minute before which the history
//	                           holds the partition (package history)
//
// All of them share the hash tag {pN}, so the Lua scripts that touch them
// together are legal on Redis Cluster.
//
// # Fencing (docs/architecture.md, invariants 4, 5 and 7)
//
// The coordinator gives every (partition, owner) assignment an epoch that only
// grows. A new owner first calls Claim with its epoch, which raises the fence;
// from then on the fence refuses every Save of an older epoch. Save checks the
// fence and writes in one Lua script, so there is no window between check and
// write: a paused or partitioned ex-owner that wakes up and saves gets
// ErrStaleEpoch, writes nothing, and must stop serving the partition. Claim
// with the current epoch succeeds, so an owner may claim again after a
// restart.
//
//	fence=e0 ──Claim(e1>e0)──▶ fence=e1 ──Save(e1)──▶ written
//	                              │
//	                              └──Save(e0<e1)──▶ ErrStaleEpoch, nothing written
//
// Because the state, the offset (inside meta) and the fence are written by one
// script, a snapshot is always a consistent cut: recovery loads it and replays
// the log after its offset, and reproduces the state exactly (invariant 4).
// Minute values are absolute, so a replayed save rewrites identical values
// (invariant 7).
//
// # When Redis is full
//
// A Redis at its maxmemory under noeviction refuses writes that may grow
// memory, and Redis 7 refuses them in a script only while the script has
// written nothing yet: once one write went in, the script runs to its end.
// The first write of every save is the fence's SET or a minute's HSET
// (only a save that merely drops minutes starts with an HDEL, which is
// never refused), so a save is stored whole or refused whole (an OOM
// error), never half, and the previous snapshot stays as it was. Load
// reads without MULTI, which a full Redis refuses even for reads, and the
// claim script is allow-oom, so partitions still move and restore while
// Redis is full (TestSaveWhenRedisFull).
//
// # Incremental snapshots
//
// Most minutes of a partition stop changing once they complete, and a
// snapshot can hold hours of minutes (tens of MB). So Save writes only what a
// Write lists: the meta, the minutes that changed since the last accepted
// save, and deletes the minutes listed in Drop; every other stored minute is
// left as it is. A complete minute that changed only by late events is not
// written whole again: its late part (the late events since it was stored
// whole) replaces the one stored, and the minute stays as it is; writing a
// minute whole deletes its late part. The meta is written after the minutes, and the log is
// trimmed last, so the log is never trimmed unless the snapshot that makes the
// trimmed entries unnecessary has been stored.
//
// # Log trimming
//
// Save is the only place where the partition log shrinks: with TrimLogBefore
// set, the same script runs XTRIM MINID on the partition's log, removing the
// entries older than that ID (the caller passes the offset of the snapshot it
// saves, or anything older). A refused save trims nothing, so a stale owner
// can never remove entries the current owner's snapshot still needs.
//
// With the raw archive on (Write.KeepUnarchived), the script also reads the
// archived offset and trims no lower than it, and nothing while none is
// recorded: an entry leaves the log only once both the snapshot and the
// archive have it. SaveArchived moves that offset, fenced like a save and
// only forward.
//
// # Replicas
//
// With WithWriter, every write (Claim, Save, SaveArchived, SaveHistory)
// succeeds only once as many replicas as -redis.wait-replicas asks have it
// (package durable). A failover then cannot take back a fence (an older
// owner could save again) or a snapshot whose log entries were trimmed;
// and since a replica applies writes in order, a snapshot it has implies
// every log entry appended before it on that primary.
//
// A new implementation of the store the aggregator uses (Claim, Save,
// Load) must pass the contract suite in package snapshottest, as this one
// does on one Redis server and on a Redis Cluster.
package snapshot
