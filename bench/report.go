package bench

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Unit is how a figure is measured and printed.
type Unit int

// Units of figures.
const (
	UnitRate    Unit = iota // per second
	UnitSeconds             // a duration, in seconds
	UnitBytes               // bytes
	UnitCount               // a number of things
	UnitRatio               // a dimensionless factor
	UnitYesNo               // 1 yes, 0 no
)

// Op is how a figure is compared with its target.
type Op int

// Comparisons.
const (
	AtLeast Op = iota
	AtMost
)

// Target is the figure the issue asks for.
type Target struct {
	Op    Op
	Value float64
}

// Row is one figure of the report. NaN values are "not measured".
type Row struct {
	// ID names the row for programs (tests, diffs of reports).
	ID    string
	Label string
	Unit  Unit
	Value float64
	// Lower is true when smaller values are better (latency, bytes).
	Lower  bool
	Target *Target
	// Naive and Inproc are the same figure for the two baselines, NaN when
	// the baseline has no such figure.
	Naive, Inproc float64
	Note          string
}

// Met reports whether the row has a target and meets it.
func (r Row) Met() bool {
	if r.Target == nil || math.IsNaN(r.Value) {
		return false
	}
	if r.Target.Op == AtLeast {
		return r.Value >= r.Target.Value
	}
	return r.Value <= r.Target.Value
}

// Verdict says whether the target is met, and by how much it is missed.
func (r Row) Verdict() string {
	switch {
	case r.Target == nil:
		return ""
	case math.IsNaN(r.Value):
		return "not measured"
	case r.Met():
		return "met"
	case r.Unit == UnitYesNo:
		return "missed"
	case r.Target.Op == AtLeast:
		f := "missed: " + formatValue(r.Unit, r.Target.Value-r.Value) + " short"
		if r.Value > 0 {
			f += fmt.Sprintf(" (%s below)", factor(r.Target.Value/r.Value))
		}
		return f
	default:
		f := "missed by " + formatValue(r.Unit, r.Value-r.Target.Value)
		if r.Target.Value > 0 {
			f += fmt.Sprintf(" (%s over)", factor(r.Value/r.Target.Value))
		}
		return f
	}
}

// TargetText is the target as the issue states it.
func (r Row) TargetText() string {
	if r.Target == nil {
		return ""
	}
	if r.Unit == UnitYesNo {
		return formatValue(r.Unit, r.Target.Value)
	}
	op := "≥ "
	if r.Target.Op == AtMost {
		op = "≤ "
	}
	return op + formatValue(r.Unit, r.Target.Value)
}

// Versus compares the row with a baseline's figure: how many times better
// or worse clickagg is.
func (r Row) Versus(base float64) string {
	v := r.Value
	if math.IsNaN(v) || math.IsNaN(base) || v <= 0 || base <= 0 || r.Unit == UnitYesNo {
		return "—"
	}
	ratio := v / base
	if r.Lower {
		ratio = base / v
	}
	if ratio >= 1 {
		return factor(ratio) + " better"
	}
	return factor(1/ratio) + " worse"
}

func factor(f float64) string {
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f×", f)
	case f >= 10:
		return fmt.Sprintf("%.1f×", f)
	default:
		return fmt.Sprintf("%.2f×", f)
	}
}

// Formatted returns the row's value as printed.
func (r Row) Formatted() string { return formatValue(r.Unit, r.Value) }

