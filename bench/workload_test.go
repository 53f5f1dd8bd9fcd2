package bench

import (
	"context"
	"math"
	"net/netip"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/router"
)

func testWorkload() Workload {
	return Workload{Ads: 2_000_000, ZipfS: 1.1, Countries: len(Countries), Users: 4_000_000, IPs: 2_000_000, Duplicates: 0.01, Late: 0.01, Seed: 7}
}

const testSpanStart = 1_700_000_040_000 // ms, minute-aligned

func TestGeneratorFractionsAreExact(t *testing.T) {
	for _, c := range []struct {
		name            string
		dup, late       float64
		n               int
		wantDup, wantLt int
	}{
		{"issue", 0.01, 0.01, 200_000, 2000, 2000},
		{"uneven", 0.05, 0.003, 100_000, 5000, 300},
		{"none", 0, 0, 10_000, 0, 0},
		{"dups only", 0.2, 0, 10_000, 2000, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := testWorkload()
			w.Duplicates, w.Late = c.dup, c.late
			g := NewGenerator(w, testSpanStart)
			now := int64(testSpanStart + 30*60_000)
			seen := map[uint64]Event{}
			var dups, late int
			for i := range c.n {
				e := g.Next(now + int64(i))
				switch e.Kind {
				case Duplicate:
					dups++
					orig, ok := seen[e.ID]
					if !ok {
						t.Fatalf("event %d: duplicate of id %d, which was never made", i, e.ID)
					}
					orig.Kind = Duplicate
					if e != orig {
						t.Fatalf("event %d: duplicate %+v differs from its original %+v", i, e, orig)
					}
				case Late:
					late++
					if behind := now + int64(i) - e.TimeMs; behind < LateMin || behind > LateMax {
						t.Fatalf("event %d: late by %d ms, want [%d, %d]", i, behind, LateMin, LateMax)
					}
					seen[e.ID] = e
				case Fresh:
					if behind := now + int64(i) - e.TimeMs; behind < 0 || behind >= jitterMs {
						t.Fatalf("event %d: fresh event %d ms behind the sweep", i, behind)
					}
					if _, ok := seen[e.ID]; ok {
						t.Fatalf("event %d: fresh event reuses id %d", i, e.ID)
					}
					seen[e.ID] = e
				default:
					t.Fatalf("event %d: kind %d", i, e.Kind)
				}
			}
			if dups != c.wantDup || late != c.wantLt {
				t.Fatalf("%d duplicates and %d late of %d, want exactly %d and %d", dups, late, c.n, c.wantDup, c.wantLt)
			}
		})
	}
}

func TestGeneratorClampsToSpan(t *testing.T) {
	w := testWorkload()
	w.Late = 0.5
	g := NewGenerator(w, testSpanStart)
	for range 1000 {
		if e := g.Next(testSpanStart + 1000); e.TimeMs < testSpanStart {
			t.Fatalf("event at %d, before the span's start %d", e.TimeMs, testSpanStart)
		}
	}
}

func TestGeneratorIsDeterministic(t *testing.T) {
	a, b := NewGenerator(testWorkload(), testSpanStart), NewGenerator(testWorkload(), testSpanStart)
	for i := range 10_000 {
		now := int64(testSpanStart + i*7)
		if x, y := a.Next(now), b.Next(now); x != y {
			t.Fatalf("event %d: %+v and %+v from the same workload", i, x, y)
		}
	}
	w := testWorkload()
	w.Seed++
	c := NewGenerator(w, testSpanStart)
	a = NewGenerator(testWorkload(), testSpanStart)
	same := 0
	for range 1000 {
		if a.Next(testSpanStart) == c.Next(testSpanStart) {
			same++
		}
	}
	if same > 10 {
		t.Fatalf("%d of 1000 events equal under another seed", same)
	}
}

// TestGeneratorZipfShape checks ad popularity against the Zipf law it
// claims: the shares of the top ranks, and the ratio between ranks 1 and 10.
func TestGeneratorZipfShape(t *testing.T) {
	w := testWorkload()
	w.Duplicates, w.Late = 0, 0
	const n = 1_000_000
	g := NewGenerator(w, testSpanStart)
	counts := make([]int, 100)
	for range n {
		if e := g.Next(testSpanStart); e.Ad < 100 {
			counts[e.Ad]++
		}
	}
	var h float64
	for k := w.Ads; k >= 1; k-- {
		h += math.Pow(float64(k), -w.ZipfS)
	}
	for k := range 5 {
		want := n * math.Pow(float64(k+1), -w.ZipfS) / h
		if got := float64(counts[k]); math.Abs(got-want)/want > 0.03 {
			t.Errorf("rank %d: %0.f clicks, want %.0f within 3%%", k+1, got, want)
		}
	}
	r := float64(counts[0]) / float64(counts[9])
	if want := math.Pow(10, w.ZipfS); math.Abs(r-want)/want > 0.06 {
		t.Errorf("rank 1 / rank 10 = %.2f, want %.2f within 6%%", r, want)
	}
}

func TestCountriesAreRealAndSkewed(t *testing.T) {
	if len(Countries) != 200 {
		t.Fatalf("%d countries, want 200", len(Countries))
	}
	s := slices.Clone(Countries[:])
	slices.Sort(s)
	if len(slices.Compact(s)) != len(Countries) {
		t.Fatal("a country is listed twice")
	}
	w := testWorkload()
	w.Duplicates, w.Late = 0, 0
	g := NewGenerator(w, testSpanStart)
	counts := make([]int, len(Countries))
	const n = 200_000
	for range n {
		counts[g.Next(testSpanStart).Country]++
	}
	var h float64
	for k := range len(Countries) {
		h += 1 / float64(k+1)
	}
	if want := n / h; math.Abs(float64(counts[0])-want)/want > 0.03 {
		t.Errorf("first country: %d clicks, want %.0f within 3%%", counts[0], want)
	}
	if counts[len(Countries)-1] == 0 {
		t.Error("the last country never clicks")
	}
}

