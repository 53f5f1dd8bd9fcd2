package k8s_test

import (
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const clickaggImage = "ghcr.io/clickagg/clickagg"

// shipNamespace is the namespace of examples/shipper: its DaemonSet mounts
// hostPath volumes, which only the Pod Security "privileged" level admits.
// It is the one namespace that may be other than restricted, and it may
// hold shippers only.
const shipNamespace = "clickagg-ship"

// roles are the values of -target that a pod may run; the pod's
// app.kubernetes.io/component label names it.
var roles = []string{"router", "aggregator", "coordinator", "queryd"}

// check returns every violated invariant of m, one sentence each.
func check(m *manifest) []string {
	c := &checker{m: m}
	c.namespace()
	for _, w := range m.workloads {
		c.workload(w)
	}
	for _, cj := range m.cronJobs {
		c.cronJob(cj)
	}
	for _, j := range m.jobs {
		c.job(j)
	}
	c.services()
	c.pdbs()
	c.hpas()
	c.netpols()
	c.etcd()
	c.redis()
	c.prometheus()
	c.prometheusOperator()
	c.certificates()
	c.lockdown()
	return c.problems
}

type checker struct {
	m        *manifest
	problems []string
}

func (c *checker) addf(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// selectsIn returns the workloads in namespace ns whose pods sel matches.
func (c *checker) selectsIn(ns string, sel *metav1.LabelSelector) []*workload {
	if sel == nil {
		return nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		c.addf("selector %v: %v", sel, err)
		return nil
	}
	var ws []*workload
	for _, w := range append(slices.Clone(c.m.workloads), c.m.jobWorkloads()...) {
		if w.namespace == ns && s.Matches(labels.Set(w.template.Labels)) {
			ws = append(ws, w)
		}
	}
	return ws
}

// mainNamespace is the name of the cluster's namespace: the one Namespace
// other than shipNamespace.
func (c *checker) mainNamespace() string {
	for _, ns := range c.m.namespaces {
		if ns.Name != shipNamespace {
			return ns.Name
		}
	}
	return ""
}

// namespace checks that everything is in the cluster's restricted
// namespace, except the shippers of examples/shipper and their policies,
// which are in shipNamespace.
func (c *checker) namespace() {
	var main []string
	hasShip := false
	for _, ns := range c.m.namespaces {
		want := "restricted"
		if ns.Name == shipNamespace {
			// hostPath volumes: neither restricted nor baseline admits them.
			want, hasShip = "privileged", true
		} else {
			main = append(main, ns.Name)
		}
		if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != want {
			c.addf("Namespace %s: label pod-security.kubernetes.io/enforce is %q, want %s", ns.Name, got, want)
		}
	}
	if len(main) != 1 {
		c.addf("Namespaces %v besides %s, want 1", main, shipNamespace)
		return
	}
	allowed := []string{main[0]}
	if hasShip {
		allowed = append(allowed, shipNamespace)
	}
	for i, o := range c.m.objects {
		if k := c.m.kinds[i]; k != "Namespace" && !slices.Contains(allowed, o.GetNamespace()) {
			c.addf("%s %s: namespace %q, want one of %q", k, o.GetName(), o.GetNamespace(), allowed)
		}
	}
	for _, w := range c.m.workloads {
		if ship := isShipper(w); ship != (w.namespace == shipNamespace) {
			c.addf("%s: in namespace %q, but shippers (and only they) belong in %s", w, w.namespace, shipNamespace)
		}
	}
}

// isShipper reports whether w runs `clickagg ship`.
func isShipper(w *workload) bool {
	for _, ct := range w.template.Spec.Containers {
		if imageRepo(ct.Image) == clickaggImage && len(ct.Args) > 0 && ct.Args[0] == "ship" {
			return true
		}
	}
	return false
}

func (c *checker) workload(w *workload) {
	s, err := metav1.LabelSelectorAsSelector(w.selector)
	switch {
	case err != nil:
		c.addf("%s: selector: %v", w, err)
	case w.selector == nil || s.Empty():
		c.addf("%s: empty selector", w)
	case !s.Matches(labels.Set(w.template.Labels)):
		c.addf("%s: selector %s does not match the template's labels %v", w, s, w.template.Labels)
	}
	if w.kind == "StatefulSet" {
		svc := c.service(w.serviceName)
		switch {
		case svc == nil:
			c.addf("%s: serviceName %q is not a Service", w, w.serviceName)
		case !slices.Contains(c.selectsIn(w.namespace, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}), w):
			c.addf("%s: its Service %s does not select its pods", w, svc.Name)
		}
	}
	spec := &w.template.Spec
	c.podSecurity(w, spec)
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil && c.m.configMaps[v.ConfigMap.Name] == nil {
			c.addf("%s: volume %s: no ConfigMap %s", w, v.Name, v.ConfigMap.Name)
		}
	}
	for _, ct := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		c.resources(w, &ct)
		c.image(w, ct.Image)
		c.envRefs(w, &ct)
	}
	for _, ct := range spec.Containers {
		if ct.ReadinessProbe == nil {
			c.addf("%s: container %s: no readinessProbe", w, ct.Name)
		}
		if ct.LivenessProbe == nil {
			c.addf("%s: container %s: no livenessProbe", w, ct.Name)
		}
		for _, p := range namedProbes(&ct) {
			if p.probe.HTTPGet != nil {
				c.portOf(w, &ct, p.name, p.probe.HTTPGet.Port)
			}
			if p.probe.TCPSocket != nil {
				c.portOf(w, &ct, p.name, p.probe.TCPSocket.Port)
			}
		}
		switch {
		case imageRepo(ct.Image) != clickaggImage:
		case len(ct.Args) > 0 && ct.Args[0] == "ship":
			c.shipper(w, &ct)
		default:
			c.clickagg(w, &ct)
		}
	}
}

