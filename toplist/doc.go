// Package toplist keeps the published top list of each complete minute in
// Redis and announces every list it stores on a pub/sub channel. Package
// queryd computes the lists and decides when to publish; this package only
// stores, announces and reads back the encoded lists it is given, byte for
// byte.
//
// # Keys and channel
//
// For prefix (the process's -redis.prefix, e.g. "clickagg"):
//
//	prefix:top:<unix minute>  string   the minute's list, kept for the TTL
//	                                   Publish is given (0: for ever)
//	prefix:top                channel  every list stored, as it is stored
//
// The keys carry no hash tag: each minute's key is in a slot of its own,
// which spreads the lists over a Redis Cluster's primaries. So a Redis
// Cluster refuses one MGET over several minutes (CROSSSLOT), and Load
// sends one GET per minute in one pipeline, which a cluster client splits
// per node.
//
// # Announcements in order
//
// On one Redis server (or Sentinel's primary) Publish sends SET and
// PUBLISH in one MULTI: a listener never hears of a list that the key
// does not hold, and hears the lists in the order they were published. A
// Redis Cluster forwards a PUBLISH from the node that received it to every
// other node, but the forwards of two nodes race: lists announced through
// their keys' nodes reached a listener out of order. So on a cluster the
// list is SET first and then announced through one node, the primary of
// the channel's slot, whose forwards are in order. If the announcement
// fails after the SET, Redis holds a list nobody heard of; Publish returns
// the error, and the caller publishes that minute again even though Load
// returns its list.
//
// A new implementation of queryd.Publications must pass the contract
// suite in package toplisttest.
package toplist
