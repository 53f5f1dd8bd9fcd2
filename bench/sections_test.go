package bench

import (
	"strings"
	"testing"
)

// TestHistorySection checks that -bench.history's section goes before the
// notes, replaces an earlier one, and is kept by a cluster run's report.
func TestHistorySection(t *testing.T) {
	notes := "## Notes\n\n" + notesBegin + "\nhand\n" + notesEnd + "\n"
	report := "# Benchmarks\n\nresults\n\n" + notes
	one := historyBegin + "\nfirst\n" + historyEnd + "\n"
	two := historyBegin + "\nsecond\n" + historyEnd + "\n"
	got := withHistory(report, one)
	if want := "# Benchmarks\n\nresults\n\n" + one + "\n" + notes; got != want {
		t.Fatalf("inserted:\n%s\nwant:\n%s", got, want)
	}
	got = withHistory(got, two)
	if strings.Contains(got, "first") || !strings.Contains(got, "second") || !strings.HasSuffix(got, notes) {
		t.Fatalf("replaced:\n%s", got)
	}
	if k := keptHistory(got); k != two {
		t.Fatalf("kept %q, want %q", k, two)
	}
}
