package test

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// TestAlertRules checks the alert rules with promtool and runs their unit
// tests (monitoring/prometheus/alerts_test.yml), which fire and clear the
// reconcile alerts over series like the coordinator's.
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
