package k8s_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// manifest is one kustomize build, decoded into the Kubernetes API types.
type manifest struct {
	namespaces []*corev1.Namespace
	configMaps map[string]*corev1.ConfigMap
	services   []*corev1.Service
	workloads  []*workload
	cronJobs   []*batchv1.CronJob
	jobs       []*batchv1.Job
	hpas       []*autoscalingv2.HorizontalPodAutoscaler
	pdbs       []*policyv1.PodDisruptionBudget
	netpols    []*networkingv1.NetworkPolicy
	// cert-manager's, decoded into the fields this test knows.
	issuers      []*issuer
	certificates []*certificate
	// The Prometheus Operator's, decoded into the fields this test knows.
	podMonitors     []*podMonitor
	prometheusRules []*prometheusRule
	// objects are every object's kind, name and namespace.
	objects []metav1.Object
	kinds   []string
}

// workload is a Deployment, a StatefulSet or a DaemonSet.
type workload struct {
	kind, name  string
	namespace   string
	replicas    *int32
	selector    *metav1.LabelSelector
	template    *corev1.PodTemplateSpec
	serviceName string
	claims      []corev1.PersistentVolumeClaim
}

func (w *workload) String() string { return w.kind + " " + w.name }

func (m *manifest) workload(name string) *workload {
	for _, w := range m.workloads {
		if w.name == name {
			return w
		}
	}
	return nil
}

func (m *manifest) hpa(name string) *autoscalingv2.HorizontalPodAutoscaler {
	for _, h := range m.hpas {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// load builds the kustomization in dir with krusty and decodes every
// object strictly: an unknown or duplicate field, or a kind this test
// does not know, is a problem. m is nil when the build failed.
func load(fsys filesys.FileSystem, dir string) (m *manifest, problems []string) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fsys, dir)
	if err != nil {
		return nil, []string{fmt.Sprintf("kustomize build %s: %v", dir, err)}
	}
	m = &manifest{configMaps: map[string]*corev1.ConfigMap{}}
	for _, r := range rm.Resources() {
		gvk := r.GetGvk()
		apiVersion := gvk.Version
		if gvk.Group != "" {
			apiVersion = gvk.Group + "/" + gvk.Version
		}
		what := gvk.Kind + " " + r.GetName()
		data, err := r.MarshalJSON()
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", what, err))
			continue
		}
		var obj metav1.Object
		var add func()
		switch apiVersion + " " + gvk.Kind {
		case "v1 Namespace":
			o := &corev1.Namespace{}
			obj, add = o, func() { m.namespaces = append(m.namespaces, o) }
		case "v1 ConfigMap":
			o := &corev1.ConfigMap{}
			obj, add = o, func() { m.configMaps[o.Name] = o }
		case "v1 Service":
			o := &corev1.Service{}
			obj, add = o, func() { m.services = append(m.services, o) }
		case "apps/v1 Deployment":
			o := &appsv1.Deployment{}
			obj, add = o, func() {
				m.workloads = append(m.workloads, &workload{kind: "Deployment", name: o.Name, namespace: o.Namespace, replicas: o.Spec.Replicas, selector: o.Spec.Selector, template: &o.Spec.Template})
			}
		case "apps/v1 StatefulSet":
			o := &appsv1.StatefulSet{}
			obj, add = o, func() {
				m.workloads = append(m.workloads, &workload{kind: "StatefulSet", name: o.Name, namespace: o.Namespace, replicas: o.Spec.Replicas, selector: o.Spec.Selector, template: &o.Spec.Template,
					serviceName: o.Spec.ServiceName, claims: o.Spec.VolumeClaimTemplates})
			}
		case "apps/v1 DaemonSet":
			o := &appsv1.DaemonSet{}
			obj, add = o, func() {
				m.workloads = append(m.workloads, &workload{kind: "DaemonSet", name: o.Name, namespace: o.Namespace, selector: o.Spec.Selector, template: &o.Spec.Template})
			}
		case "batch/v1 Job":
			o := &batchv1.Job{}
			obj, add = o, func() { m.jobs = append(m.jobs, o) }
		case "batch/v1 CronJob":
			o := &batchv1.CronJob{}
			obj, add = o, func() { m.cronJobs = append(m.cronJobs, o) }
		case "autoscaling/v2 HorizontalPodAutoscaler":
			o := &autoscalingv2.HorizontalPodAutoscaler{}
			obj, add = o, func() { m.hpas = append(m.hpas, o) }
		case "policy/v1 PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			obj, add = o, func() { m.pdbs = append(m.pdbs, o) }
		case "networking.k8s.io/v1 NetworkPolicy":
			o := &networkingv1.NetworkPolicy{}
			obj, add = o, func() { m.netpols = append(m.netpols, o) }
		case "cert-manager.io/v1 Issuer":
			o := &issuer{}
			obj, add = o, func() { m.issuers = append(m.issuers, o) }
		case "cert-manager.io/v1 Certificate":
			o := &certificate{}
			obj, add = o, func() { m.certificates = append(m.certificates, o) }
		case "monitoring.coreos.com/v1 PodMonitor":
			o := &podMonitor{}
			obj, add = o, func() { m.podMonitors = append(m.podMonitors, o) }
		case "monitoring.coreos.com/v1 PrometheusRule":
			o := &prometheusRule{}
			obj, add = o, func() { m.prometheusRules = append(m.prometheusRules, o) }
		default:
			problems = append(problems, fmt.Sprintf("%s: apiVersion %s kind %s is not one this test decodes (add it, or use a current API version)", what, apiVersion, gvk.Kind))
			continue
		}
		strict, err := sigsjson.UnmarshalStrict(data, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", what, err))
			continue
		}
		for _, e := range strict {
			problems = append(problems, fmt.Sprintf("%s: %v", what, e))
		}
		add()
		m.objects = append(m.objects, obj)
		m.kinds = append(m.kinds, gvk.Kind)
	}
	return m, problems
}

// flagInfo is one flag of clickagg -help (or clickagg ship -help).
type flagInfo struct {
	def string // default value, "" when none is shown
}

var (
	helpFlagLine = regexp.MustCompile(`^  -([a-z0-9.-]+)(?: \S+)?$`)
	helpDefault  = regexp.MustCompile(`\(default (.*)\)$`)
)

// parseHelp reads the flags and their defaults from the output of
// flag.PrintDefaults; each flag of need must be among them.
func parseHelp(out string, need []string) (map[string]flagInfo, error) {
	fs := map[string]flagInfo{}
	cur := ""
	for _, line := range strings.Split(out, "\n") {
		if m := helpFlagLine.FindStringSubmatch(line); m != nil {
			cur = m[1]
			fs[cur] = flagInfo{}
			continue
		}
		if cur == "" || !strings.HasPrefix(line, "    ") {
			continue
		}
		if m := helpDefault.FindStringSubmatch(line); m != nil {
			d := m[1]
			if u, err := strconv.Unquote(d); err == nil {
				d = u
			}
			fs[cur] = flagInfo{def: d}
		}
	}
	for _, n := range need {
		if _, ok := fs[n]; !ok {
			return nil, fmt.Errorf("no flag -%s in the help output (%d flags read)", n, len(fs))
		}
	}
	return fs, nil
}

// envName is the environment variable of a flag, as cli.EnvName makes it.
func envName(flag string) string {
	return "CLICKAGG_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(flag))
}
