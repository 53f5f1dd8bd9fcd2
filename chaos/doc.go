// Package chaos runs a whole clickagg cluster as separate processes on
// loopback and throws faults at it: the engine of `clickagg chaos`.
//
// The cluster (StartCluster) is what production runs, shrunk onto one
// machine: a three-member etcd whose members are child processes
// (`clickagg chaos etcd-member`), a Redis primary with replicas under
// three sentinels, and routers, aggregators, coordinators and queryds,
// each a process of the clickagg binary under test. Every process can be
// SIGKILLed, SIGSTOPped and restarted with its flags and data dirs: a
// crash, not a shutdown, is what the harness is for.
//
// The network between them is real TCP through toxiproxy, run as a
// library inside the chaos process: one proxy in front of every etcd
// member's client port, every Redis node and every member's gRPC port.
// Members advertise their proxy, Redis nodes announce theirs to the
// sentinels, and every clickagg process reaches etcd through the etcd
// proxies, so a toxic on a proxy (latency, reset, one direction stopped)
// or a proxy taken down is a network fault on the path the cluster
// really uses. The harness's own clients (RedisClient, EtcdEndpoints,
// RouterAddrs, QuerydAddrs) go direct: a fault must hit the system under
// test, not the checker.
//
// Faults (Fault, Inject) are applied by Inject and undone by the heal
// it returns; the caller decides how long a fault lasts by when it heals.
// WaitHealthy is the yardstick of recovery: every process answers its
// health check, every partition serves, etcd has a leader and the
// sentinels agree on a Redis primary that has its replicas.
//
// The package is a developer tool, like package bench: the release build
// (-tags nobench) links neither it nor toxiproxy.
package chaos
