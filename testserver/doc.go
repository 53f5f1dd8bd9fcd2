// Package testserver starts real dependencies for tests: a redis-server child
// process and an embedded etcd on loopback and random ports, stopped by
// t.Cleanup.
package testserver