func formatValue(u Unit, v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	switch u {
	case UnitRate:
		return si(v) + "/s"
	case UnitSeconds:
		return formatSeconds(v)
	case UnitBytes:
		return formatBytes(v)
	case UnitCount:
		return si(v)
	case UnitRatio:
		return factor(v)
	case UnitYesNo:
		if v != 0 {
			return "yes"
		}
		return "NO"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// si prints v with three significant digits and a k/M/G suffix.
func si(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return sig3(v/1e9) + "G"
	case a >= 1e6:
		return sig3(v/1e6) + "M"
	case a >= 1e4:
		return sig3(v/1e3) + "k"
	default:
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	}
}

// siOrUnknown is si with a unit, or "?" for NaN.
func siOrUnknown(v float64) string {
	if math.IsNaN(v) {
		return "?"
	}
	return si(v) + "/s"
}

func sig3(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func formatSeconds(s float64) string {
	a := math.Abs(s)
	switch {
	case a == 0:
		return "0"
	case a < 1e-3:
		return sig3(s*1e6) + " µs"
	case a < 1:
		return sig3(s*1e3) + " ms"
	default:
		return sig3(s) + " s"
	}
}

func formatBytes(b float64) string {
	a := math.Abs(b)
	switch {
	case a >= 1<<30:
		return sig3(b/(1<<30)) + " GiB"
	case a >= 1<<20:
		return sig3(b/(1<<20)) + " MiB"
	case a >= 10<<10:
		return sig3(b/(1<<10)) + " KiB"
	default:
		return sig3(b) + " B"
	}
}

// Machine describes where the report was measured.
type Machine struct {
	CPU         string
	Cores       int
	MemoryBytes uint64
	Go          string
	OS          string
	Redis       string
}

// Setting is one line of the run's configuration.
type Setting struct{ Name, Value string }

// ProfileTop is the top of one pprof profile.
type ProfileTop struct {
	Title string
	// Text is the table, like `go tool pprof -top` prints it.
	Text string
}

// Report is the outcome of a run.
type Report struct {
	Started  time.Time
	Elapsed  time.Duration
	Machine  Machine
	Command  string
	Settings []Setting
	Rows     []Row
	// Notes explain figures that need it: the rate freshness was measured
	// at, whether the key target was reached, what was extrapolated.
	Notes    []string
	Profiles []ProfileTop
	// Chart is the file name of the SVG chart, next to the Markdown file.
	Chart string
}

// Row returns the row with id, or false.
func (r *Report) Row(id string) (Row, bool) {
	for _, row := range r.Rows {
		if row.ID == id {
			return row, true
		}
	}
	return Row{}, false
}

var columns = []string{"figure", "clickagg", "target", "verdict", "naive Redis", "vs naive", "in-process", "vs in-process"}

func (r *Report) cells() [][]string {
	out := make([][]string, 0, len(r.Rows))
	for _, row := range r.Rows {
		naive, inproc := formatValue(row.Unit, row.Naive), formatValue(row.Unit, row.Inproc)
		if math.IsNaN(row.Naive) {
			naive = "—"
		}
		if math.IsNaN(row.Inproc) {
			inproc = "—"
		}
		out = append(out, []string{row.Label, row.Formatted(), row.TargetText(), row.Verdict(), naive, row.Versus(row.Naive), inproc, row.Versus(row.Inproc)})
	}
	return out
}

// WriteText prints the table for a terminal.
func (r *Report) WriteText(w io.Writer) error {
	rows := r.cells()
	width := make([]int, len(columns))
	for i, c := range columns {
		width[i] = utf8.RuneCountInString(c)
	}
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	line := func(cs []string) {
		for i, c := range cs {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(c)
			if i < len(cs)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)))
			}
		}
		b.WriteString("\n")
	}
	line(columns)
	for _, row := range rows {
		line(row)
	}
	for _, n := range r.Notes {
		b.WriteString("* " + n + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Markers of the hand-written part of the Markdown report, which WriteFiles
// keeps from the previous file.
const (
	notesBegin = "<!-- notes: written by people, kept by `clickagg bench` -->"
	notesEnd   = "<!-- end of notes -->"
)

// Markdown renders the report; notes is the hand-written analysis kept
// between runs (may be empty).
func (r *Report) Markdown(notes string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Benchmarks\n\n")
	p("This file is written by `clickagg bench`; only the notes section is written by hand.\n")
	p("Measured %s, the run took %s.\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Elapsed.Round(time.Second))
	p("## Machine\n\n")
	p("| | |\n|---|---|\n")
	p("| CPU | %s |\n| cores | %d |\n| memory | %s |\n| Go | %s |\n| OS | %s |\n| Redis | %s |\n\n",
		mdEscape(r.Machine.CPU), r.Machine.Cores, formatBytes(float64(r.Machine.MemoryBytes)), r.Machine.Go, r.Machine.OS, mdEscape(r.Machine.Redis))
	p("## Command\n\n```sh\n%s\n```\n\n", r.Command)
	if len(r.Settings) > 0 {
		p("| setting | value |\n|---|---|\n")
		for _, s := range r.Settings {
			p("| %s | %s |\n", mdEscape(s.Name), mdEscape(s.Value))
		}
		p("\n")
	}
	p("## Results\n\n")
	p("| %s |\n|%s\n", strings.Join(columns, " | "), strings.Repeat("---|", len(columns)))
	for _, row := range r.cells() {
		for i := range row {
			row[i] = mdEscape(row[i])
		}
		p("| %s |\n", strings.Join(row, " | "))
	}
	p("\n")
	for _, n := range r.Notes {
		p("- %s\n", mdEscape(n))
	}
	if len(r.Notes) > 0 {
		p("\n")
	}
	if r.Chart != "" {
		p("## Throughput and freshness over the run\n\n![throughput and freshness over the run](%s)\n\n", r.Chart)
	}
	for _, pr := range r.Profiles {
		p("## %s\n\n```\n%s```\n\n", pr.Title, pr.Text)
	}
	p("## Notes\n\n%s\n", notesBegin)
	if notes = strings.TrimSpace(notes); notes != "" {
		p("%s\n", notes)
	}
	p("%s\n", notesEnd)
	return b.String()
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// keptNotes returns the hand-written notes of an earlier report.
func keptNotes(old string) string {
	notes, _ := between(old, notesBegin, notesEnd)
	return notes
}

// between returns what old holds between the first begin and the end
// after it, and whether it holds both.
func between(old, begin, end string) (string, bool) {
	_, rest, ok := strings.Cut(old, begin)
	if !ok {
		return "", false
	}
	inner, _, ok := strings.Cut(rest, end)
	if !ok {
		return "", false
	}
	return inner, true
}

// WriteFiles writes the Markdown report to mdPath and the chart (if svg is
// not empty) next to it under r.Chart, keeping the notes of the report
// mdPath held before.
func (r *Report) WriteFiles(mdPath, svg string) error {
	old, err := os.ReadFile(mdPath)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("read old report: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(mdPath), 0o755); err != nil {
		return err
	}
	if svg != "" && r.Chart != "" {
		if err := os.WriteFile(filepath.Join(filepath.Dir(mdPath), r.Chart), []byte(svg), 0o644); err != nil {
			return fmt.Errorf("write chart: %w", err)
		}
	}
	md := r.Markdown(keptNotes(string(old)))
	// The sections that -bench.history, -bench.steady,
	// -bench.redis-topologies and -bench.security write are kept.
	for _, m := range [][2]string{{historyBegin, historyEnd}, {steadyBegin, steadyEnd},
		{RedisTopologies.begin, RedisTopologies.end}, {Security.begin, Security.end}} {
		if kept := keptSection(string(old), m[0], m[1]); kept != "" {
			md = withSection(md, m[0], m[1], kept)
		}
	}
	if err := os.WriteFile(mdPath, []byte(md), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
