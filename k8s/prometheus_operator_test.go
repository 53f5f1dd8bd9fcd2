package k8s_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The alert rules, the one source of the PrometheusRule, and the file
// generated from them.
var (
	alertsPath         = filepath.Join("..", "monitoring", "prometheus", "alerts.yml")
	prometheusRulePath = filepath.Join("components", "prometheus-operator", "prometheusrule.yaml")
	update             = flag.Bool("update", false, "write "+prometheusRulePath+" from "+alertsPath)
)

// podMonitor is a Prometheus Operator PodMonitor, with the fields the
// manifests use.
type podMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel            string               `json:"jobLabel"`
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port      string `json:"port"`
			Path      string `json:"path"`
			Scheme    string `json:"scheme"`
			TLSConfig *struct {
				CA struct {
					Secret *struct {
						Name string `json:"name"`
						Key  string `json:"key"`
					} `json:"secret"`
				} `json:"ca"`
				ServerName string `json:"serverName"`
			} `json:"tlsConfig"`
			Relabelings []struct {
				SourceLabels []string `json:"sourceLabels"`
				Action       string   `json:"action"`
				Regex        string   `json:"regex"`
				TargetLabel  string   `json:"targetLabel"`
			} `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// prometheusRule is a Prometheus Operator PrometheusRule; its groups are
// compared whole with the rules file's.
type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []any `json:"groups"`
	} `json:"spec"`
}

// alertGroups returns the groups of the alert rules file, as JSON
// values.
func alertGroups() ([]any, error) {
	b, err := os.ReadFile(alertsPath)
	if err != nil {
		return nil, err
	}
	var f struct {
		Groups []any `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, err
	}
	return f.Groups, nil
}

// prometheusOperator checks the Prometheus Operator objects, when the
// build has any: one PodMonitor that scrapes every clickagg role's pods
// where their prometheus.io annotations say, labels them as the alert
// rules and dashboard expect (job clickagg, role, pod), and speaks HTTPS
// with the cluster's CA to pods that serve it; and a PrometheusRule whose
// groups are those of monitoring/prometheus/alerts.yml.
func (c *checker) prometheusOperator() {
	if len(c.m.podMonitors)+len(c.m.prometheusRules) == 0 {
		return
	}
	if len(c.m.podMonitors) != 1 || len(c.m.prometheusRules) != 1 {
		c.addf("%d PodMonitors and %d PrometheusRules, want one of each: the rules need the labels the PodMonitor gives", len(c.m.podMonitors), len(c.m.prometheusRules))
	}
	for _, pm := range c.m.podMonitors {
		c.podMonitor(pm)
	}
	want, err := alertGroups()
	if err != nil {
		c.addf("%s: %v", alertsPath, err)
		return
	}
	for _, pr := range c.m.prometheusRules {
		// Compared as JSON, the form the API server stores.
		got, _ := json.Marshal(pr.Spec.Groups)
		wantJSON, _ := json.Marshal(want)
		if !bytes.Equal(got, wantJSON) {
			c.addf("PrometheusRule %s: spec.groups differ from %s (run go test ./ -run TestPrometheusRuleFile -update in k8s/)", pr.Name, alertsPath)
		}
	}
}

