package bench

import (
	"strings"
	"testing"
)

// TestSections checks that -bench.history's and -bench.steady's sections
// go before the notes, replace earlier ones, and do not disturb each other.
func TestSections(t *testing.T) {
	notes := "## Notes\n\n" + notesBegin + "\nhand\n" + notesEnd + "\n"
	report := "# Benchmarks\n\nresults\n\n" + notes
	one := historyBegin + "\nfirst\n" + historyEnd + "\n"
	two := historyBegin + "\nsecond\n" + historyEnd + "\n"
	got := withSection(report, historyBegin, historyEnd, one)
	if want := "# Benchmarks\n\nresults\n\n" + one + "\n" + notes; got != want {
		t.Fatalf("inserted:\n%s\nwant:\n%s", got, want)
	}
	got = withSection(got, historyBegin, historyEnd, two)
	if strings.Contains(got, "first") || !strings.Contains(got, "second") || !strings.HasSuffix(got, notes) {
		t.Fatalf("replaced:\n%s", got)
	}
	if k := keptSection(got, historyBegin, historyEnd); k != two {
		t.Fatalf("kept %q, want %q", k, two)
	}
	steady := steadyBegin + "\nsteady\n" + steadyEnd + "\n"
	got = withSection(got, steadyBegin, steadyEnd, steady)
	if keptSection(got, historyBegin, historyEnd) != two || keptSection(got, steadyBegin, steadyEnd) != steady || !strings.HasSuffix(got, notes) {
		t.Fatalf("both sections:\n%s", got)
	}
}
