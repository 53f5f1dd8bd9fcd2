// Package durable runs the Redis writes that clickagg acknowledges: a
// write is done only once it has reached as many replicas as the operator
// asks for (-redis.wait-replicas), within a time (-redis.wait-timeout).
//
// Redis replicates asynchronously: a primary answers a write before any
// replica has it, and a primary that dies then takes the write with it
// when its replica is promoted. WAIT closes that gap for the writer: it
// blocks until the replicas have acknowledged every write the same
// connection made before it, or the timeout passes, and answers how many
// did. So each Do sends its writes and a WAIT on one connection, in one
// pipeline, and fails unless enough replicas answered. A failed Do may
// still have been applied on the primary (and may even survive); what it
// guarantees is only that nothing it acknowledged can be lost by the
// failover of one primary to an up-to-date replica. Callers treat a failed
// Do as not done and do it again: the router answers UNAVAILABLE and the
// client retries with the same event ids, which the aggregators drop as
// duplicates; the snapshot scripts are idempotent.
//
// # Which connection
//
// WAIT counts the writes of its own connection, so where it goes matters:
//
//   - *redis.Client (one server, or the primary Sentinel names): a
//     pipeline runs on one connection; WAIT is its last command.
//   - *redis.ClusterClient: a WAIT without a key would go to any node.
//     Do groups the writes by the primary that owns their hash slot
//     (ClusterClient.MasterForKey) and sends each group, then WAIT, in a
//     pipeline on that primary's own client, the groups at once.
//
// # Redirections on Redis Cluster
//
// A write sent to a primary that no longer owns its slot is answered
// MOVED (the slot moved, or a failover made another node its primary),
// ASK (the slot is being migrated and the key is already on the target)
// or TRYAGAIN (a multi-key command during a migration). Such a write was
// not applied, so Do sends it again, by the same path, after a short
// jittered pause and a reload of the slot map, a few times at most: to
// the node the answer names when the slot map knows it by that address
// (with ASKING before it for ASK), else to the slot's primary in the
// reloaded map. Do follows them itself because the redirected write must
// still be waited for on the connection that ran it, which the
// ClusterClient's own redirection would not allow; and because a
// redirection is cheap and certain to succeed soon (the answer says
// where), while failing would turn every reshard into client retries.
//
// A write that meets any other error, a connection that breaks or a WAIT
// that comes back short is not retried here: it fails Do at once and the
// slot map is reloaded for the next call. Failing is always safe, since
// nothing unacknowledged is ever counted on, and here it is also right: a
// primary that died is only replaced after the cluster's node timeout and
// an election, and a primary without its replica waits for one to sync,
// seconds in which retrying here would only hold the caller past its own
// deadline; the caller's retry (a client's, through another router; an
// aggregator's next save) meets the new primary.
//
// # Scripts
//
// Script writes run by EVALSHA, like redis.Script.Run. A server that does
// not have the script (a new primary, a restarted node) answers NOSCRIPT
// without running it; Do runs those writes again by EVAL in a second
// pipeline, with its own WAIT, on the same node. EVAL caches the script,
// so the next EVALSHA there succeeds.
//
// With -redis.wait-replicas 0 (the default) Do is a plain pipeline on the
// client, and the ClusterClient routes it as usual.
package durable
