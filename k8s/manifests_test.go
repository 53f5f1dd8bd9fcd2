package k8s_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// flags are the flags of `clickagg -help`, shipFlags those of `clickagg
// ship -help` and reconcileFlags those of `clickagg reconcile -help`,
// built by TestMain from the parent module.
var flags, shipFlags, reconcileFlags map[string]flagInfo

// TestMain builds cmd/clickagg from the parent module (this module
// depends on it only through its -help) and reads its flags.
func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "clickagg-k8s-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "clickagg")
	// -tags nobench as the Dockerfile builds the image the manifests run.
	build := exec.Command("go", "build", "-tags", "nobench", "-o", bin, "./cmd/clickagg")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build -tags nobench ./cmd/clickagg: %v\n%s", err, out)
		return 1
	}
	for _, h := range []struct {
		args  []string
		need  []string
		flags *map[string]flagInfo
	}{
		{[]string{"-help"}, []string{"target", "id", "grpc.addr", "grpc.advertise-addr", "http.addr", "aggregator.leave-timeout", "aggregator.release-timeout", "shutdown.drain-delay", "shutdown.timeout",
			"tls.cert-file", "tls.key-file", "tls.ca-file", "tls.client-auth", "tls.server-name", "redis.tls", "redis.tls-ca-file", "redis.username",
			"auth.policy-file", "auth.tokens-file", "etcd.cert-file", "etcd.key-file", "etcd.ca-file", "etcd.username", "etcd.password-file",
			"router.caller-rate", "router.caller-burst"}, &flags},
		{[]string{"ship", "-help"}, []string{"id", "grpc.addr", "http.addr", "ship.files", "ship.checkpoint", "ship.routers", "tls.ca-file", "auth.token-file"}, &shipFlags},
		{[]string{"reconcile", "-help"}, []string{"previous-day", "from", "to", "archive.bucket", "etcd.endpoints",
			"etcd.cert-file", "etcd.key-file", "etcd.ca-file", "etcd.username", "etcd.password-file"}, &reconcileFlags},
	} {
		var out bytes.Buffer
		help := exec.Command(bin, h.args...)
		help.Stdout, help.Stderr = &out, &out
		what := "clickagg " + strings.Join(h.args, " ")
		if err := help.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n%s", what, err, out.Bytes())
			return 1
		}
		if *h.flags, err = parseHelp(out.String(), h.need); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
			return 1
		}
	}
	return m.Run()
}

// want is what one kustomization must deploy, beyond the invariants that
// check enforces on every one.
type want struct {
	replicas      map[string]int32 // workload name → spec.replicas
	hpa           map[string][2]int32
	externalRedis bool
	daemonSet     string // a DaemonSet it must deploy, if any
	// archive: the aggregators archive to an object store, whose
	// credentials they and the reconcile CronJob may take from the Secret
	// clickagg-archive.
	archive bool
	// ha: nothing is single (checkHA).
	ha bool
	// secure: TLS and authorization everywhere (checkSecurity).
	secure bool
	// operator: scraped and alerted by a Prometheus Operator (a PodMonitor
	// and a PrometheusRule).
	operator bool
}

var builds = map[string]want{
	"base": {
		replicas: map[string]int32{"etcd": 1, "redis": 1, "coordinator": 2, "aggregator": 3},
		hpa:      map[string][2]int32{"router": {2, 10}, "queryd": {2, 10}},
	},
	"overlays/dev": {
		replicas: map[string]int32{"etcd": 1, "redis": 1, "coordinator": 1, "aggregator": 1},
		hpa:      map[string][2]int32{"router": {1, 1}, "queryd": {1, 1}},
	},
	"overlays/production": {
		archive:  true,
		ha:       true,
		secure:   true,
		replicas: map[string]int32{"etcd": 3, "redis": 6, "coordinator": 2, "aggregator": 4},
		hpa:      map[string][2]int32{"router": {3, 20}, "queryd": {3, 20}},
	},
	"examples/external-redis": {
		archive:       true,
		ha:            true,
		secure:        true,
		replicas:      map[string]int32{"etcd": 3, "coordinator": 2, "aggregator": 4},
		hpa:           map[string][2]int32{"router": {3, 20}, "queryd": {3, 20}},
		externalRedis: true,
	},
	"examples/prometheus-operator": {
		archive:  true,
		ha:       true,
		secure:   true,
		replicas: map[string]int32{"etcd": 3, "redis": 6, "coordinator": 2, "aggregator": 4},
		hpa:      map[string][2]int32{"router": {3, 20}, "queryd": {3, 20}},
		operator: true,
	},
	"examples/shipper": {
		archive:   true,
		ha:        true,
		secure:    true,
		replicas:  map[string]int32{"etcd": 3, "redis": 6, "coordinator": 2, "aggregator": 4},
		hpa:       map[string][2]int32{"router": {3, 20}, "queryd": {3, 20}},
		daemonSet: "shipper",
	},
}

