package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/testserver"
)

// The dashboard and the alert rules that TestMetricsReferencedAreExported
// checks against the binary.
var (
	dashboardPath = filepath.Join("..", "monitoring", "grafana", "clickagg.json")
	rulesPath     = filepath.Join("..", "monitoring", "prometheus", "alerts.yml")
)

// metricName matches the metric names a query can reference that the
// clickagg binary exports: its own, the gRPC server's, the Go runtime's
// and the process's. Prometheus's own (up) are not the binary's.
var metricName = regexp.MustCompile(`\b(clickagg_[a-z0-9_]+|grpc_server_[a-z_]+|go_[a-z0-9_]+|process_[a-z_]+)\b`)

// seriesSuffixes are the suffixes of a histogram's (or summary's) series;
// the exposition names the family without them.
var seriesSuffixes = []string{"_bucket", "_sum", "_count"}

// queryMetrics returns the metric names that the queries reference,
// without histogram series suffixes, sorted and without duplicates.
func queryMetrics(queries []string) []string {
	var names []string
	for _, q := range queries {
		for _, n := range metricName.FindAllString(q, -1) {
			for _, s := range seriesSuffixes {
				if base, ok := strings.CutSuffix(n, s); ok {
					n = base
					break
				}
			}
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// dashboardQueries returns every PromQL expression of a Grafana dashboard:
// the expr of each panel target (rows' nested panels included) and the
// template variables' queries.
func dashboardQueries(data []byte) ([]string, error) {
	var d any
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	var qs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					qs = append(qs, s)
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(d)
	if len(qs) == 0 {
		return nil, fmt.Errorf("dashboard: no expressions")
	}
	return qs, nil
}

// ruleQueries returns the expr of every rule of a Prometheus rules file.
func ruleQueries(data []byte) ([]string, error) {
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert  string `json:"alert"`
				Record string `json:"record"`
				Expr   string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	var qs []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Expr == "" {
				return nil, fmt.Errorf("rules: group %s: rule %s%s has no expr", g.Name, r.Alert, r.Record)
			}
			qs = append(qs, r.Expr)
		}
	}
	if len(qs) == 0 {
		return nil, fmt.Errorf("rules: no rules")
	}
	return qs, nil
}

// exportedMetrics returns the metric families of a text exposition, by
// their # TYPE lines.
func exportedMetrics(r io.Reader) (map[string]bool, error) {
	out := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = true
		}
	}
	return out, sc.Err()
}

// missingMetrics returns the names referenced by the dashboard and the
// rules that the exposition lacks.
func missingMetrics(dashboard, rules []byte, exported map[string]bool) ([]string, error) {
	dq, err := dashboardQueries(dashboard)
	if err != nil {
		return nil, err
	}
	rq, err := ruleQueries(rules)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, n := range queryMetrics(append(dq, rq...)) {
		if !exported[n] {
			missing = append(missing, n)
		}
	}
	return missing, nil
}

// selector matches a metric name with its label matchers, and matcher one
// matcher of them.
var (
	selector = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
	matcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"([^"]*)"`)
)

// scrapeLabels are the labels Prometheus adds at scrape time (the job of
// k8s/base/prometheus.yaml), which no exposition holds.
var scrapeLabels = map[string]bool{"job": true, "instance": true, "role": true, "pod": true}

// exportedLabels returns, for each metric family of a text exposition,
// its series' label pairs as name="value" strings; a histogram's series
// count under the family's name.
func exportedLabels(exposition string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for l := range strings.SplitSeq(exposition, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name, rest, _ := strings.Cut(l, "{")
		labels, _, _ := strings.Cut(rest, "}")
		if strings.Contains(name, " ") { // a series without labels
			continue
		}
		for _, s := range seriesSuffixes {
			if base, ok := strings.CutSuffix(name, s); ok {
				name = base
				break
			}
		}
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for _, m := range matcher.FindAllStringSubmatch(labels, -1) {
			out[name][m[1]+`="`+m[3]+`"`] = true
		}
	}
	return out
}

// missingLabelValues returns the equality matchers (name{label="value"})
// of queries whose metric the exposition exports with no series holding
// that label value: an alert on state="failde" would never fire, and its
// rule test, written with the same typo, would pass. Scrape-time labels
// and values with template variables are not the exposition's.
func missingLabelValues(queries []string, exported map[string]map[string]bool) []string {
	var missing []string
	for _, q := range queries {
		for _, sel := range selector.FindAllStringSubmatch(q, -1) {
			name := sel[1]
			if !metricName.MatchString(name) {
				continue
			}
			if n := queryMetrics([]string{name}); len(n) == 1 {
				name = n[0]
			}
			for _, m := range matcher.FindAllStringSubmatch(sel[2], -1) {
				if m[2] != "=" || scrapeLabels[m[1]] || strings.Contains(m[3], "$") {
					continue
				}
				if pair := m[1] + `="` + m[3] + `"`; !exported[name][pair] {
					missing = append(missing, name+"{"+pair+"}")
				}
			}
		}
	}
	slices.Sort(missing)
	return slices.Compact(missing)
}

