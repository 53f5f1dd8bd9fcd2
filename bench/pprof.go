package bench

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// This file reads just enough of the pprof format (profile.proto, gzipped)
// to print the top of a profile the way `go tool pprof -top` does, so that
// the report can carry it without a dependency on the pprof module or a Go
// toolchain at run time.

// Field numbers of perftools.profiles.Profile and its messages.
const (
	profSampleType  protowire.Number = 1
	profSample      protowire.Number = 2
	profLocation    protowire.Number = 4
	profFunction    protowire.Number = 5
	profStringTable protowire.Number = 6

	valueTypeType protowire.Number = 1

	sampleLocation protowire.Number = 1
	sampleValue    protowire.Number = 2

	locationID   protowire.Number = 1
	locationLine protowire.Number = 4
	lineFunction protowire.Number = 1

	functionID   protowire.Number = 1
	functionName protowire.Number = 2
)

// Profile is a decoded pprof profile, reduced to what a top needs.
type Profile struct {
	SampleTypes []string
	Samples     []ProfileSample
	// Stacks maps a location id to its function names, innermost first
	// (several when functions were inlined into one another).
	Stacks map[uint64][]string
}

// ProfileSample is one stack (location ids, leaf first) and its values.
type ProfileSample struct {
	Locations []uint64
	Values    []int64
}

var errBadProfile = errors.New("bench: malformed pprof profile")

// ParseProfile decodes a (possibly gzipped) pprof profile.
func ParseProfile(data []byte) (*Profile, error) {
	if len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("profile: %w", err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("profile: %w", err)
		}
	}
	var (
		strs       []string
		typeIdx    []int64
		samples    []ProfileSample
		locFuncs   = map[uint64][]uint64{}
		funcNameIx = map[uint64]int64{}
	)
	err := eachField(data, func(n protowire.Number, t protowire.Type, v uint64, b []byte) error {
		switch n {
		case profStringTable:
			strs = append(strs, string(b))
		case profSampleType:
			return eachField(b, func(n protowire.Number, _ protowire.Type, v uint64, _ []byte) error {
				if n == valueTypeType {
					typeIdx = append(typeIdx, int64(v))
				}
				return nil
			})
		case profSample:
			var s ProfileSample
			err := eachField(b, func(n protowire.Number, t protowire.Type, v uint64, b []byte) error {
				switch n {
				case sampleLocation:
					return eachVarint(t, v, b, func(x uint64) { s.Locations = append(s.Locations, x) })
				case sampleValue:
					return eachVarint(t, v, b, func(x uint64) { s.Values = append(s.Values, int64(x)) })
				}
				return nil
			})
			samples = append(samples, s)
			return err
		case profLocation:
			var id uint64
			var funcs []uint64
			err := eachField(b, func(n protowire.Number, _ protowire.Type, v uint64, b []byte) error {
				switch n {
				case locationID:
					id = v
				case locationLine:
					return eachField(b, func(n protowire.Number, _ protowire.Type, v uint64, _ []byte) error {
						if n == lineFunction {
							funcs = append(funcs, v)
						}
						return nil
					})
				}
				return nil
			})
			locFuncs[id] = funcs
			return err
		case profFunction:
			var id uint64
			var name int64
			err := eachField(b, func(n protowire.Number, _ protowire.Type, v uint64, _ []byte) error {
				switch n {
				case functionID:
					id = v
				case functionName:
					name = int64(v)
				}
				return nil
			})
			funcNameIx[id] = name
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	str := func(i int64) string {
		if i < 0 || int(i) >= len(strs) {
			return "?"
		}
		return strs[i]
	}
	p := &Profile{Samples: samples, Stacks: make(map[uint64][]string, len(locFuncs))}
	for _, i := range typeIdx {
		p.SampleTypes = append(p.SampleTypes, str(i))
	}
	for id, funcs := range locFuncs {
		names := make([]string, len(funcs))
		for i, f := range funcs {
			names[i] = str(funcNameIx[f])
		}
		p.Stacks[id] = names
	}
	return p, nil
}

// eachField calls fn for every field of the message b: v holds varints and
// fixed values, data holds length-delimited ones.
func eachField(b []byte, fn func(n protowire.Number, t protowire.Type, v uint64, data []byte) error) error {
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return errBadProfile
		}
		b = b[l:]
		var v uint64
		var data []byte
		switch t {
		case protowire.VarintType:
			v, l = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			v, l = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var v32 uint32
			v32, l = protowire.ConsumeFixed32(b)
			v = uint64(v32)
		case protowire.BytesType:
			data, l = protowire.ConsumeBytes(b)
		default:
			return errBadProfile
		}
		if l < 0 {
			return errBadProfile
		}
		b = b[l:]
		if err := fn(n, t, v, data); err != nil {
			return err
		}
	}
	return nil
}

// eachVarint reads a repeated varint field in either encoding: packed
// (one length-delimited run) or one varint per field.
func eachVarint(t protowire.Type, v uint64, b []byte, fn func(uint64)) error {
	if t == protowire.VarintType {
		fn(v)
		return nil
	}
	for len(b) > 0 {
		x, l := protowire.ConsumeVarint(b)
		if l < 0 {
			return errBadProfile
		}
		fn(x)
		b = b[l:]
	}
	return nil
}

// FuncStat is one function's share of a profile.
type FuncStat struct {
	Name      string
	Flat, Cum int64
}

// Top returns the functions of the profile by flat value of sample type
// typ (e.g. "cpu", "inuse_space"), largest first, and the total.
func (p *Profile) Top(typ string) ([]FuncStat, int64, error) {
	idx := slices.Index(p.SampleTypes, typ)
	if idx < 0 {
		return nil, 0, fmt.Errorf("profile has no sample type %q (has %v)", typ, p.SampleTypes)
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
	for _, s := range p.Samples {
		if idx >= len(s.Values) {
			continue
		}
		v := s.Values[idx]
		total += v
		seen := map[string]bool{}
		for i, loc := range s.Locations {
			for j, name := range p.Stacks[loc] {
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
		if a.Flat != b.Flat {
			if a.Flat > b.Flat {
				return -1
			}
			return 1
		}
		if a.Cum != b.Cum {
			if a.Cum > b.Cum {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, total, nil
}

// Share returns, for each named group, the fraction of the total of sample
// type typ whose stack contains a function whose name starts with one of
// the group's prefixes (a sample counts once per group; groups overlap).
func (p *Profile) Share(typ string, groups map[string][]string) (map[string]float64, error) {
	idx := slices.Index(p.SampleTypes, typ)
	if idx < 0 {
		return nil, fmt.Errorf("profile has no sample type %q", typ)
	}
	sums := map[string]int64{}
	var total int64
	for _, s := range p.Samples {
		if idx >= len(s.Values) {
			continue
		}
		v := s.Values[idx]
		total += v
		for g, prefixes := range groups {
		stack:
			for _, loc := range s.Locations {
				for _, name := range p.Stacks[loc] {
					for _, pre := range prefixes {
						if strings.HasPrefix(name, pre) {
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