type namedProbe struct {
	name  string
	probe *corev1.Probe
}

func namedProbes(ct *corev1.Container) []namedProbe {
	var ps []namedProbe
	for _, p := range []namedProbe{{"startupProbe", ct.StartupProbe}, {"readinessProbe", ct.ReadinessProbe}, {"livenessProbe", ct.LivenessProbe}} {
		if p.probe != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// portOf checks that a probe's port is a port of its container.
func (c *checker) portOf(w *workload, ct *corev1.Container, what string, port intstr.IntOrString) {
	if !hasPort(ct, port) {
		c.addf("%s: container %s: %s port %s is not a port of the container", w, ct.Name, what, port.String())
	}
}

func hasPort(ct *corev1.Container, port intstr.IntOrString) bool {
	for _, p := range ct.Ports {
		if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return true
		}
	}
	return false
}

// podSecurity checks the Pod Security "restricted" profile.
func (c *checker) podSecurity(w *workload, spec *corev1.PodSpec) {
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		c.addf("%s: uses the host's network, PID or IPC namespace", w)
	}
	for _, v := range spec.Volumes {
		// A shipper reads the node's logs and keeps its checkpoint on the
		// node (shipper checks how); its namespace is privileged for it.
		if v.HostPath != nil && !(isShipper(w) && w.namespace == shipNamespace) {
			c.addf("%s: hostPath volume %s", w, v.Name)
		}
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	for _, ct := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := ct.SecurityContext
		if sc == nil {
			c.addf("%s: container %s: no securityContext", w, ct.Name)
			continue
		}
		nonRoot := psc.RunAsNonRoot
		if sc.RunAsNonRoot != nil {
			nonRoot = sc.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			c.addf("%s: container %s: runAsNonRoot is not true", w, ct.Name)
		}
		user := psc.RunAsUser
		if sc.RunAsUser != nil {
			user = sc.RunAsUser
		}
		if user != nil && *user == 0 {
			c.addf("%s: container %s: runs as uid 0", w, ct.Name)
		}
		seccomp := psc.SeccompProfile
		if sc.SeccompProfile != nil {
			seccomp = sc.SeccompProfile
		}
		if seccomp == nil || (seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault && seccomp.Type != corev1.SeccompProfileTypeLocalhost) {
			c.addf("%s: container %s: seccompProfile is not RuntimeDefault", w, ct.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			c.addf("%s: container %s: allowPrivilegeEscalation is not false", w, ct.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			c.addf("%s: container %s: privileged", w, ct.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			c.addf("%s: container %s: capabilities do not drop ALL", w, ct.Name)
		} else {
			for _, a := range sc.Capabilities.Add {
				if a != "NET_BIND_SERVICE" {
					c.addf("%s: container %s: adds capability %s", w, ct.Name, a)
				}
			}
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			c.addf("%s: container %s: readOnlyRootFilesystem is not true", w, ct.Name)
		}
	}
}

func (c *checker) resources(w *workload, ct *corev1.Container) {
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := ct.Resources.Requests[name]
		lim, okLim := ct.Resources.Limits[name]
		if !okReq || req.IsZero() {
			c.addf("%s: container %s: no requests.%s", w, ct.Name, name)
		}
		if !okLim || lim.IsZero() {
			c.addf("%s: container %s: no limits.%s", w, ct.Name, name)
		}
		if okReq && okLim && req.Cmp(lim) > 0 {
			c.addf("%s: container %s: requests.%s %s above limits.%s %s", w, ct.Name, name, req.String(), name, lim.String())
		}
	}
}

var pinnedTag = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+([-.][0-9A-Za-z.-]+)?$`)

// imageRepo is image without its tag and digest.
func imageRepo(image string) string {
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[:i]
	}
	return image
}

func (c *checker) image(w *workload, image string) {
	repo := imageRepo(image)
	if _, digest, ok := strings.Cut(image, "@"); ok {
		if !strings.HasPrefix(digest, "sha256:") {
			c.addf("%s: image %s: digest %q is not sha256", w, image, digest)
		}
		return
	}
	tag := strings.TrimPrefix(strings.TrimPrefix(image, repo), ":")
	switch {
	case tag == "":
		c.addf("%s: image %s: no tag or digest (set one in the kustomization's images:)", w, image)
	case !pinnedTag.MatchString(tag):
		c.addf("%s: image %s: tag %q is not a pinned version (want x.y.z)", w, image, tag)
	}
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// envRefs checks that every $(VAR) in command and args is an env variable
// of the container: the kubelet leaves unknown references as they are.
func (c *checker) envRefs(w *workload, ct *corev1.Container) {
	defined := map[string]bool{}
	for _, e := range ct.Env {
		defined[e.Name] = true
	}
	for _, ef := range ct.EnvFrom {
		if ef.ConfigMapRef != nil {
			if cm := c.m.configMaps[ef.ConfigMapRef.Name]; cm != nil {
				for k := range cm.Data {
					defined[ef.Prefix+k] = true
				}
			} else if ef.ConfigMapRef.Optional == nil || !*ef.ConfigMapRef.Optional {
				c.addf("%s: container %s: envFrom: no ConfigMap %s", w, ct.Name, ef.ConfigMapRef.Name)
			}
		}
	}
	for _, s := range append(slices.Clone(ct.Command), ct.Args...) {
		for _, m := range varRef.FindAllStringSubmatch(s, -1) {
			if !defined[m[1]] {
				c.addf("%s: container %s: $(%s) in args is not an env variable of the container", w, ct.Name, m[1])
			}
		}
	}
}

// setting is the effective value of one clickagg flag in a container.
type setting struct {
	value  string
	source string // "-name=value", "CLICKAGG_X (from ...)" or "default"
	given  bool   // on the command line
}

// clickaggFlags returns the effective value of every flag of a clickagg
// container, as the binary computes it: args, then the environment (env
// over envFrom), then the default. It reports args and variables that name
// no flag. A container whose args start with the command "ship" runs
// `clickagg ship`, whose flags are those of `clickagg ship -help`; one
// that starts with "reconcile" `clickagg reconcile`.
func (c *checker) clickaggFlags(w *workload, ct *corev1.Container) map[string]setting {
	flags, help, args := flags, "clickagg -help", ct.Args
	shared := false // the ConfigMap's keys may name the servers' flags
	switch {
	case len(args) > 0 && args[0] == "ship":
		flags, help, args = shipFlags, "clickagg ship -help", args[1:]
	case len(args) > 0 && args[0] == "reconcile":
		flags, help, args, shared = reconcileFlags, "clickagg reconcile -help", args[1:], true
	}
	eff := map[string]setting{}
	for name, f := range flags {
		eff[name] = setting{value: f.def, source: "default"}
	}
	byEnv := map[string]string{}
	for name := range flags {
		byEnv[envName(name)] = name
	}
	env := func(k, v, from string) {
		if !strings.HasPrefix(k, "CLICKAGG_") {
			return
		}
		name, ok := byEnv[k]
		if !ok && shared && strings.HasPrefix(from, "ConfigMap ") {
			return // checked against the servers' flags where they use it
		}
		if !ok {
			c.addf("%s: %s (from %s) names no flag of %s", w, k, from, help)
			return
		}
		eff[name] = setting{value: v, source: k + " (from " + from + ")"}
	}
	for _, ef := range ct.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		if cm := c.m.configMaps[ef.ConfigMapRef.Name]; cm != nil {
			for k, v := range cm.Data {
				env(ef.Prefix+k, v, "ConfigMap "+cm.Name)
			}
		}
	}
	for _, e := range ct.Env {
		v := e.Value
		if e.ValueFrom != nil {
			v = "$(" + e.Name + ")"
		}
		env(e.Name, v, "env of container "+ct.Name)
	}
	if len(ct.Command) > 0 {
		c.addf("%s: container %s: command is set; the image's entrypoint is clickagg", w, ct.Name)
	}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || strings.HasPrefix(a, "--") || !ok {
			c.addf("%s: arg %q: write flags as -name=value", w, a)
			continue
		}
		if _, known := flags[name]; !known {
			c.addf("%s: unknown flag -%s (not in %s)", w, name, help)
			continue
		}
		eff[name] = setting{value: value, source: a, given: true}
	}
	return eff
}

// listenPort is the port of a listen address such as ":9090".
func listenPort(addr string) (int32, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q: not a fixed port", p)
	}
	return int32(n), nil
}

// clickagg checks a container that runs the clickagg binary against the
// flags it is given.
func (c *checker) clickagg(w *workload, ct *corev1.Container) {
	eff := c.clickaggFlags(w, ct)
	role := w.template.Labels["app.kubernetes.io/component"]
	if t := eff["target"]; !t.given || t.value != role || !slices.Contains(roles, role) {
		c.addf("%s: -target is %q (%s), want the pod's app.kubernetes.io/component %q, one of %v", w, t.value, t.source, role, roles)
	}

	ports := c.serving(w, ct, eff)

	// Liveness and startup ask only whether the process is stuck; readiness
	// whether it can work now. A liveness probe of readiness would restart
	// every pod whenever Redis is down.
	// Under TLS the probes are HTTPS (serving checks how), and /healthz
	// and /readyz stand for the services "liveness" and "".
	for _, p := range namedProbes(ct) {
		want, wantPath := "liveness", "/healthz"
		if p.name == "readinessProbe" {
			want, wantPath = "", "/readyz"
		}
		switch {
		case p.probe.HTTPGet != nil:
			if p.probe.HTTPGet.Path != wantPath {
				c.addf("%s: container %s: %s asks %s, want %s", w, ct.Name, p.name, p.probe.HTTPGet.Path, wantPath)
			}
		case p.probe.GRPC == nil:
			c.addf("%s: container %s: %s is not a gRPC health probe", w, ct.Name, p.name)
		case p.probe.GRPC.Service == nil && want != "":
			c.addf("%s: container %s: %s asks gRPC health service \"\", want %q", w, ct.Name, p.name, want)
		case p.probe.GRPC.Service != nil && *p.probe.GRPC.Service != want:
			c.addf("%s: container %s: %s asks gRPC health service %q, want %q", w, ct.Name, p.name, *p.probe.GRPC.Service, want)
		}
	}

	// Identity and address: the pod's name and IP.
	fieldRef := fieldRefs(ct)
	if id := eff["id"]; id.value != "$(POD_NAME)" || fieldRef["POD_NAME"] != "metadata.name" {
		c.addf("%s: -id must be $(POD_NAME) with POD_NAME from metadata.name (is %q, %s)", w, id.value, id.source)
	}
	wantAdv := fmt.Sprintf("$(POD_IP):%d", ports["grpc"])
	if adv := eff["grpc.advertise-addr"]; adv.value != wantAdv || fieldRef["POD_IP"] != "status.podIP" {
		c.addf("%s: -grpc.advertise-addr must be %s with POD_IP from status.podIP (is %q, %s)", w, wantAdv, adv.value, adv.source)
	}

	c.scrape(w, ports["http"], eff["tls.cert-file"].value != "")

	if role == "aggregator" {
		c.aggregator(w, eff)
	}
}

// serving checks the ports and probes of a clickagg container (any
// command): exactly grpc and http, where -grpc.addr and -http.addr listen,
// and gRPC health probes on the gRPC port. It returns the ports by name.
func (c *checker) serving(w *workload, ct *corev1.Container, eff map[string]setting) map[string]int32 {
	ports := map[string]int32{}
	for _, want := range []struct{ port, flag string }{{"grpc", "grpc.addr"}, {"http", "http.addr"}} {
		s := eff[want.flag]
		n, err := listenPort(s.value)
		if err != nil {
			c.addf("%s: -%s=%s (%s): %v", w, want.flag, s.value, s.source, err)
			continue
		}
		ports[want.port] = n
		found := false
		for _, p := range ct.Ports {
			if p.Name == want.port {
				found = true
				if p.ContainerPort != n {
					c.addf("%s: container port %s is %d, but -%s=%s listens on %d", w, want.port, p.ContainerPort, want.flag, s.value, n)
				}
			}
		}
		if !found {
			c.addf("%s: no container port named %s (-%s=%s listens on %d)", w, want.port, want.flag, s.value, n)
		}
	}
	for _, p := range ct.Ports {
		if _, ok := ports[p.Name]; !ok {
			c.addf("%s: container port %s (%d): clickagg listens on grpc and http only", w, p.Name, p.ContainerPort)
		}
	}

	// Probes: the gRPC health service on the gRPC port; under TLS, which
	// the kubelet's gRPC probe does not speak, HTTPS on the HTTP port
	// (it serves TLS with the same certificate and never requires a
	// client certificate).
	grpcAddr := eff["grpc.addr"].value
	tlsOn := eff["tls.cert-file"].value != ""
	for _, p := range namedProbes(ct) {
		switch {
		case tlsOn && p.probe.HTTPGet == nil:
			c.addf("%s: %s: not an HTTPS httpGet probe, but -tls.cert-file is set and the kubelet's gRPC probe cannot speak TLS", w, p.name)
		case tlsOn && p.probe.HTTPGet.Scheme != corev1.URISchemeHTTPS:
			c.addf("%s: %s: httpGet scheme %q, but -tls.cert-file is set: the HTTP port serves HTTPS", w, p.name, p.probe.HTTPGet.Scheme)
		case tlsOn && !portIs(ct, p.probe.HTTPGet.Port, ports["http"]):
			c.addf("%s: %s: httpGet port %s, but -http.addr=%s listens on %d", w, p.name, p.probe.HTTPGet.Port.String(), eff["http.addr"].value, ports["http"])
		case tlsOn:
		case p.probe.GRPC == nil:
			c.addf("%s: %s: not a gRPC probe (clickagg serves grpc.health.v1 on -grpc.addr)", w, p.name)
		case p.probe.GRPC.Port != ports["grpc"]:
			c.addf("%s: %s: gRPC probe on port %d, but -grpc.addr=%s listens on %d", w, p.name, p.probe.GRPC.Port, grpcAddr, ports["grpc"])
		}
	}
	return ports
}

// portIs reports whether port, a number or the name of a port of ct, is
// n.
func portIs(ct *corev1.Container, port intstr.IntOrString, n int32) bool {
	if port.Type == intstr.Int {
		return port.IntVal == n
	}
	for _, p := range ct.Ports {
		if p.Name == port.StrVal {
			return p.ContainerPort == n
		}
	}
	return false
}

// scrape checks that the scrape annotations name the HTTP port, /metrics
// and, when it serves TLS, https.
func (c *checker) scrape(w *workload, http int32, tlsOn bool) {
	ann := w.template.Annotations
	if want := map[bool]string{true: "https"}[tlsOn]; ann["prometheus.io/scheme"] != want && (want != "" || ann["prometheus.io/scheme"] != "http") {
		c.addf("%s: annotation prometheus.io/scheme is %q, want %q (-tls.cert-file %v)", w, ann["prometheus.io/scheme"], want, map[bool]string{true: "set", false: "unset"}[tlsOn])
	}
	if ann["prometheus.io/scrape"] != "true" {
		c.addf("%s: annotation prometheus.io/scrape is %q, want \"true\"", w, ann["prometheus.io/scrape"])
	}
	if got, want := ann["prometheus.io/port"], strconv.Itoa(int(http)); got != want {
		c.addf("%s: annotation prometheus.io/port is %q, want the -http.addr port %q", w, got, want)
	}
	if got := ann["prometheus.io/path"]; got != "/metrics" {
		c.addf("%s: annotation prometheus.io/path is %q, want /metrics", w, got)
	}
}

// fieldRefs maps the container's variables set from the downward API to
// their field paths.
func fieldRefs(ct *corev1.Container) map[string]string {
	fieldRef := map[string]string{}
	for _, e := range ct.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			fieldRef[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	return fieldRef
}

// aggregator checks what an aggregator needs beyond every role: a stable
// identity and time to hand its partitions over and snapshot on SIGTERM.
func (c *checker) aggregator(w *workload, eff map[string]setting) {
	if w.kind != "StatefulSet" {
		c.addf("%s: aggregators must be a StatefulSet (stable member ids)", w)
	}
	var need time.Duration
	var terms []string
	for _, f := range []string{"aggregator.leave-timeout", "aggregator.release-timeout", "shutdown.drain-delay", "shutdown.timeout"} {
		s := eff[f]
		d := time.Duration(0)
		if s.value != "" {
			var err error
			if d, err = time.ParseDuration(s.value); err != nil {
				c.addf("%s: -%s=%s (%s): %v", w, f, s.value, s.source, err)
			}
		}
		need += d
		terms = append(terms, fmt.Sprintf("-%s %v", f, d))
	}
	// The final snapshots and the lease release (bounded by 5s) come on top.
	need += 10 * time.Second
	grace := time.Duration(ptr64(w.template.Spec.TerminationGracePeriodSeconds, 30)) * time.Second
	if grace <= need {
		c.addf("%s: terminationGracePeriodSeconds %d is not above %s + 10s for the final snapshot and the lease = %v",
			w, int64(grace/time.Second), strings.Join(terms, " + "), need)
	}
}

func ptr64(p *int64, def int64) int64 {
	if p == nil {
		return def
	}
	return *p
}

func (c *checker) service(name string) *corev1.Service {
	for _, s := range c.m.services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// services checks that each Service selects pods and that its target
// ports are ports of those pods.
func (c *checker) services() {
	for _, s := range c.m.services {
		if len(s.Spec.Selector) == 0 {
			c.addf("Service %s: no selector", s.Name)
			continue
		}
		ws := c.selectsIn(s.Namespace, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		if len(ws) == 0 {
			c.addf("Service %s selects no pods (selector %v)", s.Name, s.Spec.Selector)
		}
		for _, p := range s.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			for _, w := range ws {
				if !podHasPort(w, target) {
					c.addf("Service %s: port %s: targetPort %q is not a port of %s", s.Name, p.Name, target.String(), w)
				}
			}
		}
	}
}

func podHasPort(w *workload, port intstr.IntOrString) bool {
	for i := range w.template.Spec.Containers {
		if hasPort(&w.template.Spec.Containers[i], port) {
			return true
		}
	}
	return false
}

func (c *checker) pdbs() {
	for _, p := range c.m.pdbs {
		if len(c.selectsIn(p.Namespace, p.Spec.Selector)) == 0 {
			c.addf("PodDisruptionBudget %s selects no pods", p.Name)
		}
	}
	for _, w := range c.m.workloads {
		if w.template.Labels["app.kubernetes.io/component"] != "aggregator" {
			continue
		}
		covered := false
		for _, p := range c.m.pdbs {
			covered = covered || slices.Contains(c.selectsIn(p.Namespace, p.Spec.Selector), w)
		}
		if !covered {
			c.addf("no PodDisruptionBudget selects %s", w)
		}
	}
}

func (c *checker) hpas() {
	for _, h := range c.m.hpas {
		ref := h.Spec.ScaleTargetRef
		var target *workload
		for _, w := range c.m.workloads {
			if w.kind == ref.Kind && w.name == ref.Name {
				target = w
			}
		}
		if target == nil || ref.APIVersion != "apps/v1" {
			c.addf("HorizontalPodAutoscaler %s: target %s %s does not exist (apiVersion %q)", h.Name, ref.Kind, ref.Name, ref.APIVersion)
			continue
		}
		if min := ptrValue(h.Spec.MinReplicas); min < 1 || min > h.Spec.MaxReplicas {
			c.addf("HorizontalPodAutoscaler %s: minReplicas %d, maxReplicas %d", h.Name, min, h.Spec.MaxReplicas)
		}
		if target.replicas != nil && target.kind == "Deployment" {
			c.addf("%s: spec.replicas is set although HorizontalPodAutoscaler %s scales it (every apply would reset it)", target, h.Name)
		}
		for _, mt := range h.Spec.Metrics {
			if mt.Resource == nil {
				continue
			}
			for _, ct := range target.template.Spec.Containers {
				if _, ok := ct.Resources.Requests[mt.Resource.Name]; !ok {
					c.addf("HorizontalPodAutoscaler %s: container %s of %s has no %s request to scale on", h.Name, ct.Name, target, mt.Resource.Name)
				}
			}
		}
	}
}

// netpols checks that each NetworkPolicy applies to pods, that the pods
// it admits from or to exist, and that its ports are ports of the pods
// they reach. A policy and its pod selectors apply in its own namespace.
func (c *checker) netpols() {
	for _, np := range c.m.netpols {
		var targets []*workload
		if len(np.Spec.PodSelector.MatchLabels)+len(np.Spec.PodSelector.MatchExpressions) == 0 {
			targets = c.selectsIn(np.Namespace, &metav1.LabelSelector{})
		} else if targets = c.selectsIn(np.Namespace, &np.Spec.PodSelector); len(targets) == 0 {
			c.addf("NetworkPolicy %s selects no pods", np.Name)
		}
		peers := func(dir string, ps []networkingv1.NetworkPolicyPeer) [][]*workload {
			var out [][]*workload
			for _, p := range ps {
				if p.PodSelector == nil || p.NamespaceSelector != nil {
					out = append(out, nil) // other namespaces or addresses: not checked here
					continue
				}
				ws := c.selectsIn(np.Namespace, p.PodSelector)
				if len(ws) == 0 {
					c.addf("NetworkPolicy %s: %s peer %v selects no pods", np.Name, dir, p.PodSelector.MatchLabels)
				}
				out = append(out, ws)
			}
			return out
		}
		for _, r := range np.Spec.Ingress {
			peers("ingress", r.From)
			for _, p := range r.Ports {
				if p.Port == nil {
					continue
				}
				for _, w := range targets {
					if !podHasPort(w, *p.Port) {
						c.addf("NetworkPolicy %s: ingress port %s is not a port of %s", np.Name, p.Port.String(), w)
					}
				}
			}
		}
		for _, r := range np.Spec.Egress {
			for _, ws := range peers("egress", r.To) {
				for _, p := range r.Ports {
					if p.Port == nil {
						continue
					}
					for _, w := range ws {
						if !podHasPort(w, *p.Port) {
							c.addf("NetworkPolicy %s: egress port %s is not a port of %s", np.Name, p.Port.String(), w)
						}
					}
				}
			}
		}
	}
}

// etcd checks that the member list agrees with the StatefulSet and the
// endpoints that clickagg is given.
func (c *checker) etcd() {
	w := c.m.workload("etcd")
	if w == nil {
		c.addf("no StatefulSet etcd")
		return
	}
	if w.kind != "StatefulSet" || len(w.claims) == 0 {
		c.addf("%s: etcd must be a StatefulSet with a volumeClaimTemplate", w)
	}
	if svc := c.service(w.serviceName); svc != nil && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		c.addf("%s: its Service %s is not headless", w, svc.Name)
	}
	var pods []string
	for i := range ptrValue(w.replicas) {
		pods = append(pods, fmt.Sprintf("%s-%d", w.name, i))
	}
	var members []string
	for _, ct := range w.template.Spec.Containers {
		for _, e := range ct.Env {
			if e.Name == "ETCD_INITIAL_CLUSTER" {
				for _, m := range strings.Split(e.Value, ",") {
					name, _, _ := strings.Cut(m, "=")
					members = append(members, name)
				}
			}
		}
	}
	if !slices.Equal(members, pods) {
		c.addf("%s: ETCD_INITIAL_CLUSTER names %v, want the %d pods %v", w, members, len(pods), pods)
	}
	var endpoints []string
	if cm := c.m.configMaps["clickagg"]; cm != nil {
		for _, e := range strings.Split(cm.Data[envName("etcd.endpoints")], ",") {
			host := strings.TrimPrefix(strings.TrimPrefix(e, "http://"), "https://")
			host, _, _ = strings.Cut(host, ".")
			endpoints = append(endpoints, host)
		}
	}
	if !slices.Equal(endpoints, pods) {
		c.addf("ConfigMap clickagg: %s names %v, want the etcd pods %v", envName("etcd.endpoints"), endpoints, pods)
	}
}

// redis checks the in-cluster Redis, when there is one: every write is
// fsynced, and the data is on a persistent volume.
func (c *checker) redis() {
	w := c.m.workload("redis")
	if w == nil {
		return
	}
	if w.kind != "StatefulSet" || len(w.claims) == 0 {
		c.addf("%s: Redis must be a StatefulSet with a volumeClaimTemplate", w)
	}
	cm := c.m.configMaps["redis"]
	if cm == nil {
		c.addf("no ConfigMap redis")
		return
	}
	conf := map[string]string{}
	for _, line := range strings.Split(cm.Data["redis.conf"], "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		conf[k] = strings.TrimSpace(v)
	}
	for _, kv := range [][2]string{{"appendonly", "yes"}, {"appendfsync", "always"}, {"maxmemory-policy", "noeviction"}} {
		if conf[kv[0]] != kv[1] {
			c.addf("ConfigMap redis: redis.conf must say %q", kv[0]+" "+kv[1])
		}
	}
	mounted := false
	for _, ct := range w.template.Spec.Containers {
		for _, vm := range ct.VolumeMounts {
			mounted = mounted || (vm.MountPath == conf["dir"] && slices.ContainsFunc(w.claims, func(p corev1.PersistentVolumeClaim) bool { return p.Name == vm.Name }))
		}
	}
	if !mounted {
		c.addf("%s: Redis's dir %q is not a persistent volume", w, conf["dir"])
	}
	if conf["cluster-enabled"] == "yes" {
		c.redisCluster(w, conf)
	}
}

// prometheus checks the scrape job: Kubernetes pod discovery in this
// namespace and in every other one with annotated pods (the shippers'),
// kept by the prometheus.io/scrape annotation.
func (c *checker) prometheus() {
	cm := c.m.configMaps["prometheus-scrape"]
	if cm == nil {
		c.addf("no ConfigMap prometheus-scrape")
		return
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName             string `json:"job_name"`
			KubernetesSDConfigs []struct {
				Role       string `json:"role"`
				Namespaces struct {
					Names []string `json:"names"`
				} `json:"namespaces"`
			} `json:"kubernetes_sd_configs"`
			TLSConfig *struct {
				CAFile     string `json:"ca_file"`
				ServerName string `json:"server_name"`
			} `json:"tls_config"`
			RelabelConfigs []struct {
				SourceLabels []string `json:"source_labels"`
				Action       string   `json:"action"`
				Regex        string   `json:"regex"`
				TargetLabel  string   `json:"target_label"`
				Replacement  string   `json:"replacement"`
			} `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["clickagg.yml"]), &cfg); err != nil {
		c.addf("ConfigMap prometheus-scrape: clickagg.yml: %v", err)
		return
	}
	nss := []string{c.mainNamespace()}
	https := false
	for _, w := range c.m.workloads {
		if w.template.Annotations["prometheus.io/scrape"] == "true" && !slices.Contains(nss, w.namespace) {
			nss = append(nss, w.namespace)
		}
		https = https || w.template.Annotations["prometheus.io/scheme"] == "https"
	}
	serverName := ""
	if cm := c.m.configMaps["clickagg"]; cm != nil {
		serverName = cm.Data[envName("tls.server-name")]
	}
	for _, sc := range cfg.ScrapeConfigs {
		for _, ns := range nss {
			if len(sc.KubernetesSDConfigs) != 1 || sc.KubernetesSDConfigs[0].Role != "pod" || !slices.Contains(sc.KubernetesSDConfigs[0].Namespaces.Names, ns) {
				c.addf("ConfigMap prometheus-scrape: job %s: want kubernetes_sd_configs of role pod in namespace %s", sc.JobName, ns)
			}
		}
		keeps := false
		for _, r := range sc.RelabelConfigs {
			keeps = keeps || (r.Action == "keep" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_pod_annotation_prometheus_io_scrape"}))
		}
		if !keeps {
			c.addf("ConfigMap prometheus-scrape: job %s does not keep pods by the prometheus.io/scrape annotation", sc.JobName)
		}
		if !https {
			continue
		}
		// Pods that serve /metrics over HTTPS: the scheme from their
		// annotation, checked against the cluster's CA and the name
		// every member certificate holds (they are scraped at pod IPs).
		scheme := false
		for _, r := range sc.RelabelConfigs {
			scheme = scheme || (r.TargetLabel == "__scheme__" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_pod_annotation_prometheus_io_scheme"}))
		}
		if !scheme {
			c.addf("ConfigMap prometheus-scrape: job %s does not take __scheme__ from the prometheus.io/scheme annotation, and pods serve https", sc.JobName)
		}
		if t := sc.TLSConfig; t == nil || t.CAFile == "" || t.ServerName != serverName {
			c.addf("ConfigMap prometheus-scrape: job %s: want a tls_config with the cluster's ca_file and server_name %q (-tls.server-name), pods serve https", sc.JobName, serverName)
		}
	}
	if len(cfg.ScrapeConfigs) == 0 {
		c.addf("ConfigMap prometheus-scrape: no scrape_configs")
	}
}

// shipper checks a container that runs `clickagg ship` on every node: its
// own flags (from `clickagg ship -help`), the node's name as its -id, the
// router Service as its routers, its logs on a read-only hostPath and its
// checkpoint on a writable one.
func (c *checker) shipper(w *workload, ct *corev1.Container) {
	eff := c.clickaggFlags(w, ct)
	if w.kind != "DaemonSet" {
		c.addf("%s: shippers must be a DaemonSet (one per node, reading that node's logs)", w)
	}
	ports := c.serving(w, ct, eff)
	if id := eff["id"]; id.value != "$(NODE_NAME)" || fieldRefs(ct)["NODE_NAME"] != "spec.nodeName" {
		c.addf("%s: -id must be $(NODE_NAME) with NODE_NAME from spec.nodeName, stable across the shipper's restarts on a node (is %q, %s)", w, id.value, id.source)
	}

	// Routers: a Service selecting routers, by its DNS name
	// <service>.<namespace>.svc; with dns:/// a headless one, whose every
	// router pod the shipper spreads its requests over (package
	// grpcclient).
	routers := eff["ship.routers"]
	if routers.value == "" {
		c.addf("%s: no -ship.routers", w)
	}
	for _, addr := range strings.Split(routers.value, ",") {
		if addr == "" {
			continue
		}
		target, spread := strings.CutPrefix(addr, "dns:///")
		host, port, err := net.SplitHostPort(target)
		if err != nil {
			c.addf("%s: -ship.routers: %q: %v", w, addr, err)
			continue
		}
		parts := strings.Split(host, ".")
		var svc *corev1.Service
		if len(parts) >= 3 && parts[2] == "svc" {
			if s := c.service(parts[0]); s != nil && s.Namespace == parts[1] {
				svc = s
			}
		}
		if svc == nil {
			c.addf("%s: -ship.routers: %q is not <service>.<namespace>.svc of a Service here", w, addr)
			continue
		}
		if spread && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			c.addf("%s: -ship.routers: %q: Service %s is not headless: its name resolves to one virtual IP, so dns:/// spreads over nothing", w, addr, svc.Name)
		}
		routerPods := false
		for _, sw := range c.selectsIn(svc.Namespace, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}) {
			routerPods = routerPods || sw.template.Labels["app.kubernetes.io/component"] == "router"
		}
		if !routerPods {
			c.addf("%s: -ship.routers: Service %s does not select routers", w, svc.Name)
		}
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
			c.addf("%s: -ship.routers: %q: port %s is not a port of Service %s", w, addr, port, svc.Name)
		}
	}

	// Files on the node: logs read-only, the checkpoint writable.
	files := eff["ship.files"]
	if files.value == "" {
		c.addf("%s: no -ship.files", w)
	}
	for _, f := range strings.Split(files.value, ",") {
		if f == "" {
			continue
		}
		vm, hostPath := c.mountOf(w, ct, path.Dir(f))
		switch {
		case vm == nil || !hostPath:
			c.addf("%s: -ship.files: the directory of %s is not a hostPath volume (the node's logs, and the rotated files next to them)", w, f)
		case !vm.ReadOnly:
			c.addf("%s: -ship.files: volume %s at %s is not readOnly (the shipper only reads the logs)", w, vm.Name, vm.MountPath)
		}
	}
	ck := eff["ship.checkpoint"]
	if ck.value == "" {
		c.addf("%s: no -ship.checkpoint: the default is next to the logs, on their read-only volume", w)
	} else {
		vm, hostPath := c.mountOf(w, ct, path.Dir(ck.value))
		switch {
		case vm == nil || !hostPath:
			c.addf("%s: -ship.checkpoint=%s (%s) is not on a hostPath volume: it must survive the pod", w, ck.value, ck.source)
		case vm.ReadOnly:
			c.addf("%s: -ship.checkpoint=%s: volume %s is readOnly", w, ck.value, vm.Name)
		}
	}

	// The shipper's HTTP listener is plaintext: its -tls.* flags are for
	// its calls to the routers.
	c.scrape(w, ports["http"], false)
}

// mountOf returns the container's volume mount that holds dir, and whether
// its volume is a hostPath.
func (c *checker) mountOf(w *workload, ct *corev1.Container, dir string) (*corev1.VolumeMount, bool) {
	var best *corev1.VolumeMount
	for i := range ct.VolumeMounts {
		vm := &ct.VolumeMounts[i]
		mp := strings.TrimSuffix(vm.MountPath, "/")
		if (dir == mp || strings.HasPrefix(dir, mp+"/")) && (best == nil || len(mp) > len(best.MountPath)) {
			best = vm
		}
	}
	if best == nil {
		return nil, false
	}
	for _, v := range w.template.Spec.Volumes {
		if v.Name == best.Name {
			return best, v.HostPath != nil
		}
	}
	c.addf("%s: container %s: volumeMount %s names no volume", w, ct.Name, best.Name)
	return best, false
}
