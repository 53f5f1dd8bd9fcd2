package test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// chaosShortArgs is the short chaos run: a million clicks while every
// kind of fault plays once, on the default cluster (2 routers, 3
// aggregators, 2 coordinators, 2 queryds, 3 etcd members, a Redis
// primary and replica under 3 sentinels, the shipper). The seed is fixed:
// a failure replays with the command its summary prints.
var chaosShortArgs = []string{"-seed=20261208", "-events=1000000", "-faults=15", "-kinds=all", "-rate=8000"}

// TestChaosShort runs `clickagg chaos run` through the built binary and
// requires a passing summary: 0 wrong answers of many checked, and every
// kind of the schedule injected and recovered from.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end chaos run of a million clicks")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "chaos.out")
	args := append([]string{"chaos", "run", "-dir=" + filepath.Join(dir, "cluster"), "-keep"}, chaosShortArgs...)
	began := time.Now()
	summary, err := runChaos(t, out, args...)
	t.Logf("chaos run took %v", time.Since(began).Round(time.Second))
	if err != nil {
		t.Fatalf("clickagg chaos run: %v (output in %s)", err, out)
	}
	checkChaosSummary(t, summary, 15, 15)
}

// runChaos runs the binary with args, its output tee'd to the test log
// and the file out, and returns the output's lines.
func runChaos(t *testing.T, out string, args ...string) ([]string, error) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(binary, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, f
	var lines []string
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(f, sc.Text())
			t.Log(sc.Text())
			lines = append(lines, sc.Text())
		}
	})
	err = cmd.Run()
	pw.Close()
	wg.Wait()
	return lines, err
}

var (
	chaosFaultRow = regexp.MustCompile(`^([a-z-]+)\s+(\d+)\s+(\S+)\s+(\S+)$`)
	chaosAnswers  = regexp.MustCompile(`^answers checked (\d+), failed \(unavailable, not wrong\) (\d+), wrong (\d+)$`)
)

// checkChaosSummary requires a PASS with 0 wrong answers of at least
// 10,000 checked, and at least minFaults faults of at least minKinds kinds.
func checkChaosSummary(t *testing.T, lines []string, minFaults, minKinds int) {
	t.Helper()
	faults, kinds, pass := 0, 0, false
	checked := -1
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if m := chaosFaultRow.FindStringSubmatch(l); m != nil && m[1] != "fault" {
			n, _ := strconv.Atoi(m[2])
			faults += n
			kinds++
			if m[3] == "-" {
				t.Errorf("fault kind %s: no recovery measured", m[1])
			}
		}
		if m := chaosAnswers.FindStringSubmatch(l); m != nil {
			checked, _ = strconv.Atoi(m[1])
			if m[3] != "0" {
				t.Errorf("%s wrong answers", m[3])
			}
		}
		pass = pass || l == "PASS"
	}
	if !pass {
		t.Errorf("the summary does not say PASS")
	}
	if checked < 10_000 {
		t.Errorf("%d answers checked, want at least 10000", checked)
	}
	if faults < minFaults || kinds < minKinds {
		t.Errorf("%d faults of %d kinds happened, want at least %d of %d", faults, kinds, minFaults, minKinds)
	}
}
