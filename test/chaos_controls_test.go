package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// negativeControl is a chaos run against the chaosbreak build with one
// switch on: the smallest workload and schedule that make the harness
// catch it, and the evidence that it caught that switch and not
// something else.
type negativeControl struct {
	// name is the switch, CLICKAGG_BREAK's value.
	name string
	// args are the chaos run's flags besides -dir.
	args []string
	// injected, when set, must match a line of the run's output: the
	// fault that exposes the switch happened.
	injected *regexp.Regexp
	// evidence is nil when the summary shows what the switch breaks; else
	// why it does not.
	evidence func(chaosVerdict) string
}

// chaosVerdict is what a failed chaos run's summary says.
type chaosVerdict struct {
	checked, wrong int
	// counts are the wrong counts' (phase, got, want); others the wrong
	// answers that are not counts (top lists, ingest answers), by phase.
	counts []wrongCount
	others map[string]int
	errors []string
}

type wrongCount struct {
	phase     string
	got, want int64
	// complete is the answer's claim that its minutes were complete.
	complete bool
}

// below and above count the wrong counts under and over the truth.
func (v chaosVerdict) below() (n int) {
	for _, c := range v.counts {
		if c.got < c.want {
			n++
		}
	}
	return n
}

func (v chaosVerdict) above() (n int) {
	for _, c := range v.counts {
		if c.got > c.want {
			n++
		}
	}
	return n
}

var (
	chaosWrongCount = regexp.MustCompile(`^WRONG ([a-z-]+): .* = (-?\d+) complete=(true|false), want (-?\d+) complete$`)
	chaosWrongOther = regexp.MustCompile(`^WRONG ([a-z-]+): `)
)

// parseChaosVerdict reads the summary of a run that must have failed.
func parseChaosVerdict(t *testing.T, lines []string) chaosVerdict {
	t.Helper()
	v := chaosVerdict{checked: -1, others: map[string]int{}}
	fail := false
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if m := chaosAnswers.FindStringSubmatch(l); m != nil {
			v.checked, _ = strconv.Atoi(m[1])
			v.wrong, _ = strconv.Atoi(m[3])
		}
		if m := chaosWrongCount.FindStringSubmatch(l); m != nil {
			got, _ := strconv.ParseInt(m[2], 10, 64)
			want, _ := strconv.ParseInt(m[4], 10, 64)
			v.counts = append(v.counts, wrongCount{m[1], got, want, m[3] == "true"})
		} else if m := chaosWrongOther.FindStringSubmatch(l); m != nil {
			v.others[m[1]]++
		}
		if e, ok := strings.CutPrefix(l, "ERROR "); ok {
			v.errors = append(v.errors, e)
		}
		fail = fail || l == "FAIL"
	}
	if !fail {
		t.Errorf("the summary does not say FAIL")
	}
	if v.checked < 0 {
		t.Errorf("no summary line %q", "answers checked ...")
	}
	return v
}

// TestChaosNegativeControls runs the chaos harness against the chaosbreak
// build (breakage) once per switch and requires each run to fail, with
// the evidence of what that switch breaks: a check that cannot fail
// proves nothing (CONTRIBUTING.md, "Negative controls").
func TestChaosNegativeControls(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end chaos runs of a broken build")
	}
	broken := filepath.Join(filepath.Dir(binary), "clickagg-broken")
	build := exec.Command("go", "build", "-tags", "chaosbreak", "-o", broken, "../cmd/clickagg")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags chaosbreak: %v\n%s", err, out)
	}
	for _, nc := range negativeControls {
		t.Run(nc.name, func(t *testing.T) {
			dir := t.TempDir()
			cluster := filepath.Join(dir, "cluster")
			args := append([]string{"chaos", "run", "-dir=" + cluster, "-binary=" + broken, "-env=CLICKAGG_BREAK=" + nc.name}, nc.args...)
			began := time.Now()
			// The harness is the release binary; the cluster it starts runs
			// the broken one.
			lines, err := runChaos(t, filepath.Join(dir, "chaos.out"), args...)
			t.Logf("chaos run with %s took %v", nc.name, time.Since(began).Round(time.Second))
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("clickagg chaos run with CLICKAGG_BREAK=%s: %v, want exit status 1", nc.name, err)
			}
			brokenOnPurpose(t, cluster, nc.name)
			if nc.injected != nil && !slices.ContainsFunc(lines, nc.injected.MatchString) {
				t.Errorf("no output line matches %q: the fault that exposes %s did not happen", nc.injected, nc.name)
			}
			v := parseChaosVerdict(t, lines)
			if why := nc.evidence(v); why != "" {
				t.Errorf("CLICKAGG_BREAK=%s: the run failed, but not for what the switch breaks: %s (%d wrong of %d checked; errors %q)",
					nc.name, why, v.wrong, v.checked, v.errors)
			}
		})
	}
}