// TestManifests builds every kustomization from the filesystem and checks
// it.
func TestManifests(t *testing.T) {
	fsys := filesys.MakeFsOnDisk()
	for dir, w := range builds {
		t.Run(dir, func(t *testing.T) {
			m, problems := load(fsys, dir)
			for _, p := range problems {
				t.Error(p)
			}
			if m == nil {
				return
			}
			for _, p := range check(m) {
				t.Error(p)
			}
			for name, n := range w.replicas {
				wl := m.workload(name)
				switch {
				case wl == nil:
					t.Errorf("no workload %s", name)
				case wl.replicas == nil || *wl.replicas != n:
					t.Errorf("%s: replicas %v, want %d", wl, ptrString(wl.replicas), n)
				}
			}
			for name, mm := range w.hpa {
				h := m.hpa(name)
				if h == nil {
					t.Errorf("no HorizontalPodAutoscaler %s", name)
					continue
				}
				if got := [2]int32{ptrValue(h.Spec.MinReplicas), h.Spec.MaxReplicas}; got != mm {
					t.Errorf("HorizontalPodAutoscaler %s: replicas %d..%d, want %d..%d", name, got[0], got[1], mm[0], mm[1])
				}
			}
			if hasRedis := m.workload("redis") != nil; hasRedis == w.externalRedis {
				t.Errorf("in-cluster Redis deployed: %v, want %v", hasRedis, !w.externalRedis)
			}
			if w.archive {
				for _, p := range checkArchive(m) {
					t.Error(p)
				}
			}
			if w.ha {
				for _, p := range checkHA(m) {
					t.Error(p)
				}
			}
			if w.secure {
				for _, p := range checkSecurity(m) {
					t.Error(p)
				}
			}
			if hasOperator := len(m.podMonitors) > 0 && len(m.prometheusRules) > 0; hasOperator != w.operator {
				t.Errorf("PodMonitor and PrometheusRule deployed: %v, want %v", hasOperator, w.operator)
			}
			if w.daemonSet != "" {
				if wl := m.workload(w.daemonSet); wl == nil || wl.kind != "DaemonSet" {
					t.Errorf("no DaemonSet %s", w.daemonSet)
				}
			}
			if w.externalRedis {
				data := m.configMaps["clickagg"].Data
				addr := data["CLICKAGG_REDIS_ADDR"] + data["CLICKAGG_REDIS_CLUSTER_ADDRS"]
				if addr == "" || strings.Contains(addr, ".invalid") {
					t.Errorf("external Redis: CLICKAGG_REDIS_ADDR %q, CLICKAGG_REDIS_CLUSTER_ADDRS %q", data["CLICKAGG_REDIS_ADDR"], data["CLICKAGG_REDIS_CLUSTER_ADDRS"])
				}
			}
		})
	}
}

