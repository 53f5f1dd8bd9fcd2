package test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readmeBlock returns the lines of the shell block that follows marker in
// README.md.
func readmeBlock(t *testing.T, marker string) []string {
	t.Helper()
	f, err := os.Open("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	state := 0 // 0: looking for marker, 1: for the fence, 2: in the block
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case state == 0 && strings.TrimSpace(l) == marker:
			state = 1
		case state == 1 && strings.HasPrefix(l, "```"):
			state = 2
		case state == 2 && strings.HasPrefix(l, "```"):
			return lines
		case state == 2 && strings.TrimSpace(l) != "":
			lines = append(lines, l)
		}
	}
	t.Fatalf("README.md has no complete block after %q", marker)
	return nil
}

// TestReadmeGrpcurlCommands runs the README's grpcurl commands, exactly as
// written but for the address, against `clickagg dev`.
func TestReadmeGrpcurlCommands(t *testing.T) {
	root := buildGrpcurl(t)
	dir := t.TempDir()
	dev := startProc(t, dir, "dev", "dev", "-data-dir="+filepath.Join(dir, "data"), "-view=off", "-no-loadgen")

	checks := []struct {
		contains []string
		eventual bool
	}{
		{contains: []string{"clickagg.v1.IngestService", "clickagg.v1.QueryService", "clickagg.v1.CoordinatorService", "grpc.health.v1.Health", "grpc.reflection"}},
		{contains: []string{`"status": "SERVING"`}},
		{contains: []string{`"accepted": "1"`}},
		{contains: []string{`"adId": "ad-readme"`, `"count": "1"`}, eventual: true},
		{contains: []string{`"adId": "ad-readme"`}, eventual: true},
		{contains: []string{`"role": "aggregator"`, `"role": "router"`, `"role": "queryd"`, `"role": "coordinator"`}},
		{contains: []string{`"state": "serving"`}, eventual: true},
	}
	cmds := readmeBlock(t, "<!-- readme-test: grpcurl -->")
	if len(cmds) != len(checks) {
		t.Fatalf("README block has %d commands, the test checks %d", len(cmds), len(checks))
	}
	for i, line := range cmds {
		cmdline := strings.ReplaceAll(line, "localhost:9090", dev.addr)
		deadline := time.Now().Add(30 * time.Second)
		for {
			c := exec.Command("bash", "-c", cmdline)
			c.Dir = root
			out, err := c.CombinedOutput()
			missing := ""
			for _, want := range checks[i].contains {
				if !strings.Contains(string(out), want) {
					missing = want
					break
				}
			}
			if err == nil && missing == "" {
				t.Logf("%s\n%s", line, firstLines(string(out), 6))
				break
			}
			if !checks[i].eventual || time.Now().After(deadline) {
				t.Fatalf("%s\nerror: %v, missing %q in output:\n%s", line, err, missing, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	fmt.Fprintln(os.Stderr, "README grpcurl commands ok")
}

// buildGrpcurl builds bin/grpcurl from the pinned tools module unless it
// is there, and returns the repository's root.
func buildGrpcurl(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	grpcurl := filepath.Join(root, "bin", "grpcurl")
	if _, err := os.Stat(grpcurl); err != nil {
		build := exec.Command("go", "build", "-o", grpcurl, "github.com/fullstorydev/grpcurl/cmd/grpcurl")
		build.Dir = filepath.Join(root, "tools")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build grpcurl: %v\n%s", err, out)
		}
	}
	return root
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines[n] = "..."
	}
	return strings.Join(lines, "\n")
}
