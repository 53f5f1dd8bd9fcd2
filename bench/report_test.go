package bench

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var l Latencies
	if got := l.Percentile(50); got != -1 {
		t.Fatalf("empty: %v, want -1", got)
	}
	if !math.IsNaN(l.Seconds(99)) {
		t.Fatal("empty: Seconds is not NaN")
	}
	// 1..100 ms, added out of order.
	for i := 100; i >= 1; i-- {
		l.Add(time.Duration(i*37%100+1) * time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{
		{50, 50 * time.Millisecond},
		{99, 99 * time.Millisecond},
		{99.5, 100 * time.Millisecond},
		{100, 100 * time.Millisecond},
		{1, time.Millisecond},
		{0.1, time.Millisecond},
	} {
		if got := l.Percentile(c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	l.Add(time.Second) // 101 samples now: p99 is the 100th
	if got := l.Percentile(99); got != 100*time.Millisecond {
		t.Errorf("after adding 1s, p99 = %v, want 100ms", got)
	}
	var one Latencies
	one.Add(3 * time.Millisecond)
	if one.Percentile(50) != 3*time.Millisecond || one.Percentile(99) != 3*time.Millisecond {
		t.Error("one sample: percentiles are not that sample")
	}
}

func TestRowVerdictAndComparison(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		name          string
		row           Row
		verdict       string
		naive, inproc string
	}{
		{"rate missed", Row{Unit: UnitRate, Value: 150_000, Target: &Target{AtLeast, 1_500_000}, Naive: 50_000, Inproc: 600_000},
			"missed: 1.35M/s short (10.0× below)", "3.00× better", "4.00× worse"},
		{"rate met", Row{Unit: UnitRate, Value: 2_000_000, Target: &Target{AtLeast, 1_500_000}, Naive: nan, Inproc: nan},
			"met", "—", "—"},
		{"latency missed", Row{Unit: UnitSeconds, Lower: true, Value: 0.015, Target: &Target{AtMost, 0.010}, Naive: 1.5, Inproc: 0.005},
			"missed by 5.00 ms (1.50× over)", "100× better", "3.00× worse"},
		{"latency met", Row{Unit: UnitSeconds, Lower: true, Value: 0.0015, Target: &Target{AtMost, 0.002}, Naive: nan, Inproc: nan},
			"met", "—", "—"},
		{"bytes missed", Row{Unit: UnitBytes, Lower: true, Value: 400, Target: &Target{AtMost, 32}, Naive: 195, Inproc: 400},
			"missed by 368 B (12.5× over)", "2.05× worse", "1.00× better"},
		{"no target", Row{Unit: UnitCount, Value: 12, Naive: nan, Inproc: nan}, "", "—", "—"},
		{"not measured", Row{Unit: UnitRate, Value: nan, Target: &Target{AtLeast, 1}, Naive: 3, Inproc: nan}, "not measured", "—", "—"},
		{"yes/no", Row{Unit: UnitYesNo, Value: 0, Target: &Target{AtLeast, 1}, Naive: nan, Inproc: nan}, "missed", "—", "—"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.row.Verdict(); got != c.verdict {
				t.Errorf("verdict %q, want %q", got, c.verdict)
			}
			if got := c.row.Versus(c.row.Naive); got != c.naive {
				t.Errorf("versus naive %q, want %q", got, c.naive)
			}
			if got := c.row.Versus(c.row.Inproc); got != c.inproc {
				t.Errorf("versus in-process %q, want %q", got, c.inproc)
			}
		})
	}
}

func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		u    Unit
		v    float64
		want string
	}{
		{UnitRate, 1_523_000, "1.52M/s"},
		{UnitRate, 55_830, "55.8k/s"},
		{UnitRate, 9_999, "9999/s"},
		{UnitSeconds, 0.000_494, "494 µs"},
		{UnitSeconds, 0.0287, "28.7 ms"},
		{UnitSeconds, 2.65, "2.65 s"},
		{UnitBytes, 31.96, "32.0 B"},
		{UnitBytes, 47.5 * (1 << 20), "47.5 MiB"},
		{UnitCount, 10_240_000, "10.2M"},
		{UnitRatio, 6.2, "6.20×"},
		{UnitYesNo, 1, "yes"},
		{UnitRate, math.NaN(), "n/a"},
	} {
		if got := formatValue(c.u, c.v); got != c.want {
			t.Errorf("formatValue(%v, %v) = %q, want %q", c.u, c.v, got, c.want)
		}
	}
}

func sampleReport() *Report {
	nan := math.NaN()
	return &Report{
		Started: time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC),
		Elapsed: 7*time.Minute + 12*time.Second,
		Machine: Machine{CPU: "AMD EPYC", Cores: 2, MemoryBytes: 24 << 30, Go: "go1.26.8", OS: "linux/amd64", Redis: "7.0.15"},
		Command: "clickagg bench",
		Settings: []Setting{
			{"workload", "2.00M ads | and a pipe"},
		},
		Rows: []Row{
			{ID: "ingest", Label: "ingest", Unit: UnitRate, Value: 150_000, Target: &Target{AtLeast, 1_500_000}, Naive: 42_000, Inproc: 80_000},
			{ID: "top_p99", Label: "GetPopularAds(100) over 60 min p99", Unit: UnitSeconds, Lower: true, Value: 0.0471, Target: &Target{AtMost, 0.01}, Naive: 0.5, Inproc: nan},
		},
		Notes:    []string{"a note"},
		Profiles: []ProfileTop{{Title: "CPU", Text: "flat\n"}},
		Chart:    "benchmarks.svg",
	}
}

