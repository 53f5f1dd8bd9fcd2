package bench

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// Workload is the shape of the synthetic clicks. The same Workload, seed
// and sequence of sweep times always produce the same events, which is how
// the baselines and the ground truth see exactly what the cluster saw.
type Workload struct {
	// Ads is the number of distinct ads; ad popularity is Zipf with
	// exponent ZipfS (ad 0 is the most clicked).
	Ads   int
	ZipfS float64
	// Countries is how many of the countries list are used; country
	// popularity falls as 1/rank.
	Countries int
	// Users and IPs are the sizes of the user and address spaces; each user
	// clicks from one address, and several users share an address.
	Users, IPs int
	// Duplicates is the fraction of events that repeat an earlier event
	// exactly (same event_id and fields), as a client retry would.
	Duplicates float64
	// Late is the fraction of events whose click time lies LateMin to
	// LateMax behind the sweep, in minutes that have already completed.
	Late float64
	// Seed makes the sequence reproducible.
	Seed uint64
}

// How far behind the sweep late events are.
const (
	LateMin = 2 * 60_000  // ms
	LateMax = 10 * 60_000 // ms
	// jitterMs: on-time events are up to this much older than the sweep,
	// the small disorder of clicks that travel different paths.
	jitterMs = 1000
	// recentEvents is how many recent events a duplicate may repeat.
	recentEvents = 8192
	ppm          = 1_000_000
)

// Validate checks the workload.
func (w Workload) Validate() error {
	switch {
	case w.Ads < 1:
		return errors.New("-bench.ads: must be at least 1")
	case w.ZipfS <= 1:
		return errors.New("-bench.zipf-s: must be greater than 1")
	case w.Countries < 1 || w.Countries > len(Countries):
		return fmt.Errorf("-bench.countries: must be in [1, %d]", len(Countries))
	case w.Users < 1 || w.IPs < 1:
		return errors.New("-bench.users and -bench.ips: must be at least 1")
	case w.Duplicates < 0 || w.Late < 0 || w.Duplicates+w.Late > 0.5:
		return errors.New("-bench.duplicates and -bench.late: must not be negative, and together at most 0.5")
	}
	return nil
}

// Kind says how an event was made.
type Kind uint8

// Kinds of events.
const (
	Fresh     Kind = iota // a new click near the sweep time
	Duplicate             // an exact repeat of a recent event
	Late                  // a new click minutes behind the sweep
	Probe                 // a freshness probe (never made by Generator)
)

// Event is one click in compact form; Names spells its fields out.
type Event struct {
	ID      uint64 // event id number; a duplicate repeats its original's
	TimeMs  int64  // click time, Unix ms
	Ad      uint32 // ad number; below Workload.Ads, 0 the most popular
	User    uint32
	IP      uint32 // address number, below Workload.IPs
	Country uint8  // index into Countries
	Kind    Kind
}

