package k8s_test

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// jobWorkloads are the Jobs as workloads whose pods policies may select.
func (m *manifest) jobWorkloads() []*workload {
	var ws []*workload
	for _, j := range m.jobs {
		ws = append(ws, &workload{kind: "Job", name: j.Name, namespace: j.Namespace, template: &j.Spec.Template})
	}
	return ws
}

// job checks a Job: its pods meet the invariants of every pod (security,
// resources, pinned images, env references), and a failed pod is retried.
func (c *checker) job(j *batchv1.Job) {
	w := &workload{kind: "Job", name: j.Name, namespace: j.Namespace, template: &j.Spec.Template}
	spec := &w.template.Spec
	c.podSecurity(w, spec)
	if spec.RestartPolicy != corev1.RestartPolicyOnFailure && spec.RestartPolicy != corev1.RestartPolicyNever {
		c.addf("%s: restartPolicy is %q, want OnFailure or Never", w, spec.RestartPolicy)
	}
	for _, ct := range spec.Containers {
		c.resources(w, &ct)
		c.image(w, ct.Image)
		c.envRefs(w, &ct)
	}
}

// envValue is the literal value of a container's env variable, and whether
// it is a literal.
func envValue(ct *corev1.Container, name string) (string, bool) {
	for _, e := range ct.Env {
		if e.Name == name && e.ValueFrom == nil {
			return e.Value, true
		}
	}
	return "", false
}

// envSecret is the Secret and key a container's env variable comes from.
func envSecret(ct *corev1.Container, name string) (secret, key string) {
	for _, e := range ct.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			return e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key
		}
	}
	return "", ""
}

// redisCluster checks an in-cluster Redis Cluster: its node config is on
// the persistent volume and each node announces its stable name; the
// headless Service publishes every pod before it is ready; the Job that
// creates the cluster names exactly the StatefulSet's pods, in a shape
// redis-cli accepts (at least three primaries, each with the same number
// of replicas); every node and the Job authenticate with the Secret the
// clickagg clients mount; the clients are given the pods as Cluster
// seeds, not -redis.addr; and their writes wait for a replica.
func (c *checker) redisCluster(w *workload, conf map[string]string) {
	if f := conf["cluster-config-file"]; !strings.HasPrefix(f, conf["dir"]+"/") {
		c.addf("ConfigMap redis: cluster-config-file %q is not under dir %q (the persistent volume): a restarted node would forget its id and slots", f, conf["dir"])
	}
	if svc := c.service(w.serviceName); svc != nil && (svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses) {
		c.addf("%s: its Service %s must be headless and publish not-ready addresses (clients and the create Job reach each node by name)", w, svc.Name)
	}
	n := int(ptrValue(w.replicas))
	var pods, seeds []string
	for i := range n {
		host := fmt.Sprintf("%s-%d.%s", w.name, i, w.serviceName)
		pods = append(pods, host)
		seeds = append(seeds, host+":6379")
	}

	var secret string
	for _, ct := range w.template.Spec.Containers {
		if s, _ := envSecret(&ct, "REDISCLI_AUTH"); s != "" {
			secret = s
		}
		if !slices.ContainsFunc(ct.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == 16379 }) {
			c.addf("%s: container %s: no port 16379 (the cluster bus)", w, ct.Name)
		}
	}
	if secret == "" {
		c.addf("%s: no REDISCLI_AUTH from a Secret: the nodes must require a password", w)
	}
	if !slices.ContainsFunc(w.template.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == secret }) {
		c.addf("%s: the Secret %q of REDISCLI_AUTH is not mounted (requirepass is read from it)", w, secret)
	}

	perPrimary := 0
	var create *workload
	for _, j := range c.m.jobWorkloads() {
		for _, ct := range j.template.Spec.Containers {
			if _, ok := envValue(&ct, "NODES"); ok {
				create = j
			}
		}
	}
	if create == nil {
		c.addf("%s: no Job creates the cluster (a container with NODES and REPLICAS)", w)
	}
	for _, ct := range jobContainers(create) {
		nodes, _ := envValue(&ct, "NODES")
		if got := strings.Fields(nodes); !slices.Equal(got, pods) {
			c.addf("%s: NODES names %v, want the %d pods of %s %v", create, got, n, w, pods)
		}
		r, _ := envValue(&ct, "REPLICAS")
		replicas, err := strconv.Atoi(r)
		switch {
		case err != nil || replicas < 1:
			c.addf("%s: REPLICAS %q: want at least 1 replica per primary", create, r)
		case n%(replicas+1) != 0 || n/(replicas+1) < 3:
			c.addf("%s: %d pods with %d replicas per primary: want a multiple of %d with at least 3 primaries", create, n, replicas, replicas+1)
		default:
			perPrimary = replicas
		}
		for _, rc := range w.template.Spec.Containers {
			if ct.Image != rc.Image {
				c.addf("%s: image %s, want the nodes' %s (redis-cli --cluster of the same version)", create, ct.Image, rc.Image)
			}
		}
		if s, _ := envSecret(&ct, "REDISCLI_AUTH"); s != secret {
			c.addf("%s: REDISCLI_AUTH from Secret %q, want the nodes' %q", create, s, secret)
		}
	}

	cm := c.m.configMaps["clickagg"]
	if cm == nil {
		return
	}
	if got := cm.Data[envName("redis.cluster-addrs")]; got != strings.Join(seeds, ",") {
		c.addf("ConfigMap clickagg: %s is %q, want every Redis pod %q", envName("redis.cluster-addrs"), got, strings.Join(seeds, ","))
	}
	if a, ok := cm.Data[envName("redis.addr")]; ok {
		c.addf("ConfigMap clickagg: %s is %q on a Redis Cluster: set only %s", envName("redis.addr"), a, envName("redis.cluster-addrs"))
	}
	// Without a wait for replicas, a failover loses what the primary had
	// acknowledged and not yet replicated; a wait for more replicas than
	// there are refuses everything.
	if v := cm.Data[envName("redis.wait-replicas")]; perPrimary > 0 {
		if k, err := strconv.Atoi(v); err != nil || k < 1 || k > perPrimary {
			c.addf("ConfigMap clickagg: %s is %q: want 1 to %d, the replicas of each primary", envName("redis.wait-replicas"), v, perPrimary)
		}
	}
	pw := cm.Data[envName("redis.password-file")]
	if pw == "" {
		c.addf("ConfigMap clickagg: no %s on a Redis Cluster that requires a password", envName("redis.password-file"))
		return
	}
	for _, cw := range c.m.workloads {
		if !slices.Contains([]string{"router", "aggregator", "queryd"}, cw.template.Labels["app.kubernetes.io/component"]) {
			continue
		}
		for _, ct := range cw.template.Spec.Containers {
			if !secretMounted(cw, &ct, path.Dir(pw), secret) {
				c.addf("%s: container %s: the Secret %q is not mounted at %s (%s=%s)", cw, ct.Name, secret, path.Dir(pw), envName("redis.password-file"), pw)
			}
		}
	}
}

