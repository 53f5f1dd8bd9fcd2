// Package queryd answers users' count and top-ads queries and publishes
// each completed minute's top list.
//
// queryd holds no counts. It follows the partition assignment and the
// aggregators' addresses in etcd and keeps an immutable directory,
// partition → (owner, address), swapped atomically on every change. A count
// goes to the owner of the ad's partition; a top-N query groups all
// partitions by owner, asks each owner for the exact top N of its
// partitions, and merges: a (non-split) ad lives in one partition, so the
// lists are disjoint and the merged top N is exact, ties included (count
// descending, then ad_id ascending).
//
// # Split ads
//
// With WithSplits, queryd follows the hot-key split table (package hotkey).
// A count of a split ad adds up its counts in its own partition and in
// every partition of every split interval overlapping the window: each
// click lives in exactly one of them. A top-N passes the ads with an
// interval overlapping the window as split_ads to every owner, which leaves
// them out of its top list and returns their counts in its partitions in
// split_counts; queryd merges the top lists with the split counts of all
// owners (topn.Merge adds up an ad found in several lists), which is exact.
// The publisher and WatchPopularAds use the same path. While the copy of
// the table is not confirmed current within -hotkey.max-staleness, every
// query fails with UNAVAILABLE: a missed split would undercount.
//
// An answer is never silently partial. A partition without an owner, an
// owner without an address, or an owner that fails or times out makes the
// whole query fail with UNAVAILABLE naming the partitions. When the
// directory changed while a call failed (a partition moved), the query is
// retried once on the new directory. Every answer says whether the
// watermark of the partitions involved has passed the end of its window
// (complete).
//
// # Publishing
//
// Run polls every -queryd.poll-interval. A poll first learns the cluster's
// smallest watermark with a one-ad top query over all partitions; minute m
// is complete when that watermark is at or after m's end. If any partition
// cannot answer, the poll publishes nothing. Otherwise, for each minute not
// yet published (at most 16 per poll), it computes the top
// -queryd.publish-count ads and, when the store (Publications) does not
// already hold exactly that list, stores the protojson of a
// GetPopularAdsResponse as the minute's list and announces it: in Redis,
// <prefix>:top:<minute> and the channel <prefix>:top (package toplist).
// At startup only the last -queryd.republish-minutes completed minutes are
// considered.
//
// Late events change complete minutes for as long as the dedup horizon
// lets them (-queryd.republish-horizon). Rather than recompute every minute
// of the horizon, the publisher reads, on every poll that publishes a new
// minute and every -queryd.recheck-interval, the sums over all partitions
// of the minutes' revisions (MinuteRevisions: the events each minute
// counted after it completed) and computes again only the published
// minutes whose sum grew, at most 16 per poll; a changed list overwrites
// the key and is announced again. See revisions in publish.go for why no
// change is missed and why moves and unavailable partitions are not taken
// for changes.
//
// Each WatchPopularAds stream gets its own count and filter computed for the
// same minutes, starting with the newest completed minute, and its corrected
// minutes again, across the republish horizon. Streams never block the
// publisher: each has a bounded buffer, and a stream that lets it fill is
// ended with RESOURCE_EXHAUSTED.
//
// Errors become status codes in one place (statusOf): INVALID_ARGUMENT for
// refused requests (docs/bad-inputs-query.md lists them), UNAVAILABLE for
// unreachable partitions and shutdown, RESOURCE_EXHAUSTED for slow watchers.
package queryd