// Minute is the Unix minute of the click.
func (e Event) Minute() int64 { return floorDiv(e.TimeMs, 60_000) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// Generator makes the events of a Workload. It is deterministic: the same
// Workload and the same sequence of Next calls give the same events.
type Generator struct {
	w       Workload
	spanMs  int64 // events are never older than this
	rng     *rand.Rand
	zipf    *rand.Zipf
	country []uint64 // cumulative country weights
	total   uint64
	dupPPM  int64
	latePPM int64
	dupAcc  int64
	lateAcc int64
	seq     uint64
	recent  []Event
	next    int // ring position in recent
}

// NewGenerator returns a generator whose events are never older than
// spanStartMs (late events are clamped to it). w must be valid.
func NewGenerator(w Workload, spanStartMs int64) *Generator {
	rng := rand.New(rand.NewPCG(w.Seed, w.Seed^0x9e3779b97f4a7c15))
	g := &Generator{
		w:       w,
		spanMs:  spanStartMs,
		rng:     rng,
		zipf:    rand.NewZipf(rng, w.ZipfS, 1, uint64(w.Ads-1)),
		dupPPM:  int64(math.Round(w.Duplicates * ppm)),
		latePPM: int64(math.Round(w.Late * ppm)),
		recent:  make([]Event, 0, recentEvents),
	}
	// Offset the late accumulator by half a period, so that with equal
	// fractions the two kinds never fall on the same event.
	g.lateAcc = ppm / 2
	for i := range w.Countries {
		// Weight 1/(rank+1), scaled to integers.
		g.total += uint64(1e9 / float64(i+1))
		g.country = append(g.country, g.total)
	}
	return g
}

// Next returns the next event with the sweep at nowMs. Exactly
// round(n·Duplicates) of every n events are duplicates and round(n·Late)
// are late, up to one event of rounding: the kinds come from accumulators,
// not dice, so the fractions are exact.
func (g *Generator) Next(nowMs int64) Event {
	g.dupAcc += g.dupPPM
	g.lateAcc += g.latePPM
	if g.dupAcc >= ppm && len(g.recent) > 0 {
		g.dupAcc -= ppm
		e := g.recent[g.rng.IntN(len(g.recent))]
		e.Kind = Duplicate
		return e
	}
	g.seq++
	e := Event{
		ID:      g.seq,
		Ad:      uint32(g.zipf.Uint64()),
		User:    uint32(g.rng.IntN(g.w.Users)),
		Country: g.pickCountry(),
		Kind:    Fresh,
		TimeMs:  nowMs - g.rng.Int64N(jitterMs),
	}
	e.IP = uint32(mix(uint64(e.User)) % uint64(g.w.IPs))
	if g.lateAcc >= ppm {
		g.lateAcc -= ppm
		e.Kind = Late
		e.TimeMs = nowMs - LateMin - g.rng.Int64N(LateMax-LateMin)
	}
	e.TimeMs = max(e.TimeMs, g.spanMs)
	if len(g.recent) < recentEvents {
		g.recent = append(g.recent, e)
	} else {
		g.recent[g.next] = e
		g.next = (g.next + 1) % recentEvents
	}
	return e
}

func (g *Generator) pickCountry() uint8 {
	x := g.rng.Uint64N(g.total)
	lo, hi := 0, len(g.country)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if g.country[mid] > x {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return uint8(lo)
}

// mix is a 64-bit finalizer (splitmix64): it spreads users over addresses
// with no pattern the aggregator could benefit from.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Names spells events out as the cluster sees them. Tag makes one run's
// ad and event ids distinct from any other run's.
type Names struct {
	Tag string
}

// AppendEventID appends e's event_id.
func (n Names) AppendEventID(b []byte, e Event) []byte {
	b = append(b, n.Tag...)
	// A base-36 number never holds a dot, so probe ids cannot collide with
	// the workload's.
	if e.Kind == Probe {
		b = append(b, ".p"...)
	} else {
		b = append(b, '-')
	}
	return strconv.AppendUint(b, e.ID, 36)
}

// AppendAdID appends the ad_id of ad number ad.
func (n Names) AppendAdID(b []byte, ad uint32) []byte {
	b = append(b, "ad-"...)
	b = append(b, n.Tag...)
	b = append(b, '-')
	return strconv.AppendUint(b, uint64(ad), 10)
}

// AppendUserID appends the user_id of user number u.
func (n Names) AppendUserID(b []byte, u uint32) []byte {
	b = append(b, "user-"...)
	return strconv.AppendUint(b, uint64(u), 10)
}

// AppendIP appends address number i in its canonical dotted form. The
// mapping is a bijection of uint32 (an odd multiplier), so distinct numbers
// are distinct addresses.
func AppendIP(b []byte, i uint32) []byte {
	a := i*2654435761 + 0x0b000000
	b = strconv.AppendUint(b, uint64(a>>24), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(a>>16&255), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(a>>8&255), 10)
	b = append(b, '.')
	return strconv.AppendUint(b, uint64(a&255), 10)
}

// AdID returns the ad_id of ad number ad.
func (n Names) AdID(ad uint32) string { return string(n.AppendAdID(nil, ad)) }

// LogEvent returns e as the router writes it into the partition log.
func (n Names) LogEvent(e Event) *clickaggv1.LogEvent {
	return &clickaggv1.LogEvent{
		EventId:     string(n.AppendEventID(nil, e)),
		AdId:        string(n.AppendAdID(nil, e.Ad)),
		ClickTimeMs: e.TimeMs,
		UserId:      string(n.AppendUserID(nil, e.User)),
		Ip:          string(AppendIP(nil, e.IP)),
		Country:     Countries[e.Country],
	}
}

// ClickEvent returns e as a client sends it.
func (n Names) ClickEvent(e Event) *clickaggv1.ClickEvent {
	le := n.LogEvent(e)
	return &clickaggv1.ClickEvent{
		EventId:   le.EventId,
		AdId:      le.AdId,
		ClickTime: timestampMs(e.TimeMs),
		UserId:    le.UserId,
		Ip:        le.Ip,
		Country:   le.Country,
	}
}

// Field numbers of clickaggv1.IngestStreamRequest, ClickEvent and
// google.protobuf.Timestamp.
const (
	fieldRequestEvents protowire.Number = 1
	fieldEventID       protowire.Number = 1
	fieldAdID          protowire.Number = 2
	fieldClickTime     protowire.Number = 3
	fieldUserID        protowire.Number = 4
	fieldIP            protowire.Number = 5
	fieldCountry       protowire.Number = 6
	fieldSeconds       protowire.Number = 1
	fieldNanos         protowire.Number = 2
)

// Encoder writes IngestStreamRequests straight to wire bytes, what
// proto.Marshal of the same message gives (a test checks that), without
// building a message or a string per field: the load generator shares the
// machine's cores with the cluster it measures, so it must be cheap.
type Encoder struct {
	Names
	ev, s []byte
}

// AppendRequest appends an encoded IngestStreamRequest holding evs.
func (c *Encoder) AppendRequest(b []byte, evs []Event) []byte {
	for _, e := range evs {
		ev := c.ev[:0]
		c.s = c.AppendEventID(c.s[:0], e)
		ev = appendBytes(ev, fieldEventID, c.s)
		c.s = c.AppendAdID(c.s[:0], e.Ad)
		ev = appendBytes(ev, fieldAdID, c.s)
		c.s = c.s[:0]
		sec, nanos := floorDiv(e.TimeMs, 1000), (e.TimeMs-floorDiv(e.TimeMs, 1000)*1000)*1e6
		if sec != 0 {
			c.s = protowire.AppendTag(c.s, fieldSeconds, protowire.VarintType)
			c.s = protowire.AppendVarint(c.s, uint64(sec))
		}
		if nanos != 0 {
			c.s = protowire.AppendTag(c.s, fieldNanos, protowire.VarintType)
			c.s = protowire.AppendVarint(c.s, uint64(nanos))
		}
		ev = protowire.AppendTag(ev, fieldClickTime, protowire.BytesType)
		ev = protowire.AppendBytes(ev, c.s)
		c.s = c.AppendUserID(c.s[:0], e.User)
		ev = appendBytes(ev, fieldUserID, c.s)
		c.s = AppendIP(c.s[:0], e.IP)
		ev = appendBytes(ev, fieldIP, c.s)
		c.s = append(c.s[:0], Countries[e.Country]...)
		ev = appendBytes(ev, fieldCountry, c.s)
		b = protowire.AppendTag(b, fieldRequestEvents, protowire.BytesType)
		b = protowire.AppendBytes(b, ev)
		c.ev = ev
	}
	return b
}

func appendBytes(b []byte, n protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}
