// Package tally is the deterministic state of one partition: per-minute click
// counts with their dedup sets, the watermark, and the log offset they
// reflect. It does no I/O; the aggregator feeds it log entries, asks it
// queries, and stores the snapshots it encodes.
//
// # Rules
//
// The state is a pure function of the log entries applied, in order, so a
// replay from a snapshot reproduces it exactly. Apply handles one entry: its
// events first, then its tick.
//
//   - The watermark is the largest tick applied minus AllowedLateness. It
//     never goes down and is 0 until a tick raises it.
//   - An event belongs to the Unix minute floor(click_time_ms / 60000). A
//     minute is complete once the watermark reaches its end.
//   - An event whose minute ended DedupHorizon or more before the watermark
//     is refused (Stats.Expired): that minute's dedup set is gone.
//   - Otherwise the 64-bit xxhash of its event_id is looked up in its
//     minute's dedup set: a repeat is dropped (Stats.Duplicates); a new one
//     is counted in the cell (ad, country, ip, user_id) of its minute.
//   - An event counted in a complete minute is late (Stats.Late) and raises
//     the minute's revision, so the published minute is rewritten.
//
// # A minute's life
//
//	           event            watermark ≥ end        end + DedupHorizon      end + Retention
//	(absent) ───────▶ filling ─────────────────▶ complete ─────────────────▶ frozen ─────────────▶ dropped
//	                  counts events              counts late events,         refuses events;        left memory;
//	                                             revision++ each             dedup set released     still in the store
//
// Retention is at least DedupHorizon, so a minute that can still change is
// always in memory, and one that has left memory can never change again.
//
// # Memory
//
// Strings are interned per partition as uint32 ids, reference counted by the
// cells of the minutes in memory, so the tables shrink as minutes leave.
// Each minute keeps its cells and two rollups, ad → clicks and country → ad →
// clicks, as parallel slices found through maps of 4-byte keys, plus lists of
// cells by ip and by user threaded through the cells. Queries filtered by
// country read the rollups; by ip or user, the shorter list. Dedup sets are
// open-addressing tables of 8-byte hashes (about 16 bytes per id). Once a
// minute can no longer change, its dedup set and cell map are released.
//
// # Snapshots
//
// Snapshot encodes the meta (offset, watermark, stats, the minutes in
// memory), every minute changed since the last snapshot passed to MarkSaved,
// and the minutes that left memory since then. Every change takes a number
// from a sequence; MarkSaved cleans a minute only if it has not changed since
// its snapshot was taken, so the writer may keep applying while a snapshot is
// being saved. Encoding is deterministic: the same state gives the same
// bytes, and Restore of a stored snapshot gives back the same state.
//
// # Concurrency
//
// One goroutine applies and snapshots; queries may run concurrently from any
// number of goroutines under a read lock.
package tally
