package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestAlertRules checks the alert rules with promtool and runs their unit
// tests (monitoring/prometheus/alerts_test.yml), which fire each alert on
// series that should fire it and keep it silent on series that should not.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (%v): run make deps", err)
	}
	dir := filepath.Join("..", "monitoring", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// uncovered returns the alerts of a rules file that the promtool rule
// tests never expect to fire, or never expect silent, as one sentence
// each.
func uncovered(t *testing.T, rules, tests []byte) []string {
	t.Helper()
	var tf struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(tests, &tf); err != nil {
		t.Fatal(err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, e := range tc.AlertRuleTest {
			if len(e.ExpAlerts) > 0 {
				fires[e.Alertname] = true
			} else {
				silent[e.Alertname] = true
			}
		}
	}
	var out []string
	for _, r := range alerts(t, rules) {
		if !fires[r.Alert] {
			out = append(out, r.Alert+": no rule test expects it to fire")
		}
		if !silent[r.Alert] {
			out = append(out, r.Alert+": no rule test expects it silent")
		}
	}
	return out
}

// TestAlertRulesCovered: every alert has a rule test in which it fires
// and one in which it must not, so that a rule that can never fire, or
// always does, is caught. A test file without one alert's cases must be
// reported.
func TestAlertRulesCovered(t *testing.T) {
	rules, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("..", "monitoring", "prometheus", "alerts_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if u := uncovered(t, rules, tests); len(u) > 0 {
		t.Errorf("alerts_test.yml:\n%s", strings.Join(u, "\n"))
	}
	planted := strings.ReplaceAll(string(tests), "alertname: ClickaggNoLeader\n", "alertname: ClickaggSomethingElse\n")
	want := []string{"ClickaggNoLeader: no rule test expects it to fire", "ClickaggNoLeader: no rule test expects it silent"}
	if got := uncovered(t, rules, []byte(planted)); !slices.Equal(got, want) {
		t.Errorf("tests without ClickaggNoLeader: got %q, want %q", got, want)
	}
}

// alertRule is what TestAlertRunbooks reads of an alerting rule.
type alertRule struct {
	Alert       string            `json:"alert"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// alerts returns the alerting rules of a rules file, in order.
func alerts(t *testing.T, rules []byte) []alertRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []alertRule `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(rules, &f); err != nil {
		t.Fatal(err)
	}
	var out []alertRule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

// runbookPrefix is how every runbook_url begins: a path from the
// repository's root (alerts.yml explains why not a full URL).
const runbookPrefix = "docs/runbook.md#"

// alertProblems returns what is wrong with the rules of a rules file for
// an operator paged by them: an alert without for:, without a severity of
// critical or warning, or whose runbook_url is not a heading of runbook.
func alertProblems(t *testing.T, rules []byte, runbook string) []string {
	t.Helper()
	rs := alerts(t, rules)
	if len(rs) == 0 {
		return []string{"no alerts"}
	}
	var problems []string
	for _, r := range rs {
		if r.For == "" {
			problems = append(problems, r.Alert+": no for:")
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			problems = append(problems, fmt.Sprintf("%s: severity %q, want critical or warning", r.Alert, s))
		}
		u := r.Annotations["runbook_url"]
		anchor, ok := strings.CutPrefix(u, runbookPrefix)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: runbook_url %q does not begin with %s", r.Alert, u, runbookPrefix))
		case !hasAnchor(t, runbook, anchor):
			problems = append(problems, fmt.Sprintf("%s: runbook_url %q: no heading with that anchor in %s", r.Alert, u, runbook))
		}
	}
	return problems
}

// TestAlertRunbooks: every alert has a for:, a severity, and a
// runbook_url naming a heading of docs/runbook.md, whose section says what
// the alert means and what to do. Planted mistakes must each be reported,
// so that the check cannot pass by reading nothing.
func TestAlertRunbooks(t *testing.T) {
	rules, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	runbook := filepath.Join("..", "docs", "runbook.md")
	if p := alertProblems(t, rules, runbook); len(p) > 0 {
		t.Errorf("%s:\n%s", rulesPath, strings.Join(p, "\n"))
	}

	bad := strings.NewReplacer(
		"runbook_url: docs/runbook.md#clickaggnoleader", "runbook_url: docs/runbook.md#clickaggnoleaders",
		"runbook_url: docs/runbook.md#clickaggmemberdown", "runbook_url: https://example.com/runbook#clickaggmemberdown",
	).Replace(string(rules))
	bad = strings.Replace(bad, "    for: 5m\n    labels:\n      severity: critical\n    annotations:\n      runbook_url: docs/runbook.md#clickaggingestunavailable",
		"    labels:\n      severity: page\n    annotations:\n      runbook_url: docs/runbook.md#clickaggingestunavailable", 1)
	got := alertProblems(t, []byte(bad), runbook)
	want := []string{
		`ClickaggIngestUnavailable: no for:`,
		`ClickaggIngestUnavailable: severity "page", want critical or warning`,
		`ClickaggMemberDown: runbook_url "https://example.com/runbook#clickaggmemberdown" does not begin with docs/runbook.md#`,
		`ClickaggNoLeader: runbook_url "docs/runbook.md#clickaggnoleaders": no heading with that anchor in ` + runbook,
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("planted mistakes: got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
