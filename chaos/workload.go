package chaos

import (
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// countries are the workload's countries; index 0 is the most frequent
// (a country is the smaller of two uniform draws).
var countries = []string{"US", "IN", "BR", "DE", "GB", "FR", "JP", "MX", "NG", "ID", "CA", "AU", "ES", "IT", "KR", "TR", "PL", "AR", "ZA", "SE"}

// Sampled values: clicks of these users and ips are kept one by one in
// the truth, so that filtered answers can be checked exactly without
// keeping every click.
const (
	sampleUsers = 50
	sampleIPs   = 50
	// sampleShare is the share of clicks from the sampled users (and, in
	// a separate draw, ips): enough for filtered counts that are not all 0.
	sampleShare = 0.04
	users       = 200_000
	ips         = 100_000
)

// Shares of the stream, per unique valid click.
const (
	dupShare     = 0.04  // a re-send of an earlier click (same fields)
	lateShare    = 0.01  // a click whose minute completed over a minute ago
	invalidShare = 0.003 // an invalid event, refused with a reason
	shipShare    = 0.10  // written to the shipper's log instead of sent
)

// workload generates the seeded click stream on the fly: click i is a
// pure function of (seed, i, start, span), so that duplicates are made by
// generating an earlier click again instead of keeping 10M protos.
//
// Click i's stream time is start + span·i/n; its click_time is that minus
// up to 20s of jitter (out of order within the aggregators' lateness) or,
// for a late click, 75s to 150s (its minute is complete by then). The
// runner sends click i no earlier than its stream time, so event time
// follows the wall clock and minutes complete during the run.
type workload struct {
	seed  uint64
	n     int
	ads   int
	start time.Time
	span  time.Duration
}

// click is one generated click in the compact form the truth keeps.
type click struct {
	i       int
	ad      int // ad id "ad-<ad>"; 0 is the hottest
	t       time.Time
	user    int // user id "user-<user>"; < sampleUsers: sampled
	ip      int // index of the ip; < sampleIPs: sampled
	country int
	late    bool
	shipped bool // written to the shipper's log, not sent over gRPC
	// dupOf, when >= 0, asks for click dupOf to be sent again after
	// this one; invalid, when != "", for an invalid event to follow,
	// whose rejection reason must contain it.
	dupOf   int
	invalid string
}

func newWorkload(seed uint64, n int, start time.Time, span time.Duration) *workload {
	return &workload{seed: seed, n: n, ads: adsFor(n), start: start.Truncate(time.Millisecond), span: span}
}

// adsFor is the number of distinct ads of a workload of n clicks: enough
// for a long Zipf tail, few enough that the exact check of every (ad,
// minute) stays a few hundred thousand queries.
func adsFor(n int) int {
	return max(1000, min(20_000, n/50))
}

// hotAd is the workload's hottest ad (Zipf's 0), the target of split and
// unsplit faults.
const hotAd = "ad-0"

func adID(ad int) string { return "ad-" + strconv.Itoa(ad) }

// at is the stream time of click i.
func (w *workload) at(i int) time.Time {
	return w.start.Add(time.Duration(float64(w.span) * float64(i) / float64(w.n)))
}

// click generates click i.
func (w *workload) click(i int) click {
	rng := rand.New(rand.NewPCG(w.seed, uint64(i)))
	zipf := rand.NewZipf(rng, 1.1, 1, uint64(w.ads-1))
	s := w.at(i)
	c := click{i: i, ad: int(zipf.Uint64()), dupOf: -1}
	t := s.Add(-time.Duration(rng.Int64N(int64(20 * time.Second))))
	if rng.Float64() < lateShare {
		if room := s.Sub(w.start); room > 75*time.Second {
			back := 75*time.Second + time.Duration(rng.Int64N(int64(min(75*time.Second, room-75*time.Second)+1)))
			t, c.late = s.Add(-back), true
		}
	}
	if t.Before(w.start) {
		t = w.start
	}
	c.t = t.Truncate(time.Millisecond)
	if rng.Float64() < sampleShare {
		c.user = rng.IntN(sampleUsers)
	} else {
		c.user = sampleUsers + rng.IntN(users-sampleUsers)
	}
	if rng.Float64() < sampleShare {
		c.ip = rng.IntN(sampleIPs)
	} else {
		c.ip = sampleIPs + rng.IntN(ips-sampleIPs)
	}
	c.country = min(rng.IntN(len(countries)), rng.IntN(len(countries)))
	c.shipped = rng.Float64() < shipShare
	if rng.Float64() < dupShare && i > 0 {
		// A recent click: a client's retry comes soon after the original.
		c.dupOf = i - 1 - rng.IntN(min(i, 20_000))
	}
	if rng.Float64() < invalidShare {
		c.invalid = invalidKinds[rng.IntN(len(invalidKinds))]
	}
	return c
}

// ipString is the address of ip index k: a third are IPv6.
func ipString(k int) string {
	if k%3 == 0 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 13: byte(k >> 16), 14: byte(k >> 8), 15: byte(k)})
		return a.String()
	}
	return netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)}).String()
}

func (w *workload) eventID(i int) string {
	return "chaos-" + strconv.FormatUint(w.seed, 36) + "-" + strconv.Itoa(i)
}

// event is click c as sent over gRPC.
func (w *workload) event(c click) *clickaggv1.ClickEvent {
	return &clickaggv1.ClickEvent{
		EventId:   w.eventID(c.i),
		AdId:      adID(c.ad),
		ClickTime: timestamppb.New(c.t),
		UserId:    "user-" + strconv.Itoa(c.user),
		Ip:        ipString(c.ip),
		Country:   countries[c.country],
	}
}

// line is click c as a CSV line of the shipper's log (ad_id,
// click_timestamp in epoch milliseconds, user_id, ip, country); the
// shipper gives it an event id from its place in the file.
func (w *workload) line(c click) string {
	return adID(c.ad) + "," + strconv.FormatInt(c.t.UnixMilli(), 10) + ",user-" + strconv.Itoa(c.user) + "," + ipString(c.ip) + "," + countries[c.country] + "\n"
}

// invalidKinds are the kinds of invalid event, named by the word their
// rejection reason must contain.
var invalidKinds = []string{"ad_id", "event_id", "user_id", "ip", "country", "click_time+", "click_time-"}

// invalidEvent is the invalid event of kind kind that follows click i,
// and the word its rejection reason must contain.
func (w *workload) invalidEvent(i int, kind string, now time.Time) (*clickaggv1.ClickEvent, string) {
	ev := &clickaggv1.ClickEvent{
		EventId:   "chaos-bad-" + strconv.Itoa(i),
		AdId:      "ad-1",
		ClickTime: timestamppb.New(w.at(i)),
		UserId:    "user-1",
		Ip:        "192.0.2.1",
		Country:   "US",
	}
	switch kind {
	case "ad_id":
		ev.AdId = ""
	case "event_id":
		ev.EventId = ""
	case "user_id":
		ev.UserId = ""
	case "ip":
		ev.Ip = "300.1.2.3"
	case "country":
		ev.Country = "XX"
	case "click_time+":
		ev.ClickTime = timestamppb.New(now.Add(2 * time.Hour))
		return ev, "click_time"
	case "click_time-":
		ev.ClickTime = timestamppb.New(now.Add(-8 * time.Hour))
		return ev, "click_time"
	}
	return ev, kind
}