// mistakes are planted in a copy of k8s/; each must make the checks fail
// with a message that contains want.
var mistakes = []struct {
	name     string
	file     string // relative to k8s/
	old, new string // old must occur exactly once
	build    string // the kustomization to build; overlays/dev if empty
	want     string
}{
	{
		name:  "PrometheusRule edited instead of alerts.yml",
		file:  "components/prometheus-operator/prometheusrule.yaml",
		old:   "runbook_url: docs/runbook.md#clickaggetcdunreachable\n",
		new:   "runbook_url: docs/runbook.md#etcd\n",
		build: "examples/prometheus-operator",
		want:  "PrometheusRule clickagg: spec.groups differ from ../monitoring/prometheus/alerts.yml",
	},
	{
		name:  "PodMonitor on the gRPC port",
		file:  "components/prometheus-operator/podmonitor.yaml",
		old:   "  - port: http\n",
		new:   "  - port: grpc\n",
		build: "examples/prometheus-operator",
		want:  `PodMonitor clickagg: port "grpc" is 9090 on the pods of`,
	},
	{
		name:  "PodMonitor job named after the role",
		file:  "components/prometheus-operator/podmonitor.yaml",
		old:   "  jobLabel: app.kubernetes.io/name\n",
		new:   "  jobLabel: app.kubernetes.io/component\n",
		build: "examples/prometheus-operator",
		want:  `PodMonitor clickagg: jobLabel "app.kubernetes.io/component" gives the pods of StatefulSet aggregator job "aggregator"`,
	},
	{
		name:  "PodMonitor without the role label",
		file:  "components/prometheus-operator/podmonitor.yaml",
		old:   "    - sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_component]\n      targetLabel: role\n",
		new:   "",
		build: "examples/prometheus-operator",
		want:  "PodMonitor clickagg: no relabeling role",
	},
	{
		name:  "PodMonitor over HTTP to HTTPS pods",
		file:  "examples/prometheus-operator/kustomization.yaml",
		old:   "    - op: add\n      path: /spec/podMetricsEndpoints/0/scheme\n      value: https\n",
		new:   "",
		build: "examples/prometheus-operator",
		want:  "PodMonitor clickagg: scheme http, the pods of",
	},
	{
		name: "reconcile without a range",
		file: "base/reconcile.yaml",
		old:  "            - -previous-day=true\n",
		new:  "            - -parallel=2\n",
		want: "CronJob reconcile: container clickagg: neither -previous-day nor -from and -to",
	},
	{
		name: "reconcile flag misspelt",
		file: "base/reconcile.yaml",
		old:  "            - -previous-day=true\n",
		new:  "            - -previous-day=true\n            - -partition=1\n",
		want: "CronJob reconcile: unknown flag -partition (not in clickagg reconcile -help)",
	},
	{
		name: "reconcile retried on a mismatch",
		file: "base/reconcile.yaml",
		old:  "            values: [2, 3]\n",
		new:  "            values: [3]\n",
		want: "CronJob reconcile: podFailurePolicy does not fail the Job at once on exit codes 2 and 3",
	},
	{
		name: "reconcile as root",
		file: "base/reconcile.yaml",
		old:  "            runAsUser: 65532\n",
		new:  "            runAsUser: 0\n",
		want: "CronJob reconcile: container clickagg: runs as uid 0",
	},
	{
		name: "unknown field",
		file: "base/aggregator.yaml",
		old:  "  serviceName: aggregator\n",
		new:  "  serviceName: aggregator\n  replica: 3\n",
		want: `StatefulSet aggregator: unknown field "spec.replica"`,
	},
	{
		name: "misspelt field of a container",
		file: "base/router.yaml",
		old:  "        readinessProbe:\n",
		new:  "        readynessProbe:\n",
		want: `Deployment router: unknown field "spec.template.spec.containers[0].readynessProbe"`,
	},
	{
		name: "wrong container port",
		file: "base/router.yaml",
		old:  "        - name: grpc\n          containerPort: 9090\n",
		new:  "        - name: grpc\n          containerPort: 9091\n",
		want: "Deployment router: container port grpc is 9091, but -grpc.addr=:9090 listens on 9090",
	},
	{
		name: "listen address differs from the ports",
		file: "base/queryd.yaml",
		old:  "        - -http.addr=:8080\n",
		new:  "        - -http.addr=:8081\n",
		want: "Deployment queryd: container port http is 8080, but -http.addr=:8081 listens on 8081",
	},
	{
		name: "probe on the wrong port",
		file: "base/aggregator.yaml",
		old:  "        readinessProbe:\n          grpc:\n            port: 9090\n",
		new:  "        readinessProbe:\n          grpc:\n            port: 9091\n",
		want: "StatefulSet aggregator: readinessProbe: gRPC probe on port 9091, but -grpc.addr=:9090 listens on 9090",
	},
	{
		name: "unknown flag",
		file: "base/queryd.yaml",
		old:  "        - -http.addr=:8080\n",
		new:  "        - -http.addr=:8080\n        - -queryd.max-windows=1h\n",
		want: "Deployment queryd: unknown flag -queryd.max-windows (not in clickagg -help)",
	},
	{
		name: "unknown environment variable",
		file: "base/config.yaml",
		old:  "  CLICKAGG_LOG_LEVEL: info\n",
		new:  "  CLICKAGG_LOG_LEVEL: info\n  CLICKAGG_REDIS_ADDRESS: redis:6379\n",
		want: "CLICKAGG_REDIS_ADDRESS (from ConfigMap clickagg) names no flag of clickagg -help",
	},
	{
		name: "image tag latest",
		file: "base/kustomization.yaml",
		old:  "  newTag: 0.1.0\n",
		new:  "  newTag: latest\n",
		want: `image ghcr.io/clickagg/clickagg:latest: tag "latest" is not a pinned version`,
	},
	{
		name: "image without a tag",
		file: "base/kustomization.yaml",
		old:  "- name: redis\n  newTag: 7.4.6-alpine\n",
		new:  "",
		want: "image redis: no tag or digest",
	},
	{
		name: "missing probe",
		file: "base/coordinator.yaml",
		old:  "        readinessProbe:\n          grpc:\n            port: 9090\n          periodSeconds: 5\n",
		new:  "",
		want: "Deployment coordinator: container clickagg: no readinessProbe",
	},
	{
		name:  "missing limits",
		file:  "base/redis.yaml",
		old:   "          limits:\n            cpu: \"2\"\n            memory: 4Gi\n",
		new:   "",
		build: "base",
		want:  "StatefulSet redis: container redis: no limits.cpu",
	},
	{
		name: "root allowed",
		file: "base/router.yaml",
		old:  "        runAsNonRoot: true\n",
		new:  "",
		want: "Deployment router: container clickagg: runAsNonRoot is not true",
	},
	{
		name: "writable root filesystem",
		file: "base/etcd.yaml",
		old:  "          readOnlyRootFilesystem: true\n",
		new:  "          readOnlyRootFilesystem: false\n",
		want: "StatefulSet etcd: container etcd: readOnlyRootFilesystem is not true",
	},
	{
		name: "Service port not on the pods",
		file: "base/queryd.yaml",
		old:  "    targetPort: http\n",
		new:  "    targetPort: web\n",
		want: `Service queryd: port http: targetPort "web" is not a port of Deployment queryd`,
	},
	{
		name: "Service selects nothing",
		file: "base/coordinator.yaml",
		old:  "spec:\n  selector:\n    app.kubernetes.io/name: clickagg\n    app.kubernetes.io/component: coordinator\n",
		new:  "spec:\n  selector:\n    app.kubernetes.io/name: clickagg\n    app.kubernetes.io/component: coordinators\n",
		want: "Service coordinator selects no pods",
	},
	{
		name: "PodDisruptionBudget misses the aggregators",
		file: "base/aggregator.yaml",
		old:  "  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: clickagg\n      app.kubernetes.io/component: aggregator\n",
		new:  "  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: clickagg\n      app.kubernetes.io/component: aggregators\n",
		want: "no PodDisruptionBudget selects StatefulSet aggregator",
	},
	{
		name: "HorizontalPodAutoscaler target missing",
		file: "base/router.yaml",
		old:  "    kind: Deployment\n    name: router\n",
		new:  "    kind: Deployment\n    name: routers\n",
		want: "HorizontalPodAutoscaler router: target Deployment routers does not exist",
	},
	{
		name: "NetworkPolicy selects nothing",
		file: "base/networkpolicies.yaml",
		old:  "  name: clients-to-router\nspec:\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: clickagg\n      app.kubernetes.io/component: router\n",
		new:  "  name: clients-to-router\nspec:\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: clickagg\n      app.kubernetes.io/component: ingest\n",
		want: "NetworkPolicy clients-to-router selects no pods",
	},
	{
		name: "NetworkPolicy egress to a port nobody listens on",
		file: "base/networkpolicies.yaml",
		old:  "    ports:\n    - port: 6379\n",
		new:  "    ports:\n    - port: 6380\n",
		want: "NetworkPolicy redis-clients: egress port 6380 is not a port of StatefulSet redis",
	},
	{
		name: "aggregator grace period too short",
		file: "base/aggregator.yaml",
		old:  "      terminationGracePeriodSeconds: 120\n",
		new:  "      terminationGracePeriodSeconds: 30\n",
		want: "StatefulSet aggregator: terminationGracePeriodSeconds 30 is not above",
	},
	{
		name: "aggregator id not its pod name",
		file: "base/aggregator.yaml",
		old:  "        - -id=$(POD_NAME)\n",
		new:  "",
		want: "StatefulSet aggregator: -id must be $(POD_NAME)",
	},
	{
		name: "undefined variable in args",
		file: "base/coordinator.yaml",
		old:  "        - -grpc.advertise-addr=$(POD_IP):9090\n",
		new:  "        - -grpc.advertise-addr=$(MY_POD_IP):9090\n",
		want: "Deployment coordinator: container clickagg: $(MY_POD_IP) in args is not an env variable of the container",
	},
	{
		name:  "etcd member list out of step with the replicas",
		file:  "overlays/production/kustomization.yaml",
		old:   "- name: etcd\n  count: 3\n",
		new:   "- name: etcd\n  count: 5\n",
		build: "overlays/production",
		want:  "StatefulSet etcd: ETCD_INITIAL_CLUSTER names [etcd-0 etcd-1 etcd-2], want the 5 pods [etcd-0 etcd-1 etcd-2 etcd-3 etcd-4]",
	},
	{
		name:  "Redis Cluster pods out of step with the create Job and the seeds",
		file:  "components/redis-cluster/redis.yaml",
		old:   "  replicas: 6\n",
		new:   "  replicas: 8\n",
		build: "overlays/production",
		want:  "Job redis-cluster-create: NODES names [redis-0.redis redis-1.redis redis-2.redis redis-3.redis redis-4.redis redis-5.redis], want the 8 pods of StatefulSet redis",
	},
	{
		name:  "Redis Cluster with fewer than three primaries",
		file:  "components/redis-cluster/create.yaml",
		old:   "          value: \"1\"\n",
		new:   "          value: \"2\"\n",
		build: "overlays/production",
		want:  "Job redis-cluster-create: 6 pods with 2 replicas per primary: want a multiple of 3 with at least 3 primaries",
	},
	{
		name:  "Redis Cluster node config off the volume",
		file:  "components/redis-cluster/redis.yaml",
		old:   "    cluster-config-file /data/nodes.conf\n",
		new:   "    cluster-config-file /tmp/nodes.conf\n",
		build: "overlays/production",
		want:  `ConfigMap redis: cluster-config-file "/tmp/nodes.conf" is not under dir "/data"`,
	},
	{
		name:  "single Redis address on a Redis Cluster",
		file:  "components/redis-cluster/kustomization.yaml",
		old:   "    - op: remove\n      path: /data/CLICKAGG_REDIS_ADDR\n",
		new:   "",
		build: "overlays/production",
		want:  `ConfigMap clickagg: CLICKAGG_REDIS_ADDR is "redis:6379" on a Redis Cluster`,
	},
	{
		name:  "writes on a Redis Cluster that wait for no replica",
		file:  "components/redis-cluster/kustomization.yaml",
		old:   "    - op: add\n      path: /data/CLICKAGG_REDIS_WAIT_REPLICAS\n      value: \"1\"\n",
		new:   "",
		build: "overlays/production",
		want:  `ConfigMap clickagg: CLICKAGG_REDIS_WAIT_REPLICAS is "": want 1 to 1, the replicas of each primary`,
	},
	{
		name:  "Redis password not mounted where the clients read it",
		file:  "components/redis-cluster/clients.yaml",
		old:   "  name: queryd\nspec:\n  template:\n    spec:\n      securityContext:\n        fsGroup: 65532\n      containers:\n      - name: clickagg\n        volumeMounts:\n        - name: redis-auth\n          mountPath: /etc/clickagg/redis\n",
		new:   "  name: queryd\nspec:\n  template:\n    spec:\n      securityContext:\n        fsGroup: 65532\n      containers:\n      - name: clickagg\n        volumeMounts:\n        - name: redis-auth\n          mountPath: /etc/redis\n",
		build: "overlays/production",
		want:  `Deployment queryd: container clickagg: the Secret "redis-auth" is not mounted at /etc/clickagg/redis`,
	},
	{
		name:  "a single router in production",
		file:  "overlays/production/kustomization.yaml",
		old:   "      path: /spec/minReplicas\n      value: 3\n",
		new:   "      path: /spec/minReplicas\n      value: 1\n",
		build: "overlays/production",
		want:  "Deployment router: 1 replica(s): nothing in production may be single",
	},
	{
		name:  "routers without a PodDisruptionBudget",
		file:  "base/router.yaml",
		old:   "  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: clickagg\n      app.kubernetes.io/component: router\n",
		new:   "  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: clickagg\n      app.kubernetes.io/component: routers\n",
		build: "overlays/production",
		want:  "Deployment router: no PodDisruptionBudget selects it",
	},
	{
		name: "Redis without fsync on every write",
		file: "base/redis.yaml",
		old:  "    appendfsync always\n",
		new:  "    appendfsync everysec\n",
		want: `ConfigMap redis: redis.conf must say "appendfsync always"`,
	},
	{
		name: "pod without the scrape annotation",
		file: "base/queryd.yaml",
		old:  "        prometheus.io/port: \"8080\"\n",
		new:  "        prometheus.io/port: \"9090\"\n",
		want: `Deployment queryd: annotation prometheus.io/port is "9090", want the -http.addr port "8080"`,
	},
	{
		name:  "shipper flag not in clickagg ship -help",
		file:  "examples/shipper/shipper.yaml",
		old:   "        - -ship.format=json\n",
		new:   "        - -ship.format=json\n        - -ship.batch=500\n",
		build: "examples/shipper",
		want:  "DaemonSet shipper: unknown flag -ship.batch (not in clickagg ship -help)",
	},
	{
		name:  "shipper id not the node name",
		file:  "examples/shipper/shipper.yaml",
		old:   "              fieldPath: spec.nodeName\n",
		new:   "              fieldPath: metadata.name\n",
		build: "examples/shipper",
		want:  "DaemonSet shipper: -id must be $(NODE_NAME) with NODE_NAME from spec.nodeName",
	},
	{
		name:  "shipper checkpoint on the read-only log volume",
		file:  "examples/shipper/shipper.yaml",
		old:   "        - -ship.checkpoint=/var/lib/clickagg-ship/checkpoint.json\n",
		new:   "        - -ship.checkpoint=/var/log/adserver/.clicks.ship.json\n",
		build: "examples/shipper",
		want:  "DaemonSet shipper: -ship.checkpoint=/var/log/adserver/.clicks.ship.json: volume logs is readOnly",
	},
	{
		name:  "hostPath outside the shipper namespace",
		file:  "examples/shipper/shipper.yaml",
		old:   "  namespace: clickagg-ship\n  labels:\n",
		new:   "  namespace: clickagg\n  labels:\n",
		build: "examples/shipper",
		want:  "DaemonSet shipper: hostPath volume logs",
	},
	{
		name:  "no TLS certificate",
		file:  "overlays/production/kustomization.yaml",
		old:   "  - CLICKAGG_TLS_CERT_FILE=/etc/clickagg/tls/tls.crt\n",
		new:   "",
		build: "overlays/production",
		want:  "Deployment router: container clickagg: no -tls.cert-file",
	},
	{
		name:  "gRPC probes under TLS",
		file:  "overlays/production/kustomization.yaml",
		old:   "- target:\n    kind: Deployment\n    labelSelector: app.kubernetes.io/name=clickagg\n  path: probes.yaml\n",
		new:   "",
		build: "overlays/production",
		want:  "Deployment router: readinessProbe: not an HTTPS httpGet probe, but -tls.cert-file is set",
	},
	{
		name:  "plain HTTP probe under TLS",
		file:  "overlays/production/probes.yaml",
		old:   "      scheme: HTTPS\n    periodSeconds: 5\n",
		new:   "      scheme: HTTP\n    periodSeconds: 5\n",
		build: "overlays/production",
		want:  `StatefulSet aggregator: readinessProbe: httpGet scheme "HTTP", but -tls.cert-file is set`,
	},
	{
		name:  "policy forgets a member",
		file:  "overlays/production/auth.yaml",
		old:   "    cert:clickagg-queryd internal,query\n",
		new:   "",
		build: "overlays/production",
		want:  "Deployment queryd: -auth.policy-file does not grant cert:clickagg-queryd internal",
	},
	{
		name:  "another role's certificate",
		file:  "overlays/production/tls.yaml",
		old:   "          secretName: clickagg-queryd-tls\n",
		new:   "          secretName: clickagg-router-tls\n",
		build: "overlays/production",
		want:  `Deployment queryd: its certificate clickagg-router names "clickagg-router", want clickagg-queryd`,
	},
	{
		name:  "member certificate without the members' name",
		file:  "overlays/production/certificates.yaml",
		old:   "  - member.clickagg.internal\n  - aggregator\n",
		new:   "  - aggregator\n",
		build: "overlays/production",
		want:  `StatefulSet aggregator: its certificate clickagg-aggregator does not hold -tls.server-name "member.clickagg.internal"`,
	},
	{
		name:  "etcd without client certificates",
		file:  "overlays/production/etcd.yaml",
		old:   "        - --client-cert-auth=true\n",
		new:   "",
		build: "overlays/production",
		want:  `StatefulSet etcd: --client-cert-auth is "", want true`,
	},
	{
		name:  "etcd endpoint in plaintext",
		file:  "overlays/production/kustomization.yaml",
		old:   "CLICKAGG_ETCD_ENDPOINTS=https://etcd-0.etcd:2379,",
		new:   "CLICKAGG_ETCD_ENDPOINTS=http://etcd-0.etcd:2379,",
		build: "overlays/production",
		want:  `Deployment coordinator: -etcd.endpoints "http://etcd-0.etcd:2379"`,
	},
	{
		name:  "etcd certificate misses a member",
		file:  "overlays/production/certificates.yaml",
		old:   "  - etcd-2.etcd\n",
		new:   "",
		build: "overlays/production",
		want:  "Certificate etcd does not name etcd-2.etcd, an etcd endpoint",
	},
	{
		name:  "reconcile without the etcd client certificate",
		file:  "overlays/production/tls.yaml",
		old:   "            - name: etcd-tls\n              mountPath: /etc/clickagg/etcd\n",
		new:   "            - name: etcd-tls\n              mountPath: /etc/etcd\n",
		build: "overlays/production",
		want:  "CronJob reconcile: container clickagg: -etcd.cert-file=/etc/clickagg/etcd/tls.crt: no volume is mounted at /etc/clickagg/etcd",
	},
	{
		name:  "Redis with a plaintext port",
		file:  "components/redis-cluster/redis.yaml",
		old:   "    port 0\n",
		new:   "    port 6380\n",
		build: "overlays/production",
		want:  `ConfigMap redis: port "6380", tls-port "6379": want port 0`,
	},
	{
		name:  "Redis cluster bus in plaintext",
		file:  "components/redis-cluster/redis.yaml",
		old:   "    tls-cluster yes\n",
		new:   "    tls-cluster no\n",
		build: "overlays/production",
		want:  `ConfigMap redis: tls-cluster is "no", want yes`,
	},
	{
		name:  "Redis user that no node defines",
		file:  "components/redis-cluster/kustomization.yaml",
		old:   "      value: clickagg\n",
		new:   "      value: ingest\n",
		build: "overlays/production",
		want:  `StatefulSet redis: container redis: no ACL user ingest`,
	},
	{
		name:  "Prometheus without the cluster's CA",
		file:  "overlays/production/prometheus.yaml",
		old:   "        ca_file: /etc/prometheus/clickagg/ca.crt\n",
		new:   "",
		build: "overlays/production",
		want:  "ConfigMap prometheus-scrape: job clickagg: want a tls_config",
	},
	{
		name:  "shipper without an identity",
		file:  "examples/shipper/shipper.yaml",
		old:   "        - -auth.token-file=/etc/clickagg/token/token\n",
		new:   "",
		build: "examples/shipper",
		want:  "DaemonSet shipper: neither -auth.token-file nor -tls.cert-file",
	},
	{
		name:  "shipper spreads over a Service that is not headless",
		file:  "examples/shipper/shipper.yaml",
		old:   "-ship.routers=dns:///router-headless.clickagg.svc:9090",
		new:   "-ship.routers=dns:///router.clickagg.svc:9090",
		build: "examples/shipper",
		want:  `DaemonSet shipper: -ship.routers: "dns:///router.clickagg.svc:9090": Service router is not headless`,
	},
	{
		name:  "router certificate without the headless Service's name",
		file:  "overlays/production/certificates.yaml",
		old:   "  - router-headless.clickagg.svc\n",
		new:   "",
		build: "examples/shipper",
		want:  "DaemonSet shipper: -ship.routers dns:///router-headless.clickagg.svc:9090: the routers' Certificate clickagg-router does not name router-headless.clickagg.svc",
	},
	{
		name: "headless Service selects nothing",
		file: "base/router.yaml",
		old:  "  name: router-headless\n  labels:\n    app.kubernetes.io/name: clickagg\n    app.kubernetes.io/component: router\nspec:\n  clusterIP: None\n  selector:\n    app.kubernetes.io/name: clickagg\n    app.kubernetes.io/component: router\n",
		new:  "  name: router-headless\n  labels:\n    app.kubernetes.io/name: clickagg\n    app.kubernetes.io/component: router\nspec:\n  clusterIP: None\n  selector:\n    app.kubernetes.io/name: clickagg\n    app.kubernetes.io/component: routers\n",
		want: "Service router-headless selects no pods",
	},
	{
		name: "routers may call the aggregators",
		file: "base/networkpolicies.yaml",
		old:  "          - coordinator\n          - queryd\n    ports:\n    - port: grpc\n",
		new:  "          - coordinator\n          - queryd\n          - router\n    ports:\n    - port: grpc\n",
		want: "NetworkPolicy aggregator admits Deployment router to aggregators port 9090: only coordinators and queryds may",
	},
	{
		name: "routers may call the coordinators",
		file: "base/networkpolicies.yaml",
		old:  "          - queryd\n          - coordinator\n    ports:\n    - port: grpc\n",
		new:  "          - queryd\n          - coordinator\n          - router\n    ports:\n    - port: grpc\n",
		want: "NetworkPolicy coordinator admits Deployment router to coordinators port 9090: only coordinators and queryds may",
	},
	{
		name: "etcd open to every source",
		file: "base/networkpolicies.yaml",
		old:  "  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: clickagg\n    ports:\n    - port: client\n",
		new:  "  ingress:\n  - ports:\n    - port: client\n",
		want: "NetworkPolicy etcd admits every source to etcd port 2379: only clickagg pods may",
	},
	{
		name:  "Redis open to the coordinator",
		file:  "base/networkpolicies.yaml",
		old:   "          - aggregator\n          - queryd\n    ports:\n    - port: redis\n",
		new:   "          - aggregator\n          - queryd\n          - coordinator\n    ports:\n    - port: redis\n",
		build: "overlays/production",
		want:  "NetworkPolicy redis admits Deployment coordinator to redis port 6379",
	},
	{
		name:  "tokens in the policy, no tokens file",
		file:  "overlays/production/kustomization.yaml",
		old:   "  - CLICKAGG_AUTH_TOKENS_FILE=/etc/clickagg/tokens/tokens\n",
		new:   "",
		build: "overlays/production",
		want:  "Deployment router: the policy grants tokens, but there is no -auth.tokens-file",
	},
}