func TestMetricsQueryNames(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{`sum(rate(clickagg_router_events_accepted_total{job=~"$job"}[5m]))`, []string{"clickagg_router_events_accepted_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(clickagg_aggregator_freshness_seconds_bucket[5m])))`, []string{"clickagg_aggregator_freshness_seconds"}},
		{`rate(x_sum[1m]) / rate(clickagg_router_log_entry_events_count[1m]) + clickagg_router_log_entry_events_sum`, []string{"clickagg_router_log_entry_events"}},
		{`sum by (grpc_service) (rate(grpc_server_handled_total{grpc_code!="OK"}[5m])) and up{job="clickagg"} == 0`, []string{"grpc_server_handled_total"}},
		{`go_goroutines + process_resident_memory_bytes`, []string{"go_goroutines", "process_resident_memory_bytes"}},
	} {
		t.Run(tc.query, func(t *testing.T) {
			if got := queryMetrics([]string{tc.query}); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestMetricsReferencedAreExported starts `clickagg dev` with synthetic
// clicks, scrapes its /metrics (every role runs in that one process) and
// checks that every metric the Grafana dashboard and the alert rules
// reference is exported. A planted name must be reported missing, so the
// check cannot pass by matching nothing.
func TestMetricsReferencedAreExported(t *testing.T) {
	dashboard, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", port)
	dir := t.TempDir()
	startProc(t, dir, "dev", "dev", "-data-dir="+filepath.Join(dir, "data"), "-view=off", "-http.addr="+httpAddr, "-loadgen.rate=200")

	scrape := func() (map[string]bool, map[string]map[string]bool, error) {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, nil, fmt.Errorf("GET /metrics: %s", resp.Status)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, nil, err
		}
		names, err := exportedMetrics(bytes.NewReader(body))
		return names, exportedLabels(string(body)), err
	}
	dq, err := dashboardQueries(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	rq, err := ruleQueries(rules)
	if err != nil {
		t.Fatal(err)
	}
	var exported map[string]bool
	var labels map[string]map[string]bool
	// Some series appear only once traffic flows, partitions are held and
	// the coordinator leads.
	testserver.Eventually(t, time.Minute, func() error {
		var err error
		if exported, labels, err = scrape(); err != nil {
			return err
		}
		missing, err := missingMetrics(dashboard, rules, exported)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) > 0 {
			return fmt.Errorf("referenced by %s or %s but not exported: %q", dashboardPath, rulesPath, missing)
		}
		if missing := missingLabelValues(append(dq, rq...), labels); len(missing) > 0 {
			return fmt.Errorf("label values matched by %s or %s that no exported series has: %q", dashboardPath, rulesPath, missing)
		}
		return nil
	})
	t.Logf("%d metrics referenced by %d dashboard and %d rule expressions, all exported with the label values matched", len(queryMetrics(append(dq, rq...))), len(dq), len(rq))

	// A label value that no series has is reported; the same selector with
	// a value that exists, a scrape-time label or a regexp matcher is not.
	plantedRule := `clickagg_aggregator_partitions{job="clickagg", state="failde"} + clickagg_aggregator_partitions{state="failed", pod="x", role=~"y"}`
	if got, want := missingLabelValues([]string{plantedRule}, labels), []string{`clickagg_aggregator_partitions{state="failde"}`}; !slices.Equal(got, want) {
		t.Errorf("label values of %s: missing = %q, want %q", plantedRule, got, want)
	}

	// The negative case: the same check on a dashboard with one more
	// expression that names a metric nobody exports.
	var d map[string]any
	if err := json.Unmarshal(dashboard, &d); err != nil {
		t.Fatal(err)
	}
	const planted = "clickagg_router_no_such_metric_total"
	d["panels"] = append(d["panels"].([]any), map[string]any{
		"title":   "planted",
		"targets": []any{map[string]any{"expr": "sum(rate(" + planted + "[5m]))"}},
	})
	bad, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	missing, err := missingMetrics(bad, rules, exported)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(missing, []string{planted}) {
		t.Errorf("check of a dashboard with a planted metric: missing = %q, want [%s]", missing, planted)
	}
}
