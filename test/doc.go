// Package test holds clickagg's end-to-end tests. They build the clickagg
// binary, start a real cluster of processes (coordinator, routers,
// aggregators, queryd) against a real redis-server and a real etcd on
// loopback, drive it like users and operators do, and compare every answer
// with ground truth the test computed itself.
package test