func (c *checker) podMonitor(pm *podMonitor) {
	what := "PodMonitor " + pm.Name
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		c.addf("%s: selector: %v", what, err)
		return
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		c.addf("%s: %d podMetricsEndpoints, want 1", what, len(pm.Spec.PodMetricsEndpoints))
		return
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	relabels := map[string]bool{}
	for _, r := range ep.Relabelings {
		switch {
		case r.Action == "keep" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_pod_annotation_prometheus_io_scrape"}) && r.Regex == "true":
			relabels["keep"] = true
		case r.TargetLabel == "role" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_pod_label_app_kubernetes_io_component"}):
			relabels["role"] = true
		case r.TargetLabel == "pod" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_pod_name"}):
			relabels["pod"] = true
		}
	}
	for _, l := range []string{"keep", "role", "pod"} {
		if !relabels[l] {
			c.addf("%s: no relabeling %s as in base/prometheus.yaml (the rules and the dashboard use the role and pod labels; only annotated pods are scraped)", what, l)
		}
	}
	serverName := ""
	if cm := c.m.configMaps["clickagg"]; cm != nil {
		serverName = cm.Data[envName("tls.server-name")]
	}
	scraped := map[string]bool{}
	for _, w := range c.m.workloads {
		ann := w.template.Annotations
		if w.namespace != pm.Namespace || ann["prometheus.io/scrape"] != "true" {
			continue
		}
		role := w.template.Labels["app.kubernetes.io/component"]
		if !slices.Contains(roles, role) {
			continue
		}
		if !sel.Matches(labels.Set(w.template.Labels)) {
			c.addf("%s: selector does not select the pods of %s", what, w)
			continue
		}
		scraped[role] = true
		if job := w.template.Labels[pm.Spec.JobLabel]; job != "clickagg" {
			c.addf("%s: jobLabel %q gives the pods of %s job %q, the alert rules want job \"clickagg\"", what, pm.Spec.JobLabel, w, job)
		}
		port := int32(0)
		for _, ct := range w.template.Spec.Containers {
			for _, p := range ct.Ports {
				if p.Name == ep.Port {
					port = p.ContainerPort
				}
			}
		}
		if want := ann["prometheus.io/port"]; port == 0 || want != "" && want != strconv.Itoa(int(port)) {
			c.addf("%s: port %q is %d on the pods of %s, they serve /metrics on prometheus.io/port %s", what, ep.Port, port, w, want)
		}
		if want := ann["prometheus.io/path"]; ep.Path != want {
			c.addf("%s: path %q, the pods of %s serve /metrics at prometheus.io/path %q", what, ep.Path, w, want)
		}
		scheme := ep.Scheme
		if scheme == "" {
			scheme = "http"
		}
		want := ann["prometheus.io/scheme"]
		if want == "" {
			want = "http"
		}
		if scheme != want {
			c.addf("%s: scheme %s, the pods of %s serve %s", what, scheme, w, want)
		}
		if want == "https" {
			if t := ep.TLSConfig; t == nil || t.CA.Secret == nil || t.CA.Secret.Name == "" || t.ServerName != serverName {
				c.addf("%s: want a tlsConfig with the cluster's CA from a Secret and serverName %q (-tls.server-name), the pods of %s serve https", what, serverName, w)
			}
		}
	}
	for _, r := range roles {
		if !scraped[r] {
			c.addf("%s: scrapes no %s pods", what, r)
		}
	}
}

// prometheusRuleFile returns prometheusrule.yaml: the rules file's text,
// comments included, as the spec of a PrometheusRule.
func prometheusRuleFile(alerts []byte) []byte {
	var b bytes.Buffer
	b.WriteString(`# Generated from monitoring/prometheus/alerts.yml, whose text follows
# under spec: do not edit; edit that file and run
# ` + "`go test ./ -run TestPrometheusRuleFile -update`" + ` in k8s/.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: clickagg
  labels:
    app.kubernetes.io/name: clickagg
spec:
`)
	for l := range strings.SplitSeq(strings.TrimSuffix(string(alerts), "\n"), "\n") {
		if l != "" {
			b.WriteString("  " + l)
		}
		b.WriteString("\n")
	}
	return b.Bytes()
}

// TestPrometheusRuleFile: the PrometheusRule is the alert rules file,
// byte for byte, so there is one source of truth; -update writes it.
func TestPrometheusRuleFile(t *testing.T) {
	alerts, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	want := prometheusRuleFile(alerts)
	if *update {
		if err := os.WriteFile(prometheusRulePath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(prometheusRulePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not generated from %s: run go test ./ -run TestPrometheusRuleFile -update in k8s/", prometheusRulePath, alertsPath)
	}
}

// TestPrometheusOperatorOnDev builds the component on the dev overlay,
// whose pods serve plain HTTP, as a user's overlay would.
func TestPrometheusOperatorOnDev(t *testing.T) {
	root := t.TempDir()
	if err := copyTree(".", root); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "examples", "prometheus-operator-dev")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	k := "namespace: clickagg\nresources:\n- ../../overlays/dev\ncomponents:\n- ../../components/prometheus-operator\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	m, problems := load(filesys.MakeFsOnDisk(), dir)
	if m != nil {
		problems = append(problems, check(m)...)
		if len(m.podMonitors) != 1 || len(m.prometheusRules) != 1 {
			problems = append(problems, "no PodMonitor or no PrometheusRule")
		}
	}
	for _, p := range problems {
		t.Error(p)
	}
}
