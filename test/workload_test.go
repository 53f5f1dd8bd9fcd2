package test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// click is one valid event of the workload, in the form ground truth needs.
type click struct {
	ev     *clickaggv1.ClickEvent
	minute int64
}

// workload is the sequence of requests the test sends and the ground truth
// it implies.
type workload struct {
	batches [][]*clickaggv1.ClickEvent
	// invalidAt maps an invalid event (by pointer) to its expected reason.
	invalidAt map[*clickaggv1.ClickEvent]string
	unique    []click
	dups      int
	late      int
	firstMin  int64
	minutes   int
}

var testCountries = []string{"US", "IN", "BR", "DE", "GB", "FR", "JP", "MX", "NG", "ID", "CA", "AU", "ES", "IT", "KR", "TR", "PL", "AR", "ZA", "SE"}

// newWorkload generates n unique valid clicks spread over minutes event-time
// minutes starting at start, from ads Zipf-distributed ads; dupFrac of extra
// re-sends of earlier events, lateFrac of events whose minute has completed
// when they are sent, and invalidFrac of invalid events. Events are sent in
// stream order: event time advances with the send position, with jitter of
// up to 20 seconds (out of order within the allowed lateness).
func newWorkload(seed uint64, n, ads, minutes int, start time.Time, dupFrac, lateFrac, invalidFrac float64, batch int) *workload {
	rng := rand.New(rand.NewPCG(seed, 1))
	zipf := rand.NewZipf(rng, 1.1, 1, uint64(ads-1))
	users := 20000
	w := &workload{invalidAt: map[*clickaggv1.ClickEvent]string{}, firstMin: start.Unix() / 60, minutes: minutes}
	span := time.Duration(minutes) * time.Minute
	var stream []*clickaggv1.ClickEvent
	for i := range n {
		// s is the stream's event time at this position.
		s := start.Add(time.Duration(float64(span) * float64(i) / float64(n)))
		t := s.Add(-time.Duration(rng.Int64N(int64(20 * time.Second))))
		if rng.Float64() < lateFrac && s.Sub(start) > 3*time.Minute {
			// Its minute completed at least a minute ago.
			t = s.Add(-time.Duration(90+rng.IntN(90)) * time.Second)
			w.late++
		}
		if t.Before(start) {
			t = start
		}
		u := rng.IntN(users)
		ip := fmt.Sprintf("192.0.2.%d", u%200)
		if u%3 == 0 {
			ip = fmt.Sprintf("2001:db8::%x", u%500)
		}
		ev := &clickaggv1.ClickEvent{
			EventId:   "e2e-" + strconv.FormatUint(seed, 36) + "-" + strconv.Itoa(i),
			AdId:      "ad-" + strconv.FormatUint(zipf.Uint64(), 10),
			ClickTime: timestamppb.New(t.Truncate(time.Millisecond)),
			UserId:    "user-" + strconv.Itoa(u),
			Ip:        ip,
			Country:   testCountries[min(rng.IntN(len(testCountries)), rng.IntN(len(testCountries)))],
		}
		w.unique = append(w.unique, click{ev: ev, minute: t.Unix() / 60})
		stream = append(stream, ev)
		if rng.Float64() < dupFrac && len(w.unique) > 1 {
			// A retry of an earlier event, with the same fields.
			prev := w.unique[rng.IntN(len(w.unique))].ev
			stream = append(stream, prev)
			w.dups++
		}
		if rng.Float64() < invalidFrac {
			bad, reason := makeInvalid(rng, s, i)
			w.invalidAt[bad] = reason
			stream = append(stream, bad)
		}
	}
	for c := range slices.Chunk(stream, batch) {
		w.batches = append(w.batches, c)
	}
	return w
}

// makeInvalid returns an invalid event of one of several kinds and the word
// its rejection reason must contain.
func makeInvalid(rng *rand.Rand, s time.Time, i int) (*clickaggv1.ClickEvent, string) {
	ev := &clickaggv1.ClickEvent{
		EventId:   "bad-" + strconv.Itoa(i),
		AdId:      "ad-1",
		ClickTime: timestamppb.New(s),
		UserId:    "user-1",
		Ip:        "192.0.2.1",
		Country:   "US",
	}
	switch rng.IntN(7) {
	case 0:
		ev.AdId = ""
		return ev, "ad_id"
	case 1:
		ev.EventId = ""
		return ev, "event_id"
	case 2:
		ev.UserId = ""
		return ev, "user_id"
	case 3:
		ev.Ip = "300.1.2.3"
		return ev, "ip"
	case 4:
		ev.Country = "XX"
		return ev, "country"
	case 5:
		ev.ClickTime = timestamppb.New(time.Now().Add(2 * time.Hour))
		return ev, "click_time"
	default:
		ev.ClickTime = timestamppb.New(time.Now().Add(-8 * time.Hour))
		return ev, "click_time"
	}
}

// truth is the ground truth of a workload, computed by brute force.
type truth struct {
	clicks []click
}

type adMinute struct {
	ad     string
	minute int64
}

func (tr *truth) counts() map[adMinute]int64 {
	m := map[adMinute]int64{}
	for _, c := range tr.clicks {
		m[adMinute{c.ev.AdId, c.minute}]++
	}
	return m
}

func matches(ev *clickaggv1.ClickEvent, f *clickaggv1.Filter) bool {
	if f == nil {
		return true
	}
	return (f.Country == "" || f.Country == ev.Country) && (f.Ip == "" || f.Ip == ev.Ip) && (f.UserId == "" || f.UserId == ev.UserId)
}

// top returns the exact top n over [from, to) minutes with filter f.
func (tr *truth) top(from, to int64, n int, f *clickaggv1.Filter) []*clickaggv1.AdCount {
	m := map[string]int64{}
	for _, c := range tr.clicks {
		if c.minute >= from && c.minute < to && matches(c.ev, f) {
			m[c.ev.AdId]++
		}
	}
	out := make([]*clickaggv1.AdCount, 0, len(m))
	for ad, n := range m {
		out = append(out, &clickaggv1.AdCount{AdId: ad, Count: n})
	}
	slices.SortFunc(out, func(a, b *clickaggv1.AdCount) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		if a.AdId < b.AdId {
			return -1
		}
		if a.AdId > b.AdId {
			return 1
		}
		return 0
	})
	return out[:min(n, len(out))]
}

func (tr *truth) count(ad string, from, to int64, f *clickaggv1.Filter) int64 {
	var n int64
	for _, c := range tr.clicks {
		if c.ev.AdId == ad && c.minute >= from && c.minute < to && matches(c.ev, f) {
			n++
		}
	}
	return n
}