func TestMarkdownHasEveryRowAndKeepsNotes(t *testing.T) {
	r := sampleReport()
	md := r.Markdown("  our analysis\n\nsecond paragraph  ")
	for _, want := range []string{
		"| ingest | 150k/s | ≥ 1.50M/s | missed: 1.35M/s short (10.0× below) | 42.0k/s | 3.57× better | 80.0k/s | 1.88× better |",
		"| GetPopularAds(100) over 60 min p99 | 47.1 ms | ≤ 10.0 ms | missed by 37.1 ms (4.71× over) | 500 ms | 10.6× better | — | — |",
		"| workload | 2.00M ads \\| and a pipe |",
		"| CPU | AMD EPYC |",
		"```sh\nclickagg bench\n```",
		"![throughput and freshness over the run](benchmarks.svg)",
		"- a note",
		notesBegin + "\nour analysis\n\nsecond paragraph\n" + notesEnd,
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if got := keptNotes(md); strings.TrimSpace(got) != "our analysis\n\nsecond paragraph" {
		t.Errorf("keptNotes = %q", got)
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "missed by 37.1 ms (4.71× over)") || !strings.Contains(text.String(), "* a note") {
		t.Errorf("text table:\n%s", text.String())
	}
}

func TestWriteFilesKeepsTheNotesOfTheOldReport(t *testing.T) {
	dir := t.TempDir()
	md := filepath.Join(dir, "docs", "benchmarks.md")
	r := sampleReport()
	if err := r.WriteFiles(md, "<svg/>"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(md)
	edited := strings.Replace(string(b), notesBegin+"\n", notesBegin+"\nThe profile says the aggregator is the bottleneck.\n", 1)
	if err := os.WriteFile(md, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Rows[0].Value = 160_000
	if err := r.WriteFiles(md, "<svg/>"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(md)
	if !strings.Contains(string(b), "The profile says the aggregator is the bottleneck.") || !strings.Contains(string(b), "| ingest | 160k/s |") {
		t.Fatalf("rewritten report:\n%s", b)
	}
	if svg, err := os.ReadFile(filepath.Join(dir, "docs", "benchmarks.svg")); err != nil || string(svg) != "<svg/>" {
		t.Fatalf("chart: %q, %v", svg, err)
	}
}

func TestChartSVG(t *testing.T) {
	tl := Timeline{
		Spans: []Span{{Name: "measured", From: 5, To: 50}, {Name: "freshness", From: 60, To: 80}},
	}
	for i := range 80 {
		applied := float64(1000 * i)
		if i%3 == 0 {
			applied = math.NaN() // a status call that did not answer
		}
		tl.Points = append(tl.Points, Point{T: float64(i + 1), Acked: float64(1500 * i), Applied: applied, Lag: int64(i)})
	}
	for i := range 40 {
		tl.Freshness = append(tl.Freshness, Sample{T: float64(i) * 2, Latency: time.Duration(i) * time.Millisecond})
	}
	svg := ChartSVG(tl, "title <with> & escapes")
	if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
		t.Fatal("chart has NaN or Inf coordinates")
	}
	// Well-formed XML, with the series it claims.
	dec := xml.NewDecoder(strings.NewReader(svg))
	var circles int
	points := map[string]int{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		attr := map[string]string{}
		for _, a := range se.Attr {
			attr[a.Name.Local] = a.Value
		}
		switch se.Name.Local {
		case "circle":
			circles++
		case "polyline":
			points[attr["id"]] = len(strings.Fields(attr["points"]))
		}
	}
	if circles != 40+1 { // the samples and the legend's
		t.Errorf("%d circles, want 41", circles)
	}
	if points["acked"] != 80 || points["applied"] != 80-27 {
		t.Errorf("polylines have %v points, want 80 acked and 53 applied", points)
	}
	// Every coordinate stays inside the plot.
	for _, f := range []string{`cy="-`, `cx="-`} {
		if strings.Contains(svg, f) {
			t.Errorf("chart has a coordinate outside the plot (%s)", f)
		}
	}
}

func TestNiceStep(t *testing.T) {
	for _, c := range []struct{ max, want float64 }{{93, 20}, {1_000_000, 200_000}, {0.4, 0.1}, {0, 1}, {math.NaN(), 1}} {
		if got := niceStep(c.max, 5); math.Abs(got-c.want) > 1e-9*c.want {
			t.Errorf("niceStep(%v) = %v, want %v", c.max, got, c.want)
		}
	}
}

// TestCPUSharesSeeThisProcess: CPU burnt here shows up as this process's
// and the machine's, not as another process's.
func TestCPUSharesSeeThisProcess(t *testing.T) {
	a := readCPUShares()
	if math.IsNaN(a.self) || math.IsNaN(a.machine) {
		t.Skip("no /proc")
	}
	deadline := time.Now().Add(20 * time.Second)
	x := 0
	var b cpuShares
	for {
		for i := range 10_000_000 {
			x += i ^ x
		}
		b = readCPUShares()
		if b.self-a.self >= 0.3 || time.Now().After(deadline) {
			break
		}
	}
	self, machine := b.self-a.self, b.machine-a.machine
	if self < 0.3 {
		t.Fatalf("burnt CPU, but this process's share grew by only %.2fs (x=%d)", self, x)
	}
	// /proc/stat counts in ticks like the per-process figures; allow a
	// few ticks of difference.
	if machine < self-0.05 {
		t.Fatalf("machine busy time grew by %.2fs, less than this process's %.2fs", machine, self)
	}
}
