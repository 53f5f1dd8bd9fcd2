package test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/clickagg/clickagg/tlsconf/tlstest"
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

	checks := []readmeCheck{
		{contains: []string{"clickagg.v1.IngestService", "clickagg.v1.QueryService", "clickagg.v1.CoordinatorService", "grpc.health.v1.Health", "grpc.reflection"}},
		{contains: []string{`"status": "SERVING"`}},
		{contains: []string{`"accepted": "1"`}},
		{contains: []string{`"adId": "ad-readme"`, `"count": "1"`}, eventual: true},
		{contains: []string{`"adId": "ad-readme"`}, eventual: true},
		{contains: []string{`"role": "aggregator"`, `"role": "router"`, `"role": "queryd"`, `"role": "coordinator"`}},
		{contains: []string{`"state": "serving"`}, eventual: true},
	}
	runReadmeBlock(t, "<!-- readme-test: grpcurl -->", root, checks, func(line string) string {
		return strings.ReplaceAll(line, "localhost:9090", dev.addr)
	})
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

// TestDocLinks: the documentation stands on its own. Every relative link in
// README.md and docs/*.md names a file of the repository (and a heading
// of it, with #anchor), and no path reaches outside the repository, in a
// link or in text: README once sent readers to ../shared/DESIGN.md, which
// only its authors had.
func TestDocLinks(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files := append([]string{filepath.Join(root, "README.md")}, docs...)
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	outside := regexp.MustCompile(`(^|[\s(\x60"'])(\.\./[^\s)\x60"']*)`)
	for _, file := range files {
		rel, _ := filepath.Rel(root, file)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range outside.FindAllStringSubmatch(string(b), -1) {
			p := filepath.Join(filepath.Dir(file), m[2])
			if r, err := filepath.Rel(root, p); err != nil || strings.HasPrefix(r, "..") {
				t.Errorf("%s: %q points outside the repository", rel, m[2])
			}
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), path)
				if r, err := filepath.Rel(root, dest); err != nil || strings.HasPrefix(r, "..") {
					t.Errorf("%s: link %q points outside the repository", rel, target)
					continue
				}
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: link %q: %v", rel, target, err)
					continue
				}
			}
			if anchor != "" && !hasAnchor(t, dest, anchor) {
				t.Errorf("%s: link %q: no heading with anchor #%s", rel, target, anchor)
			}
		}
	}
}

// hasAnchor reports whether markdown file has a heading whose GitHub anchor
// is anchor: lower case, spaces as dashes, punctuation other than - and _
// dropped.
func hasAnchor(t *testing.T, file, anchor string) bool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		title, ok := strings.CutPrefix(strings.TrimLeft(l, "#"), " ")
		if !ok || !strings.HasPrefix(l, "#") {
			continue
		}
		var slug strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(title)) {
			switch {
			case r == ' ':
				slug.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				slug.WriteRune(r)
			}
		}
		if slug.String() == anchor {
			return true
		}
	}
	return false
}

// TestReadmeGrpcurlAuthCommands runs the README's grpcurl commands for a
// cluster with TLS and authorization, exactly as written but for the
// addresses, from a directory holding the files they name.
func TestReadmeGrpcurlAuthCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	root := buildGrpcurl(t)
	c := newTestCluster(t, clusterSpec{partitions: 4, coordinators: 1, routers: 1, aggregators: 1, tls: true, auth: true})
	waitCaughtUp(t, c.coordinatorClient(), 4, 2*time.Minute)
	dir := c.tlsDir("readme")
	op := c.ca.Issue(t, tlstest.Options{CommonName: "operator"})
	for name, data := range map[string][]byte{"ca.crt": c.ca.CertPEM, "operator.crt": op.CertPEM, "operator.key": op.KeyPEM,
		"shipper.token": []byte(authTokens["shipper"] + "\n"), "billing.token": []byte(authTokens["billing"] + "\n")} {
		tlstest.WriteFile(t, filepath.Join(dir, name), data)
	}
	if err := os.Symlink(filepath.Join(root, "bin"), filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	addrs := strings.NewReplacer("router:9090", c.routers[0].addr, "queryd:9090", c.queryd.addr, "coordinator:9090", c.coordinators[0].addr)
	checks := []readmeCheck{
		{contains: []string{`"status": "SERVING"`}},
		{contains: []string{`"accepted": "1"`}},
		{contains: []string{`"adId": "ad-readme"`, `"count": "1"`}, eventual: true},
		{contains: []string{`"role": "aggregator"`, `"role": "router"`, `"role": "queryd"`, `"role": "coordinator"`}},
		{contains: []string{"Code: PermissionDenied", `needs permission "ingest"; token:billing holds query`}, refused: true},
		{contains: []string{"Code: Unauthenticated", "no client certificate or bearer token"}, refused: true},
	}
	runReadmeBlock(t, "<!-- readme-test: grpcurl-auth -->", dir, checks, addrs.Replace)
}

// readmeCheck is what one README command must print: every string of
// contains; refused, that it fails; eventual, that it may take retries
// (for 30s) until the cluster has caught up.
type readmeCheck struct {
	contains []string
	refused  bool
	eventual bool
}

// runReadmeBlock runs the commands of the README block after marker, in
// dir and with addresses rewritten by addr, one check each.
func runReadmeBlock(t *testing.T, marker, dir string, checks []readmeCheck, addr func(string) string) {
	t.Helper()
	cmds := readmeBlock(t, marker)
	if len(cmds) != len(checks) {
		t.Fatalf("README block has %d commands, the test checks %d", len(cmds), len(checks))
	}
	for i, line := range cmds {
		deadline := time.Now().Add(30 * time.Second)
		for {
			cmd := exec.Command("bash", "-c", addr(line))
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			missing := ""
			for _, want := range checks[i].contains {
				if !strings.Contains(string(out), want) {
					missing = want
					break
				}
			}
			if (err != nil) == checks[i].refused && missing == "" {
				t.Logf("%s\n%s", line, firstLines(string(out), 6))
				break
			}
			if !checks[i].eventual || time.Now().After(deadline) {
				t.Fatalf("%s\nerror: %v (refusal expected: %v), missing %q in output:\n%s", line, err, checks[i].refused, missing, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
