// Package k8s holds the Kubernetes manifests of clickagg and their test.
//
// The manifests are a Kustomize base (base/) with the overlays dev and
// production, a component that makes the in-cluster Redis a Redis Cluster
// of three primaries with a replica each (components/redis-cluster, used by
// production), a component that swaps it for an external one
// (components/external-redis), an overlay that uses it
// (examples/external-redis), an overlay that adds a DaemonSet of log
// shippers in a namespace of its own (examples/shipper), and a component
// for a Prometheus Operator (components/prometheus-operator: a PodMonitor
// and a PrometheusRule generated from monitoring/prometheus/alerts.yml)
// with an overlay that uses it on production (examples/prometheus-operator). This is a Go module of its own so that the
// test's kustomize and Kubernetes API libraries stay out of clickagg's
// dependencies; the package has no code.
//
// The test builds every kustomization with krusty, decodes each object
// strictly into the k8s.io/api types, and checks the invariants the
// cluster relies on against the flags of `clickagg -help` (`clickagg ship
// -help` for the shippers), built from the parent module: ports where the binary listens, gRPC health probes, a
// restricted security context, pinned images, selectors that select,
// NetworkPolicies, PodDisruptionBudgets and HorizontalPodAutoscalers that
// apply to real pods, and an aggregator grace period longer than its
// handoff and final snapshot; shippers take the node name as -id, reach
// a router Service (with dns:///, a headless one, whose every pod they
// spread over, named by the routers' certificate), read their logs from a read-only hostPath and keep
// their checkpoint on a writable one, and only they may use hostPath, in
// their own privileged namespace; the reconcile CronJob runs `clickagg
// reconcile` with its flags (`clickagg reconcile -help`) over a range,
// once at a time, and fails its Job at once on the exit codes of
// findings. On a Redis Cluster, the Job that creates it names exactly the
// StatefulSet's pods with at least three primaries, node config lives on
// the persistent volume, the Service is headless, the nodes and the Job
// authenticate with the Secret that the Redis clients mount where
// -redis.password-file points, and the clients get every pod in
// -redis.cluster-addrs and no -redis.addr. In production builds nothing is
// single: every Deployment and StatefulSet runs at least two pods (at its
// autoscaler's minimum) and a PodDisruptionBudget selects it; and
// everything is TLS and authorized (security_test.go): each clickagg
// container takes -tls.* and -auth.policy-file from read-only mounts of
// its role's cert-manager Certificate (CN clickagg-<role>, holding the
// name members check each other by) and of a policy granting that
// identity internal, probes HTTPS on the HTTP port, reaches etcd over TLS
// with a client certificate and Redis over TLS as an ACL user; etcd
// requires client and peer certificates, Redis serves TLS only (cluster
// bus and replication too) and defines the user, and their certificates
// name every address clickagg dials; cert-manager's Certificates chain to
// a CA Issuer and renew before they expire. Where the Prometheus
// Operator's objects are deployed, the PodMonitor scrapes every role's
// pods on the port, path and scheme of their prometheus.io annotations
// with the labels the alert rules match (job clickagg, role, pod), over
// TLS with the cluster's CA where the pods serve HTTPS, and the
// PrometheusRule's groups are alerts.yml's (TestPrometheusRuleFile keeps
// the file generated from it, byte for byte). It then plants mistakes in a
// copy of the manifests and checks that each one is reported.
package k8s
