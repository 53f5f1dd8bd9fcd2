package breakage

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestReleaseBinary builds clickagg as released (default tags) and with
// -tags chaosbreak, and checks that only the second reads CLICKAGG_BREAK
// or holds a broken branch, that the tag adds no dependency, and that the
// broken build refuses an unknown switch at startup.
func TestReleaseBinary(t *testing.T) {
	// The tag changes which files of this package build, and nothing else.
	if files := goList(t, "", "-f", "{{.GoFiles}}", "."); !strings.Contains(files, "off.go") || strings.Contains(files, "on.go") {
		t.Errorf("default build compiles %s, want off.go and not on.go", files)
	}
	if files := goList(t, "chaosbreak", "-f", "{{.GoFiles}}", "."); strings.Contains(files, "off.go") || !strings.Contains(files, "on.go") {
		t.Errorf("chaosbreak build compiles %s, want on.go and not off.go", files)
	}
	release, broken := goList(t, "", "-deps", "../cmd/clickagg"), goList(t, "chaosbreak", "-deps", "../cmd/clickagg")
	if release != broken {
		t.Errorf("-tags chaosbreak changes the dependencies of cmd/clickagg:\n%s\nvs\n%s", release, broken)
	}

	dir := t.TempDir()
	rel, brk := filepath.Join(dir, "clickagg"), filepath.Join(dir, "clickagg-broken")
	build(t, rel, "")
	build(t, brk, "chaosbreak")
	// Functions only broken branches call (small ones may be inlined,
	// and have no symbol): if the release build linked one, its branch
	// was not compiled away. And the text only they hold.
	brokenOnly := []string{"snapshot.unfenced", "breakage.Parse"}
	brokenText := []string{envName, "snapshot: unfenced: not a fenced script", "this process is broken on purpose"}
	for _, c := range []struct {
		bin  string
		want bool
	}{{rel, false}, {brk, true}} {
		b, err := os.ReadFile(c.bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, text := range brokenText {
			if got := bytes.Contains(b, []byte(text)); got != c.want {
				t.Errorf("%s holds %q: %v, want %v", filepath.Base(c.bin), text, got, c.want)
			}
		}
		out, err := exec.Command("go", "tool", "nm", c.bin).Output()
		if err != nil {
			t.Fatalf("go tool nm %s: %v", c.bin, err)
		}
		for _, fn := range brokenOnly {
			if got := bytes.Contains(out, []byte(fn)); got != c.want {
				t.Errorf("%s links %s: %v, want %v", filepath.Base(c.bin), fn, got, c.want)
			}
		}
	}

	// An unknown switch stops the broken build before it does anything;
	// the release build does not look.
	cmd := exec.Command(brk, "-version")
	cmd.Env = append(os.Environ(), envName+"=dedup-off,fencing-of")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), `unknown switch "fencing-of"; valid: dedup-off, offset-apart, fencing-off, ack-before-redis, partial-queryd`) {
		t.Errorf("broken build with a misspelt switch: %v, %q; want exit status 2 naming it and the valid ones", err, out)
	}
	cmd = exec.Command(rel, "-version")
	cmd.Env = append(os.Environ(), envName+"=fencing-of")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("release build with %s set: %v, %q", envName, err, out)
	}
}

// envName is the variable the chaosbreak build reads (EnvVar there).
const envName = "CLICKAGG_BREAK"

func goList(t *testing.T, tags string, args ...string) string {
	t.Helper()
	args = append([]string{"list"}, args...)
	if tags != "" {
		args = slices.Insert(args, 1, "-tags", tags)
	}
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

func build(t *testing.T, out, tags string) {
	t.Helper()
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command("go", append(args, "../cmd/clickagg")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, b)
	}
}
