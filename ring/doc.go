// Package ring maps ad_ids to partitions and partitions to aggregators.
//
// Both maps come from one consistent-hashing scheme (buraksezer/consistent):
// an ad_id's partition is the hash of the ad_id modulo the partition count,
// which is fixed when the cluster is created, so an ad never changes
// partition; a partition's owner is found on a ring of aggregator members
// with bounded loads, so that no member owns more than Load times the mean
// and a membership change moves few partitions.
//
// The wrapper validates its input so that the library's panics cannot fire,
// and its values are immutable, so they can be shared through an
// atomic.Pointer without locks.
package ring