// brokenOnPurpose requires the line package breakage prints at startup
// in the logs of the cluster's processes: the switch was on in them, not
// only in the harness.
func brokenOnPurpose(t *testing.T, cluster, name string) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(cluster, "*.log"))
	want := "CLICKAGG_BREAK=" + name + ": this process is broken on purpose"
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err == nil && strings.Contains(string(b), want) {
			return
		}
	}
	t.Errorf("no process log in %s says %q", cluster, want)
}

// negativeControls are the switches and how the harness catches each
// (CONTRIBUTING.md, "Negative controls"). Every run is as small as still
// makes it fail every time: a few thousand clicks, the fewest faults of
// the kinds that expose the switch, seeds whose schedules hit what must
// be hit (printed first in each run's output).
//
// offset-apart and fencing-off have no run here yet; their package tests
// (make test-chaosbreak) show what each breaks. offset-apart loses clicks
// only when they are applied while the snapshot before a SIGKILL is
// being saved: two kills under 2,000 clicks/s (seed 13) lost 112–119
// counts in three runs and none in a fourth, too unreliable for CI.
// fencing-off needs a restore of the woken ex-owner's snapshot before the
// new owner rewrites it, a fault the schedule does not place
// (CONTRIBUTING.md, Negative controls).
var negativeControls = []negativeControl{
	{
		// Any duplicate exposes it: the workload re-sends 4% of its
		// clicks. No fault.
		name: "dedup-off",
		args: []string{"-seed=18", "-events=2000", "-faults=0", "-rate=1000"},
		evidence: func(v chaosVerdict) string {
			if v.above() == 0 {
				return "no count above the truth"
			}
			return ""
		},
	},
	{
		// The verify-under-faults phase kills an aggregator while it
		// queries the final data: a queryd that leaves out the owners it
		// could not reach answers below the truth, or hedged as
		// incomplete, where it should have failed. No fault before it.
		name: "partial-queryd",
		args: []string{"-seed=18", "-events=2000", "-faults=0", "-rate=1000"},
		evidence: func(v chaosVerdict) string {
			n := v.others["verify"]
			for _, c := range v.counts {
				if c.phase == "verify" && (c.got < c.want || !c.complete) {
					n++
				}
			}
			if n == 0 {
				return "no answer wrong in the verify-under-faults phase"
			}
			if v.above() > 0 {
				return "counts above the truth: that is not a partial answer"
			}
			return ""
		},
	},
	{
		// The Redis primary killed and failed over while clicks come in:
		// the acknowledged clicks whose append failed are lost, and the
		// clients, told they were accepted, never send them again.
		name:     "ack-before-redis",
		args:     []string{"-seed=18", "-kinds=redis-failover", "-faults=1", "-events=10000", "-rate=5000"},
		injected: regexp.MustCompile(`healed redis-failover \[primary\]`),
		evidence: lostClicks,
	},
}

// lostClicks is the evidence of a switch that loses acknowledged clicks:
// final counts below the truth, none above.
func lostClicks(v chaosVerdict) string {
	if v.below() == 0 {
		return "no count below the truth"
	}
	if v.above() > 0 {
		return "counts above the truth too"
	}
	return ""
}