// acceptAll is a partition log that accepts every append.
type acceptAll struct{}

func (acceptAll) Append(_ context.Context, items []partlog.Append) ([]string, error) {
	return make([]string, len(items)), nil
}

// TestRouterAcceptsTheWorkload runs the router's own validation over
// events of every country and kind, encoded the way the bench sends them:
// a workload event the router refused would make the bench's ground truth
// wrong.
func TestRouterAcceptsTheWorkload(t *testing.T) {
	parts, err := ring.NewPartitioner(8)
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(testSpanStart + 61*60_000)
	var cfg router.Config
	cfg.MaxSkew, cfg.Horizon, cfg.TickInterval, cfg.MaxEvents, cfg.MaxIDLength = time.Minute, 6*time.Hour, time.Second, 10_000, 128
	rt := router.New(cfg, "", parts, acceptAll{}, nil, func() time.Time { return now })
	names := Names{Tag: "t3st"}
	enc := &Encoder{Names: names}
	g := NewGenerator(testWorkload(), testSpanStart)
	evs := make([]Event, 0, 5000)
	for i := range 5000 {
		e := g.Next(testSpanStart + int64(i)*700)
		e.Country = uint8(i % len(Countries))
		evs = append(evs, e)
	}
	evs = append(evs, Event{ID: 1, Ad: 2_000_000, TimeMs: testSpanStart + 60*60_000 - 1, Kind: Probe})
	var req clickaggv1.IngestStreamRequest
	if err := proto.Unmarshal(enc.AppendRequest(nil, evs), &req); err != nil {
		t.Fatal(err)
	}
	accepted, rejected, err := rt.Ingest(context.Background(), req.Events)
	if err != nil || accepted != int64(len(evs)) {
		t.Fatalf("router accepted %d of %d, err %v, first rejections %v", accepted, len(evs), err, rejected[:min(3, len(rejected))])
	}
}

// TestEncoderMatchesProto: the hand-written encoding is byte for byte what
// proto.Marshal gives for the same events, and LogEvent is what the router
// stores for them.
func TestEncoderMatchesProto(t *testing.T) {
	names := Names{Tag: "abc12"}
	g := NewGenerator(testWorkload(), testSpanStart)
	evs := []Event{{ID: 1, TimeMs: testSpanStart, Ad: 0, User: 0, IP: 0, Country: 0}} // whole seconds: no nanos field
	for range 300 {
		evs = append(evs, g.Next(testSpanStart+12_345))
	}
	evs = append(evs, Event{ID: 99, TimeMs: testSpanStart + 1, Ad: 5, Kind: Probe})
	want := &clickaggv1.IngestStreamRequest{}
	for _, e := range evs {
		want.Events = append(want.Events, names.ClickEvent(e))
	}
	wb, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	enc := &Encoder{Names: names}
	got := enc.AppendRequest(nil, evs)
	if string(got) != string(wb) {
		t.Fatalf("encoding differs from proto.Marshal: %d bytes against %d", len(got), len(wb))
	}
	// Reusing the encoder gives the same bytes again.
	if again := enc.AppendRequest(nil, evs); string(again) != string(wb) {
		t.Fatal("second encoding differs")
	}
	le := names.LogEvent(evs[1])
	if le.ClickTimeMs != evs[1].TimeMs || le.Country != Countries[evs[1].Country] || le.AdId != names.AdID(evs[1].Ad) {
		t.Fatalf("LogEvent %v does not match %+v", le, evs[1])
	}
}

func TestIPsAreDistinctAndCanonical(t *testing.T) {
	seen := map[string]bool{}
	for i := range uint32(100_000) {
		s := string(AppendIP(nil, i*37))
		a, err := netip.ParseAddr(s)
		if err != nil || a.String() != s {
			t.Fatalf("address %d: %q is not a canonical IPv4 address (%v)", i, s, err)
		}
		if seen[s] {
			t.Fatalf("address %d: %s repeats", i, s)
		}
		seen[s] = true
	}
}

func TestProbeIDsNeverCollideWithTheWorkload(t *testing.T) {
	n := Names{Tag: "ab"}
	probes := map[string]bool{}
	for id := range uint64(2000) {
		probes[string(n.AppendEventID(nil, Event{ID: id, Kind: Probe}))] = true
	}
	for id := range uint64(200_000) {
		if s := string(n.AppendEventID(nil, Event{ID: id})); probes[s] {
			t.Fatalf("workload event %d has the id %s of a probe", id, s)
		}
	}
}

func TestKeySetCountsDistinctKeysOfTheSpan(t *testing.T) {
	const start = 1_700_000_040_000 // minute-aligned
	ks := newKeySet(10, start, start+3*60_000)
	type key struct{ ad, minute int64 }
	want := map[key]bool{}
	for i := range 200 {
		e := Event{Ad: uint32(i * 7 % 13), TimeMs: start - 30_000 + int64(i)*1_100}
		inSpan := e.TimeMs >= start && e.TimeMs < start+3*60_000 && e.Ad < 10
		k := key{int64(e.Ad), e.Minute()}
		isNew := inSpan && !want[k]
		if got := ks.add(e); got != isNew {
			t.Fatalf("event %d (%+v): add = %v, want %v", i, e, got, isNew)
		}
		if inSpan {
			want[k] = true
		}
	}
	if ks.len() != int64(len(want)) || len(want) == 0 {
		t.Fatalf("len %d, want %d", ks.len(), len(want))
	}
}
