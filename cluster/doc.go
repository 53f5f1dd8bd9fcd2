// Package cluster keeps the cluster's shared state in etcd: the partition
// count, the live members, the partition assignment and the coordinator
// election.
//
// Keys, under a prefix (default "/clickagg") so that clusters can share an
// etcd:
//
//	<prefix>/config/partitions        partition count, decimal; written once
//	<prefix>/config/redis-id          identity of the cluster's Redis, which
//	                                  holds it too; written once
//	<prefix>/members/<role>/<id>      JSON Member, attached to its lease
//	<prefix>/assignment               JSON Assignment, written by the leader
//	<prefix>/leader/<lease hex>       election candidates (concurrency.Election),
//	                                  JSON Candidate (ID and gRPC address)
//	<prefix>/draining/<member>        a drained aggregator gets no partitions
//	<prefix>/pins/<partition>         member ID a partition is pinned to
//	<prefix>/handoffs/<epoch>-<part>  JSON Handoff, the last few hundred moves
//
// A member's key lives exactly as long as its lease: a process that dies
// stops refreshing the lease, etcd deletes the key after the TTL, and every
// watcher sees the member leave. Each registration is a new lease, and the
// lease ID is the member's Incarnation, so a restarted aggregator with the
// same ID is a different owner than its previous life: ownership is the pair
// (ID, Incarnation), which is what lets the coordinator raise a partition's
// epoch when a process restarts under the same name.
//
// Only the elected coordinator writes the assignment, the drains, the pins
// and the handoff records, and each write is an etcd transaction
// conditioned on its election key still existing with the revision it was
// created at. A deposed leader (its lease expired while it
// was paused, or it resigned) therefore cannot overwrite its successor's
// assignment: its write fails with ErrNotLeader. Assignment epochs only grow
// as long as the assignment key is never deleted by hand; deleting it would
// restart versions at 1 and the snapshot fences in Redis would then refuse
// every new owner.
//
// A member's lease is refreshed one request at a time, so the member knows
// a moment (Registration.ValidUntil) before which etcd cannot have expired
// it. A process that was paused past its TTL sees that moment in the past
// as soon as it runs again, and must stop acting as the member at once,
// before its keepalive has even failed.
//
// Dial secures the connection with -etcd.cert-file, -etcd.key-file and
// -etcd.ca-file (TLS, and a client certificate for etcd's
// --client-cert-auth; the files are reloaded per handshake by tlsconf)
// and -etcd.username with -etcd.password-file (etcd's authentication).
// It makes one read before returning, so that a refused certificate or
// password is an error at start that names the flag to fix.
//
// Watchers follow the dskit pattern: a Get, then a watch from the revision
// after it; when etcd cancels the watch (compaction, lost leader) they Get
// again and resume, so a callback always sees a consistent full state.
//
// A new implementation of the cluster state the roles use (their
// interfaces aggregator.Cluster, coordinator.Cluster and queryd.Cluster)
// must pass the contract suite in package clustertest, as this one does
// on a real (embedded) etcd.
package cluster
