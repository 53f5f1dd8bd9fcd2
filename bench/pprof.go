package bench

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/google/pprof/profile"
)

// This file reduces a pprof profile (decoded by github.com/google/pprof's
// profile package) to the top that `go tool pprof -top` prints, and to the
// share of each part of the pipeline, so that the report can carry them
// without a Go toolchain at run time.

// FuncStat is one function's share of a profile.
type FuncStat struct {
	Name      string
	Flat, Cum int64
}

// sampleIndex is the index of sample type typ (e.g. "cpu", "inuse_space")
// in p's values.
func sampleIndex(p *profile.Profile, typ string) (int, error) {
	i := slices.IndexFunc(p.SampleType, func(t *profile.ValueType) bool { return t.Type == typ })
	if i < 0 {
		types := make([]string, len(p.SampleType))
		for j, t := range p.SampleType {
			types[j] = t.Type
		}
		return 0, fmt.Errorf("profile has no sample type %q (has %v)", typ, types)
	}
	return i, nil
}

// funcName is the name of line's function; a line without one (an
// unsymbolized profile) is named "", as pprof's string table does.
func funcName(l profile.Line) string {
	if l.Function == nil {
		return ""
	}
	return l.Function.Name
}

// funcTop returns the functions of p by flat value of sample type typ,
// largest first, and the total. A location's lines are its inlined calls,
// innermost first: only the leaf location's first line is flat, and a
// function counts once per sample in cum however often it recurs.
func funcTop(p *profile.Profile, typ string) ([]FuncStat, int64, error) {
	idx, err := sampleIndex(p, typ)
	if err != nil {
		return nil, 0, err
	}
	stats := map[string]*FuncStat{}
	get := func(name string) *FuncStat {
		s := stats[name]
		if s == nil {
			s = &FuncStat{Name: name}
			stats[name] = s
		}
		return s
	}
	var total int64
	for _, s := range p.Sample {
		v := s.Value[idx]
		total += v
		seen := map[string]bool{}
		for i, loc := range s.Location {
			for j, l := range loc.Line {
				name := funcName(l)
				if i == 0 && j == 0 {
					get(name).Flat += v
				}
				if !seen[name] {
					seen[name] = true
					get(name).Cum += v
				}
			}
		}
	}
	out := make([]FuncStat, 0, len(stats))
	for _, s := range stats {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b FuncStat) int {
		return cmp.Or(cmp.Compare(b.Flat, a.Flat), cmp.Compare(b.Cum, a.Cum), strings.Compare(a.Name, b.Name))
	})
	return out, total, nil
}

// groupShares returns, for each named group, the fraction of the total of
// sample type typ whose stack contains a function whose name starts with
// one of the group's prefixes (a sample counts once per group; groups
// overlap).
func groupShares(p *profile.Profile, typ string, groups map[string][]string) (map[string]float64, error) {
	idx, err := sampleIndex(p, typ)
	if err != nil {
		return nil, err
	}
	sums := map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		v := s.Value[idx]
		total += v
		for g, prefixes := range groups {
		stack:
			for _, loc := range s.Location {
				for _, l := range loc.Line {
					for _, pre := range prefixes {
						if strings.HasPrefix(funcName(l), pre) {
							sums[g] += v
							break stack
						}
					}
				}
			}
		}
	}
	out := map[string]float64{}
	for g := range groups {
		if total > 0 {
			out[g] = float64(sums[g]) / float64(total)
		}
	}
	return out, nil
}

// FormatTop prints the first n functions like `go tool pprof -top`; format
// prints one value (a duration or a size).
func FormatTop(stats []FuncStat, total int64, n int, format func(int64) string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%10s %6s %10s %6s  %s\n", "flat", "flat%", "cum", "cum%", "function")
	for _, s := range stats[:min(n, len(stats))] {
		fmt.Fprintf(&b, "%10s %5.1f%% %10s %5.1f%%  %s\n", format(s.Flat), pct(s.Flat, total), format(s.Cum), pct(s.Cum, total), s.Name)
	}
	return b.String()
}

func pct(v, total int64) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(v) / float64(total)
}
