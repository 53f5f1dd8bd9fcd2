package bench

import (
	"bytes"
	"compress/gzip"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// profileBuilder writes a pprof profile by hand, so that the test knows
// every value in it.
type profileBuilder struct {
	b    []byte
	strs map[string]uint64
	list []string
}

func (p *profileBuilder) str(s string) uint64 {
	if p.strs == nil {
		p.strs = map[string]uint64{"": 0}
		p.list = []string{""}
	}
	if i, ok := p.strs[s]; ok {
		return i
	}
	p.strs[s] = uint64(len(p.list))
	p.list = append(p.list, s)
	return p.strs[s]
}

func (p *profileBuilder) msg(n protowire.Number, body []byte) {
	p.b = protowire.AppendTag(p.b, n, protowire.BytesType)
	p.b = protowire.AppendBytes(p.b, body)
}

func varintField(b []byte, n protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, n, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func (p *profileBuilder) sampleType(typ string) {
	p.msg(profSampleType, varintField(varintField(nil, valueTypeType, p.str(typ)), 2, p.str("unit")))
}

// sample adds a stack (leaf first) with values; packed chooses the
// encoding of the repeated fields.
func (p *profileBuilder) sample(locs []uint64, vals []int64, packed bool) {
	var b []byte
	if packed {
		var l, v []byte
		for _, x := range locs {
			l = protowire.AppendVarint(l, x)
		}
		for _, x := range vals {
			v = protowire.AppendVarint(v, uint64(x))
		}
		b = protowire.AppendTag(b, sampleLocation, protowire.BytesType)
		b = protowire.AppendBytes(b, l)
		b = protowire.AppendTag(b, sampleValue, protowire.BytesType)
		b = protowire.AppendBytes(b, v)
	} else {
		for _, x := range locs {
			b = varintField(b, sampleLocation, x)
		}
		for _, x := range vals {
			b = varintField(b, sampleValue, uint64(x))
		}
	}
	p.msg(profSample, b)
}

// location adds location id whose lines call funcs (innermost first).
func (p *profileBuilder) location(id uint64, funcs ...uint64) {
	b := varintField(nil, locationID, id)
	for _, f := range funcs {
		b = protowire.AppendTag(b, locationLine, protowire.BytesType)
		b = protowire.AppendBytes(b, varintField(nil, lineFunction, f))
	}
	p.msg(profLocation, b)
}

func (p *profileBuilder) function(id uint64, name string) {
	p.msg(profFunction, varintField(varintField(nil, functionID, id), functionName, p.str(name)))
}

func (p *profileBuilder) bytes(gz bool) []byte {
	out := p.b
	for _, s := range p.list {
		out = protowire.AppendTag(out, profStringTable, protowire.BytesType)
		out = protowire.AppendString(out, s)
	}
	if !gz {
		return out
	}
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(out)
	w.Close()
	return buf.Bytes()
}

func TestProfileTopFlatAndCum(t *testing.T) {
	var p profileBuilder
	p.sampleType("samples")
	p.sampleType("cpu")
	p.function(1, "main.main")
	p.function(2, "pkg.work")
	p.function(3, "pkg.inlined")
	p.function(4, "runtime.mallocgc")
	p.location(10, 1)
	p.location(20, 3, 2) // pkg.inlined inlined into pkg.work
	p.location(30, 4)
	p.sample([]uint64{20, 10}, []int64{1, 100}, true)     // main → work → inlined
	p.sample([]uint64{30, 20, 10}, []int64{1, 40}, false) // ... → mallocgc
	p.sample([]uint64{10}, []int64{1, 10}, true)          // main itself
	p.sample([]uint64{30, 30, 10}, []int64{1, 50}, false) // recursion counts once in cum
	for _, gz := range []bool{false, true} {
		prof, err := ParseProfile(p.bytes(gz))
		if err != nil {
			t.Fatal(err)
		}
		stats, total, err := prof.Top("cpu")
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
		shares, err := prof.Share("cpu", map[string][]string{"pkg": {"pkg."}, "gc": {"runtime.malloc"}, "none": {"nothing"}})
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
	if _, _, err := (&Profile{SampleTypes: []string{"cpu"}}).Top("inuse_space"); err == nil {
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
	prof, err := ParseProfile(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	stats, total, err := prof.Top("inuse_space")
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
	if _, err := ParseProfile([]byte{0xff, 0xff}); err == nil {
		t.Error("garbage parsed as a profile")
	}
}
