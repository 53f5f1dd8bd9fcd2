// Package cli is the clickagg command: it parses flags (and their environment
// overrides), then starts the chosen roles in one process.
//
//	clickagg -target=router,aggregator ...   run roles against an existing etcd and Redis
//	clickagg dev                             everything on one machine: embedded etcd,
//	                                         a redis-server child, all roles, synthetic clicks
//	clickagg loadgen                         send synthetic clicks to a router
//	clickagg ship                            tail click log files, send them to routers exactly once
//	clickagg bench                           measure a cluster and two baselines (package bench)
//	clickagg status                          the cluster at a glance from a coordinator's
//	                                         GetClusterStatus summary: a row per process
//	clickagg version, clickagg -version      the build (package buildinfo); no flags parsed,
//	                                         so no CLICKAGG_* variable can turn it on
//
// The bench is a developer's tool: the files of clickagg bench are built
// unless the tag nobench is set, and the release image sets it
// (Dockerfile), so that the server binary carries neither package bench
// nor its pprof reader; there, nobench.go answers clickagg bench with an
// error.
//
// Every flag can also be set from the environment as CLICKAGG_ followed by
// the flag name upper-cased with dots and dashes turned into underscores
// (-redis.addr → CLICKAGG_REDIS_ADDR); a flag on the command line wins.
//
// Each process serves Prometheus metrics on -http.addr at /metrics from a
// registry of its own: the Go and process collectors, clickagg_build_info
// (version, revision, goversion labels), the gRPC server
// metrics of go-grpc-middleware, and the metrics each role registers
// through its WithMetrics option (README.md, Monitoring). With
// -tls.cert-file that HTTP server (metrics, probes, queryd's JSON API)
// serves HTTPS only, asking clients for a certificate but never requiring
// one (tlsconf.HTTPServerConfig): probes and scrapes have none.
package cli
