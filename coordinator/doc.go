// Package coordinator is the cluster's resource manager: it assigns
// partitions to aggregators and serves the admin API.
//
// Every coordinator campaigns in the etcd election; only the leader
// assigns. Its life, as Run drives it:
//
//	campaign ──elected──▶ read the stored assignment ──▶ lead
//	lead: watch the aggregator members; on each change plan and write
//	lead ──lease lost / write refused (ErrNotLeader)──▶ resign ──▶ campaign
//	any state ──ctx done──▶ resign, return
//
// Planning is pure (plan): the owners come from bounded-load consistent
// hashing over the live aggregator IDs, so a membership change moves few
// partitions and no aggregator owns more than Load times the mean. Each
// owner is the pair (member ID, incarnation); a partition whose pair is
// unchanged keeps its epoch, and any other gets the new assignment's
// version as its epoch. Versions grow by one per write and a new leader
// starts from the stored assignment, so a partition's epoch strictly grows
// every time its owner changes, across leader failovers too. That is what
// the snapshot fence in Redis relies on to refuse a former owner's writes.
//
// Writes are conditioned in etcd on the leader still holding its election
// key, so a deposed leader that has not noticed yet cannot overwrite its
// successor. After a write whose outcome is unknown (a timeout), the leader
// reads the assignment back before planning again, so that it never gives
// the same version, and so the same epoch, to two different owners.
//
// With no aggregators every partition is left unassigned; with more
// aggregators than partitions the ones already owning partitions are kept
// and the rest stay idle.
//
// The admin API (NewServer) answers from etcd on every coordinator, leader
// or not; GetClusterStatus also asks each owner for its partitions' status,
// in parallel with a deadline per call, and lists the partitions whose
// owner did not answer as unavailable rather than failing the call.
package coordinator
