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
// and never logged; String describes a Config without it. Sentinels have
// a password of their own (their requirepass, which Redis keeps apart
// from the data nodes'), read from -redis.sentinel-password-file; it is
// a separate flag rather than the data password reused, because a
// sentinel without a password refuses a client that sends one, and
// deployments differ (Bitnami's chart gives both the same password: then
// both flags name the same file).
//
// NewClient checks a Cluster's seeds and a Sentinel's master name before
// it returns: a wrong seed list or master name is a configuration error
// that retrying cannot fix, so the process should stop with an error that
// names the flag. A Cluster must also assign all 16384 hash slots: one
// that leaves some to no node (a cluster half created) names them. Dead
// seeds beside a live one do not matter: the client loads the slot map
// from any seed that answers.
//
// A Sentinel client dials a primary only when a sentinel of
// -redis.sentinel-addrs names it and none names another: sentinels learn
// of a failover from each other, and an old primary that comes back
// before they all have is a master again for a few seconds, whose writes
// are lost when it is made a replica (see agreement).
//
// A single server is not checked there: a process may start before its
// Redis (a pod beside a Redis pod that is still starting), and the caller
// waits for it (health.VerifyRedis). A Redis that answers but refuses the
// password (WRONGPASS, NOAUTH) or the user's permissions (NOPERM) is
// different: CredentialsError turns that error, whenever it comes, into
// ErrCredentials naming -redis.password-file or -redis.username, which
// the caller's retry loop treats as final.
package redisconf
