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
//   - Otherwise its click identity, the pair (ad_id, event_id) hashed to 64
//     bits (clickID), is looked up in its minute's dedup set: a repeat is
//     dropped (Stats.Duplicates); a new one is counted in the cell (ad,
//     country, ip, user_id) of its minute. The same event_id on two ads is
//     two clicks, wherever the ads are partitioned.
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
// # Hashes stand for strings
//
// Three things are compared by a 64-bit hash rather than by their text: a
// click's identity (ad_id, event_id) for dedup (clickID), ip and user_id
// (the filters, their xxhash). Two different values
// with the same hash would be taken for one; among the values of one
// partition's minutes in memory, that has a chance of about n²/2⁶⁵ (below
// 10⁻⁶ for n = 10⁸ distinct values). ad_id and country are kept as text,
// since answers name them.
//
// # Memory
//
// The state of a minute has three parts, each with its own budget:
//
//   - Rows: clicks per (ad, country), the aggregate every unfiltered and
//     country-filtered query reads. Ads and countries are interned per
//     partition as uint32 ids (strtab: the strings, their hashes and a
//     reference count per row using them, found through an open-addressing
//     index of ids), so a row holds ids, and an ad's string is paid once
//     for all its minutes. Ids of strings no minute in memory uses are
//     freed and reused. A base that a country query has read also lists
//     its rows grouped by country, each with its ad and clicks (8 bytes
//     per row, built by the first such query, Memory.CountryIndexBytes),
//     so that a country query reads its country's rows alone.
//   - The filter index: per counted event, the hashes of its user_id and
//     ip (16 bytes), plus, for a minute that a user or ip filter has read,
//     its events sorted by user hash and by ip hash (4 bytes each per event,
//     built by the first such query).
//   - Dedup: the hashes of the clicks counted (clickID), while the minute
//     is inside the dedup horizon.
//
// Each minute is a base, compact and immutable, plus a delta of what it
// counted since the base was built (see minute.go and base.go):
//
//   - The base lists its ads in canonical order (by the xxhash of the
//     ad_id, then the ad_id), each with its clicks and its rows by country
//     string. Columns are narrow, values that do not fit are kept aside:
//     6 bytes per (ad, minute) key, 3 per row. Its events are grouped by
//     row in the same order, so an event's row is implied by its position,
//     and sparse indexes lead from a key to its first row and from a row to
//     its first event. Its dedup hashes are a sorted array, 8 bytes per id,
//     searched by bisection.
//   - The delta holds open-addressing tables of (ad, country) → clicks and
//     ad → clicks, the events in log order with their row, and a hash set of
//     event ids (10.7 to 16 bytes per id: it grows by half at 3/4 full; a
//     new filling minute is sized like the one before it).
//
// A filling minute is all delta. When the watermark completes a minute its
// delta is merged into a new base; late events then go to a new delta,
// merged again once it holds more than 64 events and an eighth of the
// base, or when a snapshot writes the minute whole. When a minute leaves the
// dedup horizon it is merged a last time and its dedup hashes are
// released. Merging changes no answer and no byte of the minute's
// encoding.
//
// # Queries
//
// Count finds the ad in each base of its window by interpolation on the ad
// hashes (uniform, so a few probes), then reads the key's clicks, bisects
// its rows for a country, or, for an ip or user_id, reads either the ad's
// events or, when there are many, the event index. Deltas are read through
// their tables and scanned for ip and user_id.
//
// Top adds the clicks of each key (or each matching row, or each matching
// event found through the event index) into an array indexed by ad id. It
// then finds the n-th largest count by a quickselect on the counts alone,
// compares ad_id strings only among the ads tied at that count, and sorts
// the n kept.
//
// Adding up a long window every time would read millions of keys that
// cannot change, or change only by a few late events, so an unfiltered or
// country query whose window holds at least 4096 keys in complete minutes
// goes through a small per-partition cache (topcache.go, which has the
// proof of exactness), in the spirit of Druid's per-segment result cache:
//
//   - An entry holds, for one filter, the per-ad sums over a set S of
//     minutes that were complete when it was built, its best ads by
//     count (more than n, since queries skip some, and every ad tied
//     with the last), and the position of the late journal then.
//   - The late journal lists every event counted in a complete minute, as
//     it is counted (a complete minute changes in no other way). A query
//     adds to an entry the journal's events of S since that position, the
//     minutes of its window outside S (the filling ones, or a slid
//     window's new ones), and subtracts the minutes of S outside its
//     window. The ads this difference touches are candidates with their
//     exact counts; of the others, whose counts are the entry's, the first
//     n of the ranking (and those tied with the n-th) are. Each query costs
//     O(difference + n), plus the ties.
//   - An entry is unusable once a minute of S left memory or the journal
//     dropped what it needs, and, as a check of the journal, when the
//     revisions of S rose by other than the journal's events of S. When
//     the difference passes an eighth of the window, the entry is replaced
//     by one derived from it and the difference (a pass over the ads,
//     instead of over every key again).
//   - A filling minute holds a key for most ads in play, and adding it
//     up was most of the cost of a Top over the last hour. Its delta
//     lists the ads and rows that reached 64 clicks (heavyAt); every
//     other one has at most 63 there. So a query takes as candidates the
//     ads the difference touches, the heavy ones, and the entry's ranking
//     in order, each with its exact count, until the ranking's count plus
//     63 per filling minute falls below the n-th best count so far
//     (topLight, with the proof); it adds the filling minutes up only when
//     the ranking runs out first.
//   - At most 4 entries per partition, least recently used out, and a
//     journal of at most 16384 events (dropping its older half and the
//     entries that needed it). Memory.TopCacheBytes counts both: 4 bytes
//     per ad id per entry, 16 per ranked ad and per journal event.
//
// Queries by ip or user_id read few events through the event indexes and
// are not cached.
//
// # Snapshots
//
// Snapshot encodes the meta (offset, watermark, stats, the minutes in
// memory), every minute changed since the last snapshot passed to MarkSaved,
// and the minutes that left memory since then. Every change takes a number
// from a sequence; MarkSaved cleans a minute only if it has not changed since
// its snapshot was taken, so the writer may keep applying while a snapshot is
// being saved.
//
// A complete minute that changed only by late events since the store took
// it whole is not written whole again: its base is that whole form, and its
// delta, the late events, is written as a late part (late.go) that replaces
// the stored one. A minute of a million events that gets a thousand late
// ones costs a thousand events per snapshot, not a million: with 1% of
// clicks 2 to 10 minutes late, rewriting whole minutes made the snapshots
// write about 290 bytes per event ingested. Once the delta is due for a
// merge (an eighth of the base), the minute is merged and written whole,
// which deletes its part, so a part stays small. A part names the whole
// form it extends (its events and revision); Restore counts a part's events
// into the delta of the minute, in their log order, only if the stored
// minute is that form, and ignores it otherwise (a save that failed after
// it wrote the minute whole and before it deleted the part; the minute then
// holds the part's events already).
//
// A minute is encoded in a columnar binary format whose first byte is its
// version (encode.go has the layout): its countries and ads as strings, its
// rows as small varints, then the user, ip and click-identity hashes as
// fixed 8-byte columns. Format 1, which earlier builds wrote, hashed the
// event_id alone; a minute restored from it keeps that key until it leaves
// the dedup horizon (minuteFormat). The order of everything is fixed by the minute's content,
// not by interned ids or insertion order, so encoding is deterministic: the
// same state gives the same bytes, and Restore of a stored snapshot gives
// back the same state. A complete minute's base is already in that order,
// so encoding it is a copy and restoring it needs no sort and no hashing
// beyond finding its ads. Restore refuses a minute in an unknown format
// with ErrFormat, and one whose parts contradict each other with
// ErrCorrupt.
//
// Restore also reads minutes stored by the previous build (format 0, an
// encoded clickaggv1.MinuteState with ip and user_id as text: no byte of
// it can start with format 1's first byte). It hashes their ip and user_id
// and marks them changed, so the next snapshot rewrites them in format 1.
// Their events keep the order of the stored cells, not the log's, so those
// minutes encode differently from a replay that never went through format
// 0; every answer is the same.
//
// # Decoding
//
// The aggregator applies entries with ApplyEncoded, straight from their
// wire form: the events are decoded into strings that alias the entry's
// bytes, which the state never keeps (ads and countries are interned as
// copies, the rest hashed), so applying allocates nothing per event. A
// malformed entry is refused whole (ErrEntry) before anything is applied,
// as proto.Unmarshal would refuse it.
//
// # Concurrency
//
// One goroutine applies and snapshots; queries may run concurrently from any
// number of goroutines under a read lock.
package tally