func jobContainers(w *workload) []corev1.Container {
	if w == nil {
		return nil
	}
	return w.template.Spec.Containers
}

// secretMounted reports whether the container mounts Secret secret at dir.
func secretMounted(w *workload, ct *corev1.Container, dir, secret string) bool {
	for _, vm := range ct.VolumeMounts {
		if vm.MountPath != dir {
			continue
		}
		for _, v := range w.template.Spec.Volumes {
			if v.Name == vm.Name && v.Secret != nil && v.Secret.SecretName == secret {
				return true
			}
		}
	}
	return false
}

// checkHA checks that nothing in a production build is single: every
// Deployment and StatefulSet of the cluster's namespace runs at least two
// pods (an autoscaled one at least two at its minimum) and a
// PodDisruptionBudget selects it.
func checkHA(m *manifest) []string {
	c := &checker{m: m}
	for _, w := range m.workloads {
		if w.kind == "DaemonSet" {
			continue
		}
		n := ptrValue(w.replicas)
		if w.replicas == nil {
			n = 1
		}
		for _, h := range m.hpas {
			if ref := h.Spec.ScaleTargetRef; ref.Kind == w.kind && ref.Name == w.name {
				n = ptrValue(h.Spec.MinReplicas)
			}
		}
		if n < 2 {
			c.addf("%s: %d replica(s): nothing in production may be single", w, n)
		}
		covered := false
		for _, p := range m.pdbs {
			covered = covered || slices.Contains(c.selectsIn(p.Namespace, p.Spec.Selector), w)
		}
		if !covered {
			c.addf("%s: no PodDisruptionBudget selects it", w)
		}
	}
	return c.problems
}
