// Package health tells load balancers and Kubernetes the truth about a
// process: whether it can do its work now (readiness) and whether it is
// stuck (liveness).
//
// A Checker runs the checks its roles registered (etcd reachable, Redis
// accepting writes, an aggregator's partitions serving, ...) every
// -health.check-interval and sets the gRPC health service from them:
// the overall service "" and each role's service report SERVING only
// while every check passes, and /readyz answers 200 or 503 with the
// failing checks. Each change is logged once. The Checker is also a
// Prometheus collector (clickagg_health_check_passing, by check): an
// alert on it tells "etcd or Redis unreachable from this pod" apart from
// "this pod is down", which a scrape of /readyz alone cannot.
//
// Liveness is separate: the gRPC service "liveness" and /healthz report
// SERVING while rounds of checks keep completing, whatever their outcome.
// Redis or etcd being down makes a process unready, never dead: restarting
// it would not bring Redis back. A round that does not complete within
// StallTimeout (a check blocked on a deadlock, every goroutine starved)
// does.
//
// VerifyRedis checks that a member talks to its cluster's Redis: the
// cluster's etcd and its Redis both hold the same identity, written once
// when the cluster first used them.
package health
