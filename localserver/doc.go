// Package localserver runs the cluster's external dependencies on one machine:
// a redis-server child process (or a Redis Cluster of them) and an embedded
// etcd, each on loopback. The single-machine `clickagg dev` uses it, and so
// do the tests, which need the real servers rather than stand-ins because
// the features they test (stream offsets, Lua fencing, leases, elections)
// are those servers' behaviour.
package localserver
