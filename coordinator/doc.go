// Package coordinator is the cluster's resource manager: it assigns
// partitions to aggregators, hands them over live when it moves them,
// carries out the operators' moves, drains and rebalances, and serves the
// admin API.
//
// Every coordinator campaigns in the etcd election; only the leader
// assigns. Its life, as Run drives it:
//
//	campaign ──elected──▶ read the assignment, drains and pins ──▶ lead
//	lead: on each aggregator membership change, and on each admin request
//	      (one at a time), plan and execute; a change that only adds
//	      aggregators waits for JoinDelay without another join, so that a
//	      scale-out moves each partition once
//	lead ──lease lost / change refused (ErrNotLeader)──▶ resign ──▶ campaign
//	any state ──ctx done──▶ resign, return
//
// # Planning
//
// Planning is pure (planWith): the owners come from bounded-load
// consistent hashing over the eligible aggregators, so a membership change
// moves few partitions and no aggregator owns more than Load times the
// mean. Eligible are the live aggregators that are neither draining (an
// operator's DrainMember, kept in etcd) nor leaving (shutting down,
// flagged in their own member key); when none is, the draining ones, then
// all: a partition served by a member on its way out beats one served by
// nobody. Pins (MovePartition, kept in etcd) then place their partitions
// on their member while it is alive and neither draining nor leaving;
// Rebalance deletes them all.
//
// Each owner is the pair (member ID, incarnation); a partition whose pair
// is unchanged keeps its epoch, and any other gets the new assignment's
// version as its epoch. Versions grow by one per write and a new leader
// starts from the stored assignment, so a partition's epoch strictly grows
// every time its owner changes, across leader failovers too. That is what
// the snapshot fence in Redis relies on to refuse a former owner's writes.
//
// # Executing: live handoffs
//
//	check leadership ─▶ Release on every live old owner (≤16 at once) ─▶ write
//	the assignment (and the drain or pin that asked for it, atomically) ─▶
//	record the handoffs ─▶ track the new owners until they serve
//
// A live old owner stops serving the partition, stops applying it, writes
// a final snapshot under its epoch and answers with its stop time and
// offset; only then is the new owner assigned, with that offset
// (cluster.Owner.Released): a new owner that loads exactly that snapshot
// serves at once, since it holds what the old owner served, and catches up
// on what came after while serving. An old owner that is gone, or does not
// release within ReleaseTimeout, makes the move unplanned: the assignment
// is written anyway, the new epoch fences the old owner, and the new owner
// replays from the last snapshot before it serves.
//
// A plan is carried out in waves, each one assignment version: the moves
// of a wave release concurrently (at most 16 Release calls at once), no
// new owner gets more than 8 live handoffs per wave (it loads each
// snapshot, and the last would wait for all), and the next wave starts
// once the new owners serve. Moves from a lost owner all go in the first
// wave: nobody serves those partitions meanwhile. A membership change stops
// the waves; the next plan continues from where they stopped. So
// GetAssignment shows intermediate placements during a large move; a dry
// run of Rebalance with no pins shows nothing to do once it is complete.
//
// Writes are conditioned in etcd on the leader still holding its election
// key, so a deposed leader that has not noticed yet cannot overwrite its
// successor. Before asking aggregators to release anything it also checks
// that it still leads, so that a leader woken from a long pause does not
// stop partitions its refused write would then leave unassigned (the
// releasers take them back after their own release timeout should that
// ever happen). Either refusal is counted (Stats.RefusedWrites), logged as
// "deposed", and ends the term. After a write whose outcome is unknown (a
// timeout), the leader reads the state back before planning again, so that
// it never gives the same version, and so the same epoch, to two owners.
//
// # Handoff records
//
// Each handoff (partition, old and new owner, epoch, planned, stop time)
// is recorded in etcd, the last 1000 kept; the tracker then asks the new
// owner until it reports serving (its serving_since) and completes the
// record, so GetHandoffs reports each pause: the time the partition had no
// serving owner. The stop time of a planned handoff is the old owner's, of
// an unplanned one when the leader noticed the loss. A partition that
// moves again before its new owner served it is one handoff, from the last
// owner that served it to the next one that does. The times come from the
// aggregators' clocks: across machines, a pause is as exact as their
// clocks agree.
//
// # Admin API
//
// NewServer serves reads (members, assignment, status, load, handoffs)
// from etcd and the aggregators on every coordinator, leader or not;
// GetClusterStatus and GetLoad ask each owner in parallel with a deadline
// per call, and list the partitions whose owner did not answer as
// unavailable rather than failing the call. GetClusterStatus's summary
// form (Summary) rolls the same reports up per aggregator and for the
// cluster, with the handoffs in progress and the open splits, so that its
// answer does not grow with the partitions; its full form leaves each
// partition's heavy ads out unless asked (they were most of its size).
// GetClusterStatus also asks every live router what it ingested
// (RouterStatus), at the same time and with the same deadline, in both
// forms; the summary's totals sum them. A router that does not answer is
// listed in unavailable_routers, never left out silently: its clicks are
// missing from the sums. Each router counts from its own start.
// Mutations run on the leader only: a follower forwards them (see
// NewServer).
//
// # Hot keys
//
// With WithHotKeys, each term also runs a hotkey.Controller and holds one
// hotkey.Publisher, fenced by the term's election key
// (cluster.Leadership.Fence): every CheckInterval the Controller observes
// the load (Observe: the aggregators' PartitionStatus reports, whose heavy
// ads come from each partition's sketch), splits ads above SplitRate over
// the least loaded aggregators and unsplits cooled ones. SplitKey and
// UnsplitKey are the operators' way to do the same; they run on the leader
// beside the term's loop, not in it, since a change waits for every live
// router's acknowledgement (up to about LeadTime) and partition moves must
// not wait behind it; the Publisher carries out one change at a time,
// whoever asked. A split table write refused by its fence ends the term
// like a refused assignment write. A change the routers did not all
// acknowledge in time, or whose caller or term ended first, is withdrawn
// (hotkey.ErrWithdrawn, ABORTED).
//
// With no aggregators every partition is left unassigned; with more
// aggregators than partitions the ones already owning partitions are kept
// and the rest stay idle.
package coordinator
