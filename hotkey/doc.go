// Package hotkey spreads hot ads over several partitions (on distinct
// aggregators) without losing or double-counting a click: the split table,
// the routing rule, the protocol that changes the table, the routers' and
// queryds' copy of it, the heavy-hitter sketch aggregators report, and the
// planner that decides splits.
//
// # The split table
//
// One etcd value, <prefix>/splits, holds {version, splits: [Interval]}. An
// Interval spreads ad X over partitions for the click minutes [from, to)
// (to 0: open). An ad may have several intervals over time (split, unsplit,
// split again); they never overlap. Only the coordinator leader writes the
// table, in a transaction conditioned on its election key (Store.Write).
//
// # Routing rule (Table.Route)
//
// A click of ad X with click minute m goes to
// partitions[xxhash(event_id) % len(partitions)] of X's interval containing
// m, else to X's own partition (ring.Partitioner). The click keeps ad_id X
// in the log, so aggregators count it under X wherever it lands. A retried
// click (same ad_id, event_id and click_time) lands where its first copy
// did, so the aggregators' dedup, by the pair (ad_id, event_id), still sees
// both copies, as long as
// every router routes minute m with the same intervals. The rest of this
// page is why they do.
//
// # Changing the table (Publisher)
//
// A change (split or unsplit) is written with an effective minute M, the
// first with M·60s − MaxSkew − now ≥ LeadTime, and changes only the
// routing of minutes ≥ M (Table.apply checks this). Routers accept clicks
// at most MaxSkew ahead of their clock, so no router routes a click of
// minute ≥ M before M·60s − MaxSkew: at least LeadTime after the write.
// Each router acknowledges the version it holds in
// <prefix>/split-acks/<router id> on its membership lease; the leader waits
// for every live router (members of role router, acks of their current
// incarnation) until the deadline M·60s − MaxSkew − Safety and otherwise
// writes the table again without the change, before any router could use
// it.
//
// # Staleness (Follower)
//
// Acks alone do not cover a router that fell behind after acking, or one
// whose lease was lost while it still serves (it registers again and
// acknowledges on its new lease, Follower.SetAckLease, but serves in
// between). So a router routes (and a
// queryd answers) only with a copy confirmed current within MaxStaleness:
// a linearizable Get sent at time s whose result the copy is at least as
// new as. A router routing a click of minute ≥ M at time t ≥ M·60s − MaxSkew
// therefore holds the table as of at least t − MaxStaleness, which is after
// the change's write (LeadTime > MaxStaleness) and after a withdrawal (at
// most M·60s − MaxSkew − Safety, and Safety > MaxStaleness): it routes
// with the change if and only if the change stands. Clocks of servers are
// assumed to agree within Safety − MaxStaleness.
//
// A queryd that misses a split undercounts, while one that assumes a split
// that was withdrawn only asks more partitions for zeros; since a split is
// written LeadTime before its first click can exist, the same staleness
// bound keeps queryd exact.
//
// # Queries
//
// A count of X over [from, to) sums X's counts in X's own partition and in
// every partition of every interval overlapping the window
// (Table.Partitions): each click is in exactly one of them. A top-N passes
// the ads with an interval overlapping the window (Table.SplitAds) to every
// aggregator, which leaves them out of its top list and returns their
// counts in its partitions instead; queryd sums those and merges them with
// the top lists. Non-split ads live in one partition, so the result is
// exact.
//
// # Garbage collection
//
// Intervals that ended more than Keep ago are dropped at the next change.
// Keep must cover the routers' acceptance horizon (older clicks are
// refused, so their routing no longer matters) and the aggregators'
// retention (older windows are refused as out of range, so no query needs
// them).
//
// # Heavy hitters (Sketch) and automatic splits (Planner, Controller)
//
// Each aggregator feeds every applied event of a partition to that
// partition's Sketch (Space-Saving over a sliding minute of processing
// time) and reports its top ads. The coordinator's Controller turns those
// reports into an Observation, asks the Planner for decisions (split above
// SplitRate, unsplit below UnsplitRate after MinSplit), and applies them
// through the Publisher.
package hotkey
