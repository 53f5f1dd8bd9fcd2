// Package ratelimit limits the clicks each caller may send to the
// routers' IngestService per second (-router.caller-rate), so that one
// misbehaving client, or a shipper replaying a backlog at full speed,
// cannot take the whole cluster's ingest capacity from the others.
//
// # What counts
//
// A unary Ingest costs len(events) of its request; an IngestStream costs
// the events of each message as it is received. A request over its
// caller's rate is refused whole, with RESOURCE_EXHAUSTED, before the
// router sees it: nothing of it is validated, appended or counted, and
// retrying it later is safe. The status message names the caller, the
// rate and the flags, and says when the request would pass; the same
// delay is in a google.rpc.RetryInfo detail for clients that read it. A
// refused stream message ends the stream, as any message failing as a
// whole does (the answers already sent stand).
//
// A request larger than the burst is not this package's to refuse: the
// burst is at least -router.max-events-per-request, so such a request is
// too large for the router, which refuses it naming that flag.
//
// # Callers
//
// Who the caller is comes from a function given to New: the verified
// identity from authorization when it is on, else the peer's IP address
// (PeerIP). Each caller has a token bucket (golang.org/x/time/rate) of
// the rate, holding at most the burst.
//
// A bucket idle for burst/rate has refilled: it is the same as a new
// one, so it is dropped without changing any answer. The callers' map is
// swept of such buckets at most once a minute (or once a fill time, if
// longer) and whenever it has doubled since the last sweep: it holds the
// callers of the last minute or so, not every caller ever seen.
package ratelimit
