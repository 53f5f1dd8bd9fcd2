package chaos

import (
	"cmp"
	"slices"
	"strconv"
	"sync"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// sampleCountries are the countries (indexes into countries) whose
// per-(ad, minute) counts the truth keeps: the most frequent, a middle
// one and a rare one.
var sampleCountries = []int{0, 5, 19}

// truth is the ground truth of a workload in compact form: what every
// check needs and nothing more, so that 10M clicks fit in a few hundred
// MB. Every unique valid click is added once, when it is generated, sent
// by a client or written to the shipper's log alike.
type truth struct {
	mu       sync.Mutex
	firstMin int64
	lastMin  int64 // newest minute with a click
	// counts maps key(ad, minute) to the clicks of that ad in that minute.
	counts map[uint64]int64
	// byCountry[j] is counts for clicks from countries[sampleCountries[j]].
	byCountry []map[uint64]int64
	// sampled holds every click of a sampled user or a sampled ip.
	sampled []sampledClick

	valid, late, shipped int64
}

type sampledClick struct {
	ad      int32
	minute  int32 // from firstMin
	country int8
	user    int16 // -1 unless a sampled user
	ip      int16 // -1 unless a sampled ip
}

func newTruth(firstMin int64) *truth {
	tr := &truth{firstMin: firstMin, lastMin: firstMin, counts: map[uint64]int64{}}
	for range sampleCountries {
		tr.byCountry = append(tr.byCountry, map[uint64]int64{})
	}
	return tr
}

func (tr *truth) key(ad int, minute int64) uint64 {
	return uint64(ad)<<32 | uint64(minute-tr.firstMin)
}

func (tr *truth) unkey(k uint64) (ad int, minute int64) {
	return int(k >> 32), tr.firstMin + int64(k&0xffffffff)
}

// add counts click c, a unique valid click.
func (tr *truth) add(c click) {
	m := c.t.Unix() / 60
	k := tr.key(c.ad, m)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.valid++
	if c.late {
		tr.late++
	}
	if c.shipped {
		tr.shipped++
	}
	tr.lastMin = max(tr.lastMin, m)
	tr.counts[k]++
	if j := slices.Index(sampleCountries, c.country); j >= 0 {
		tr.byCountry[j][k]++
	}
	if c.user < sampleUsers || c.ip < sampleIPs {
		s := sampledClick{ad: int32(c.ad), minute: int32(m - tr.firstMin), country: int8(c.country), user: -1, ip: -1}
		if c.user < sampleUsers {
			s.user = int16(c.user)
		}
		if c.ip < sampleIPs {
			s.ip = int16(c.ip)
		}
		tr.sampled = append(tr.sampled, s)
	}
}

// filter is a query filter over the sampled values: -1 is no condition.
type filter struct{ country, user, ip int }

var noFilter = filter{-1, -1, -1}

func (f filter) String() string {
	if f == noFilter {
		return "none"
	}
	s := ""
	if f.country >= 0 {
		s += "country=" + countries[f.country] + " "
	}
	if f.user >= 0 {
		s += "user=user-" + strconv.Itoa(f.user) + " "
	}
	if f.ip >= 0 {
		s += "ip=" + ipString(f.ip) + " "
	}
	return s[:len(s)-1]
}

func (f filter) proto() *clickaggv1.Filter {
	if f == noFilter {
		return nil
	}
	p := &clickaggv1.Filter{}
	if f.country >= 0 {
		p.Country = countries[f.country]
	}
	if f.user >= 0 {
		p.UserId = "user-" + strconv.Itoa(f.user)
	}
	if f.ip >= 0 {
		p.Ip = ipString(f.ip)
	}
	return p
}

// perAd returns the clicks of each ad in minutes [from, to) that match
// f. f may name only a sampled country, user or ip.
func (tr *truth) perAd(from, to int64, f filter) map[int]int64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[int]int64{}
	if f.user >= 0 || f.ip >= 0 {
		for _, s := range tr.sampled {
			m := tr.firstMin + int64(s.minute)
			if m >= from && m < to && (f.user < 0 || int(s.user) == f.user) && (f.ip < 0 || int(s.ip) == f.ip) && (f.country < 0 || int(s.country) == f.country) {
				out[int(s.ad)]++
			}
		}
		return out
	}
	counts := tr.counts
	if f.country >= 0 {
		counts = tr.byCountry[slices.Index(sampleCountries, f.country)]
	}
	for k, n := range counts {
		if ad, m := tr.unkey(k); m >= from && m < to {
			out[ad] += n
		}
	}
	return out
}

// count is the clicks of ad in minutes [from, to) that match f.
func (tr *truth) count(ad int, from, to int64, f filter) int64 {
	if f == noFilter || (f.country >= 0 && f.user < 0 && f.ip < 0) {
		counts := tr.counts
		if f.country >= 0 {
			counts = tr.byCountry[slices.Index(sampleCountries, f.country)]
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		var n int64
		for m := from; m < to; m++ {
			if m >= tr.firstMin {
				n += counts[tr.key(ad, m)]
			}
		}
		return n
	}
	return tr.perAd(from, to, f)[ad]
}

// top is the exact top n ads of minutes [from, to) with f: by count,
// then by ad id, as queryd orders them.
func (tr *truth) top(from, to int64, n int, f filter) []*clickaggv1.AdCount {
	per := tr.perAd(from, to, f)
	out := make([]*clickaggv1.AdCount, 0, len(per))
	for ad, c := range per {
		out = append(out, &clickaggv1.AdCount{AdId: adID(ad), Count: c})
	}
	slices.SortFunc(out, func(a, b *clickaggv1.AdCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.AdId, b.AdId)
	})
	return out[:min(n, len(out))]
}

// adMinutes returns every (ad, minute) with clicks and its count.
func (tr *truth) adMinutes() (ads []int, minutes []int64, counts []int64) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for k, n := range tr.counts {
		ad, m := tr.unkey(k)
		ads, minutes, counts = append(ads, ad), append(minutes, m), append(counts, n)
	}
	return ads, minutes, counts
}

// parseAd returns n of an ad id "ad-<n>", or -1.
func parseAd(id string) int {
	if len(id) < 4 || id[:3] != "ad-" {
		return -1
	}
	n, err := strconv.Atoi(id[3:])
	if err != nil || n < 0 {
		return -1
	}
	return n
}
