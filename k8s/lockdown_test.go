package k8s_test

import (
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// flow is who may reach a port of some pods: the NetworkPolicies are the
// second line behind TLS and authorization, and must not admit more.
type flow struct {
	what   string // the pods, for messages
	target func(*workload) bool
	port   int32
	from   string // who may, for messages
	allow  func(*workload) bool
}

func named(name string) func(*workload) bool {
	return func(w *workload) bool { return w.template.Labels["app.kubernetes.io/name"] == name }
}

func roleIn(rs ...string) func(*workload) bool {
	return func(w *workload) bool {
		return w.template.Labels["app.kubernetes.io/name"] == "clickagg" && slices.Contains(rs, w.template.Labels["app.kubernetes.io/component"])
	}
}

func either(fs ...func(*workload) bool) func(*workload) bool {
	return func(w *workload) bool {
		return slices.ContainsFunc(fs, func(f func(*workload) bool) bool { return f(w) })
	}
}

// lockdown are the flows of the design (base/networkpolicies.yaml): etcd
// from clickagg pods and its peers; Redis from the routers, aggregators
// and queryds (the coordinator does not use it), its peers and the Job
// that creates the cluster; aggregators from the coordinator and queryd;
// coordinators from each other and from queryd, whose web console reads
// them (operators come through kubectl port-forward, which policies do
// not see).
var lockdown = []flow{
	{"etcd", named("etcd"), 2379, "clickagg pods", named("clickagg")},
	{"etcd", named("etcd"), 2380, "etcd", named("etcd")},
	{"redis", named("redis"), 6379, "routers, aggregators, queryds, Redis nodes, the create Job", either(roleIn("router", "aggregator", "queryd"), named("redis"), named("redis-cluster-create"))},
	{"redis", named("redis"), 16379, "Redis nodes", named("redis")},
	{"aggregators", roleIn("aggregator"), 9090, "coordinators and queryds", roleIn("coordinator", "queryd")},
	{"coordinators", roleIn("coordinator"), 9090, "coordinators and queryds", roleIn("coordinator", "queryd")},
}

// lockdown checks that every pod of the namespace is denied by default
// and that the ingress policies admit no one beyond the flows above to
// their ports.
func (c *checker) lockdown() {
	ns := c.mainNamespace()
	denied := false
	for _, np := range c.m.netpols {
		sel := np.Spec.PodSelector
		denied = denied || (np.Namespace == ns && len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 &&
			len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0 && len(np.Spec.PolicyTypes) == 2)
	}
	if !denied {
		c.addf("no NetworkPolicy in %s denies all ingress and egress by default", ns)
	}
	for _, f := range lockdown {
		for _, w := range c.m.workloads {
			if w.namespace != ns || !f.target(w) {
				continue
			}
			for _, who := range c.admitted(w, f.port) {
				if who.w == nil || !f.allow(who.w) {
					c.addf("NetworkPolicy %s admits %s to %s port %d: only %s may", who.policy, who, f.what, f.port, f.from)
				}
			}
		}
	}
}

// source is one peer an ingress rule admits: a workload of the policy's
// namespace, or a description of anything else.
type source struct {
	policy string
	w      *workload
	other  string
}

func (s source) String() string {
	if s.w != nil {
		return s.w.String()
	}
	return s.other
}

// admitted returns every source the ingress policies selecting w's pods
// admit to its container port port.
func (c *checker) admitted(w *workload, port int32) []source {
	var out []source
	for _, np := range c.m.netpols {
		s, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || np.Namespace != w.namespace || !s.Matches(labels.Set(w.template.Labels)) {
			continue
		}
		for _, r := range np.Spec.Ingress {
			covers := len(r.Ports) == 0
			for _, p := range r.Ports {
				covers = covers || p.Port == nil || podPort(w, p.Port.IntVal, p.Port.StrVal) == port
			}
			if !covers {
				continue
			}
			if len(r.From) == 0 {
				out = append(out, source{policy: np.Name, other: "every source"})
			}
			for _, peer := range r.From {
				switch {
				case peer.IPBlock != nil:
					out = append(out, source{policy: np.Name, other: "ipBlock " + peer.IPBlock.CIDR})
				case peer.NamespaceSelector != nil:
					out = append(out, source{policy: np.Name, other: fmt.Sprintf("namespaces %v", peer.NamespaceSelector.MatchLabels)})
				case peer.PodSelector != nil:
					for _, from := range c.selectsIn(np.Namespace, peer.PodSelector) {
						out = append(out, source{policy: np.Name, w: from})
					}
				}
			}
		}
	}
	return out
}

// podPort is the container port of w that number n or name names (0 when
// none).
func podPort(w *workload, n int32, name string) int32 {
	for _, ct := range w.template.Spec.Containers {
		for _, p := range ct.Ports {
			if (name == "" && p.ContainerPort == n) || (name != "" && p.Name == name) {
				return p.ContainerPort
			}
		}
	}
	return 0
}
