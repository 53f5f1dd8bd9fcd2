// Package redisconf is the one Redis configuration every clickagg role
// uses: where Redis is (one server, a Redis Cluster, or a primary watched
// by Sentinel), who clickagg is to it (an ACL user and a password read from
// a file), and how the connection is protected (TLS with a CA).
//
// Exactly one mode is chosen:
//
//	-redis.addr                 one server (the default, 127.0.0.1:6379)
//	-redis.cluster-addrs        Redis Cluster, by seed addresses
//	-redis.sentinel-master      the master's name, with
//	  -redis.sentinel-addrs     the sentinels that know it
//
// The password comes only from a file (-redis.password-file), as a
// Kubernetes Secret mounts it: a password flag would show in ps, in the
// pod spec and in shell history. It is read once, when the client is made,
// and never logged; String describes a Config without it.
//
// NewClient checks a Cluster's seeds and a Sentinel's master name before
// it returns: a wrong seed list or master name is a configuration error
// that retrying cannot fix, so the process should stop with an error that
// names the flag. A single server is not checked there: a process may
// start before its Redis (a pod beside a Redis pod that is still
// starting), and the caller waits for it (health.VerifyRedis).
package redisconf
