// Package router is the ingest front door of clickagg: it validates click
// events, appends each valid one to the log of its ad's partition, and tells
// the client which events were accepted and why the others were not.
//
// # Validation
//
// Each event is judged on its own; a request mixes accepted and rejected
// events freely, and a rejection names the event's index and every problem
// found, in words a person can act on. docs/bad-inputs-ingest.md lists every
// bad input and the answer it gets. In short:
//
//   - event_id, ad_id, user_id: non-empty, at most MaxIDLength bytes, valid
//     UTF-8, no control characters.
//   - ip: IPv4 or IPv6 without a zone, stored canonical (netip's spelling;
//     IPv4-mapped IPv6 stored as IPv4), so filters match however the client
//     wrote it.
//   - country: an assigned ISO 3166-1 alpha-2 code, stored upper-case.
//   - click_time: a valid timestamp in [now-Horizon, now+MaxSkew] on the
//     router's clock. The lower bound is what keeps dedup exact: aggregators
//     remember clicks, the pairs (ad_id, event_id), for at least the
//     horizon, so an event they might
//     have forgotten is refused here rather than counted twice.
//
// Only a request with no events (INVALID_ARGUMENT) or with more than
// MaxEvents (RESOURCE_EXHAUSTED) fails as a whole for its content.
//
// # Appending and acknowledgement
//
// The valid events of a request are grouped by partition (ring.Partitioner)
// and join the open batch of the router's group commit: the events of all
// requests that arrive while -router.append-concurrency appends are in
// flight are appended together, one clickaggv1.LogEntry per partition, in
// one pipelined Log.Append, performed by one of the waiting requests. So
// log entries grow with the load and their number does not: under load an
// entry carries hundreds of events, and Redis and the aggregators pay their
// per-entry costs once for all of them. An event is reported accepted only
// after Redis answered the append of its batch. If it fails, every request
// of the batch fails with UNAVAILABLE and reports nothing accepted, even
// though some entries may have been appended: the client retries with the same event_ids and the aggregators drop the
// duplicates. A request fails so, with UNAVAILABLE, at the latest
// -router.append-timeout after its events joined a batch, however long the
// Redis client would take to give up on a Redis that is down or hung. Retried events always land where their first copy did,
// because the partition is a function of the ad_id alone, or, for an ad
// split over several partitions (package hotkey), of the ad_id, the click
// minute and the event_id, through a split table that every router holds
// in the same version for every minute it accepts clicks of.
//
// # The memory bound
//
// The logs live in Redis's memory and are trimmed only below what is
// snapshotted and archived, so while the object store is unreachable they
// grow. With WithMemoryBound, Run reads the memory of every Redis primary
// (INFO memory; each primary of a Redis Cluster) every
// -router.redis-memory-check-interval and exports it per node, and while
// any primary uses at least -router.max-redis-memory-fraction of its
// maxmemory, Ingest refuses every request with UNAVAILABLE
// (ErrLogOverBound, naming the primary) before appending anything.
// The rest of maxmemory stays free for what makes room again: snapshots
// and archived offsets, whose writes let the logs be trimmed. Without the
// bound Redis would fill up and refuse those writes too (ErrLogFull),
// which no retry undoes. Ticks are still appended: a few bytes per
// partition and router each TickInterval, they keep watermarks moving, so
// minutes complete and real-time queries stay complete while ingest waits.
//
// # Split ads
//
// With WithSplits, each request reads the split table once, after the
// clock, and routes each click by hotkey.Table.Route. A router whose copy of
// the table was not confirmed current with etcd within
// -hotkey.max-staleness routes nothing: the request fails with UNAVAILABLE
// (ErrSplitsUnavailable) and the client retries elsewhere, since routing
// with an old table could send a retried click to another partition than
// its first copy, where dedup cannot see it.
//
// # Ticks and watermarks
//
// Watermarks are event-time watermarks computed by the aggregators from the
// log's content, never from their own clocks, so that replaying a partition's
// log after a crash reproduces exactly the same watermarks and therefore the
// same completed minutes. Run appends, at start and then every TickInterval,
// a tick to every partition: a LogEntry with tick_ms set to this router's
// frontier,
//
//	frontier = min(max(newest accepted click_time, now - IdleLag), now + MaxSkew)
//
// never lower than the previous tick of this router. Ticks make idle
// partitions advance: a partition that receives no clicks still learns how
// far event time has progressed. The now-IdleLag floor lets minutes complete
// when no clicks arrive at all. A test or a backfill that sends event times
// far in the past must set a large IdleLag, or the wall clock would complete
// minutes before their data has been sent. The newest accepted click_time
// is raised only after its append succeeded, so a tick never carries the
// time of a click that may not be in the log.
//
// # Status
//
// RouterService.RouterStatus (NewStatusServer, Router.Stats) reports what
// the router ingested since it started: requests, events accepted and
// rejected, failed appends, and the events accepted per second over the
// last minute, from a ring of per-second buckets on the router's clock.
// They are exact counts kept beside the Prometheus counters, which are
// floats for scraping; the coordinator sums them over the live routers in
// GetClusterStatus. They start at zero with the process.
//
// # Concurrency
//
// Ingest is safe for concurrent use by many RPCs; the frontier is an atomic
// maximum. Run is called once; it ends when its context does, with nothing
// left running.
package router