// TestMistakes plants each mistake in a copy of k8s/ and checks that it
// is reported.
func TestMistakes(t *testing.T) {
	for _, tc := range mistakes {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			if err := copyTree(".", root); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(root, tc.file)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(b), tc.old); n != 1 {
				t.Fatalf("%s: %q occurs %d times, want once", tc.file, tc.old, n)
			}
			if err := os.WriteFile(path, []byte(strings.Replace(string(b), tc.old, tc.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			dir := tc.build
			if dir == "" {
				dir = "overlays/dev"
			}
			m, problems := load(filesys.MakeFsOnDisk(), filepath.Join(root, dir))
			if m != nil {
				problems = append(problems, check(m)...)
				if builds[dir].ha {
					problems = append(problems, checkHA(m)...)
				}
				if builds[dir].secure {
					problems = append(problems, checkSecurity(m)...)
				}
			}
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					t.Logf("reported: %s", p)
					return
				}
			}
			t.Errorf("no problem contains %q; got:\n%s", tc.want, strings.Join(problems, "\n"))
		})
	}
}

// copyTree copies the kustomizations (every directory but Go's) to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

func ptrString(p *int32) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// checkArchive checks that the aggregators are given an object store and
// that they and the reconcile CronJob can read its credentials.
func checkArchive(m *manifest) []string {
	var problems []string
	if cm := m.configMaps["clickagg"]; cm == nil || cm.Data["CLICKAGG_ARCHIVE_BUCKET"] == "" {
		problems = append(problems, "ConfigMap clickagg: no CLICKAGG_ARCHIVE_BUCKET: nothing is archived")
	}
	specs := map[string]*corev1.PodSpec{}
	if wl := m.workload("aggregator"); wl != nil {
		specs["aggregator"] = &wl.template.Spec
	}
	for _, cj := range m.cronJobs {
		if cj.Name == "reconcile" {
			specs["reconcile"] = &cj.Spec.JobTemplate.Spec.Template.Spec
		}
	}
	for _, name := range []string{"aggregator", "reconcile"} {
		spec := specs[name]
		if spec == nil {
			problems = append(problems, "no "+name)
			continue
		}
		found := false
		for _, ct := range spec.Containers {
			for _, ef := range ct.EnvFrom {
				found = found || ef.SecretRef != nil && ef.SecretRef.Name == "clickagg-archive"
			}
		}
		if !found {
			problems = append(problems, name+": no envFrom of the Secret clickagg-archive (object store credentials)")
		}
	}
	return problems
}
