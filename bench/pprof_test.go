package bench

import (
	"bytes"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

// testProfile is a CPU profile whose every value the test knows.
func testProfile() *profile.Profile {
	fns := []*profile.Function{
		{ID: 1, Name: "main.main"},
		{ID: 2, Name: "pkg.work"},
		{ID: 3, Name: "pkg.inlined"},
		{ID: 4, Name: "runtime.mallocgc"},
	}
	// location returns a location whose lines call funcs (innermost first).
	location := func(id uint64, funcs ...*profile.Function) *profile.Location {
		l := &profile.Location{ID: id}
		for _, f := range funcs {
			l.Line = append(l.Line, profile.Line{Function: f})
		}
		return l
	}
	mainLoc := location(10, fns[0])
	workLoc := location(20, fns[2], fns[1]) // pkg.inlined inlined into pkg.work
	mallocLoc := location(30, fns[3])
	type locs = []*profile.Location
	return &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Sample: []*profile.Sample{ // stacks leaf first
			{Location: locs{workLoc, mainLoc}, Value: []int64{1, 100}},             // main → work → inlined
			{Location: locs{mallocLoc, workLoc, mainLoc}, Value: []int64{1, 40}},   // ... → mallocgc
			{Location: locs{mainLoc}, Value: []int64{1, 10}},                       // main itself
			{Location: locs{mallocLoc, mallocLoc, mainLoc}, Value: []int64{1, 50}}, // recursion counts once in cum
		},
		Location: locs{mainLoc, workLoc, mallocLoc},
		Function: fns,
	}
}

func TestProfileTopFlatAndCum(t *testing.T) {
	for _, gz := range []bool{false, true} {
		// Through the encoding, as the bench reads the profiler's output.
		var buf bytes.Buffer
		write := testProfile().WriteUncompressed
		if gz {
			write = testProfile().Write
		}
		if err := write(&buf); err != nil {
			t.Fatal(err)
		}
		prof, err := profile.ParseData(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		stats, total, err := funcTop(prof, "cpu")
		if err != nil {
			t.Fatal(err)
		}
		if total != 200 {
			t.Fatalf("total %d, want 200", total)
		}
		want := []FuncStat{
			{"pkg.inlined", 100, 140},
			{"runtime.mallocgc", 90, 90},
			{"main.main", 10, 200},
			{"pkg.work", 0, 140},
		}
		if len(stats) != len(want) {
			t.Fatalf("stats %+v, want %+v", stats, want)
		}
		for i := range want {
			if stats[i] != want[i] {
				t.Errorf("stats[%d] = %+v, want %+v", i, stats[i], want[i])
			}
		}
		shares, err := groupShares(prof, "cpu", map[string][]string{"pkg": {"pkg."}, "gc": {"runtime.malloc"}, "none": {"nothing"}})
		if err != nil {
			t.Fatal(err)
		}
		if shares["pkg"] != 0.7 || shares["gc"] != 0.45 || shares["none"] != 0 {
			t.Errorf("shares %v, want pkg 0.7, gc 0.45, none 0", shares)
		}
		text := FormatTop(stats, total, 2, func(v int64) string { return "v" })
		if lines := strings.Split(strings.TrimSpace(text), "\n"); len(lines) != 3 || !strings.Contains(lines[1], "50.0%") || !strings.HasSuffix(lines[1], "pkg.inlined") {
			t.Errorf("FormatTop:\n%s", text)
		}
	}
	if _, _, err := funcTop(&profile.Profile{SampleType: []*profile.ValueType{{Type: "cpu"}}}, "inuse_space"); err == nil {
		t.Error("Top of a missing sample type did not fail")
	}
}

func TestParseRealHeapProfile(t *testing.T) {
	keep := make([][]byte, 0, 64)
	for range 64 {
		keep = append(keep, make([]byte, 1<<20))
	}
	runtime.GC()
	var buf bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&buf, 0); err != nil {
		t.Fatal(err)
	}
	prof, err := profile.ParseData(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	stats, total, err := funcTop(prof, "inuse_space")
	if err != nil {
		t.Fatal(err)
	}
	var mine int64
	for _, s := range stats {
		if strings.HasSuffix(s.Name, "TestParseRealHeapProfile") {
			mine = s.Flat
		}
	}
	// Sampled, so not exact: at least half of the 64 MiB held here.
	if mine < 32<<20 || total < mine {
		t.Errorf("profile attributes %d of %d bytes to this test, want about 64 MiB", mine, total)
	}
	runtime.KeepAlive(keep)
	if _, err := profile.ParseData([]byte{0xff, 0xff}); err == nil {
		t.Error("garbage parsed as a profile")
	}
}
