package tally

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// click is one event as the tests see it, with plain strings.
type click struct {
	id, ad            string
	ms                int64
	country, ip, user string
}

func (c click) event() *clickaggv1.LogEvent {
	return &clickaggv1.LogEvent{
		EventId: c.id, AdId: c.ad, ClickTimeMs: c.ms,
		Country: c.country, Ip: c.ip, UserId: c.user,
	}
}

// entry is one log entry of a test log: a batch, a tick, or both.
type entry struct {
	id     string
	clicks []click
	tick   int64
}

func (e entry) proto() *clickaggv1.LogEntry {
	le := &clickaggv1.LogEntry{RouterId: "r1", TickMs: e.tick}
	for _, c := range e.clicks {
		le.Events = append(le.Events, c.event())
	}
	return le
}

// apply applies entries through their wire encoding with ApplyEncoded,
// as the aggregator does, so the test also covers what survives the
// encoding.
func apply(t testing.TB, p *Partition, entries ...entry) {
	t.Helper()
	for _, e := range entries {
		b, err := proto.Marshal(e.proto())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.ApplyEncoded(e.id, b, nil); err != nil {
			t.Fatal(err)
		}
	}
}

var testOpts = Options{
	AllowedLateness: 10 * time.Second,
	DedupHorizon:    5 * time.Minute,
	Retention:       10 * time.Minute,
}

func newTestPartition(t testing.TB, opts Options) *Partition {
	t.Helper()
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	return NewPartition(3, opts)
}

// decodeMinute decodes one minute of a Snap into the message of the old
// format, for tests to inspect: cells of (ad, country, ip, user_id) with
// their ip and user_id as hashes (see hx), and the event hashes.
func decodeMinute(t testing.TB, b []byte) *clickaggv1.MinuteState {
	t.Helper()
	v, err := parseMinute(b)
	if err != nil {
		t.Fatal(err)
	}
	ms := &clickaggv1.MinuteState{Minute: v.start, Revision: v.revision}
	users, ips := decodeFixed(v.users), decodeFixed(v.ips)
	e := 0
	for _, r := range v.rows {
		cells := map[[2]uint64]int64{}
		var order [][2]uint64
		for range r.count {
			k := [2]uint64{ips[e], users[e]}
			if cells[k] == 0 {
				order = append(order, k)
			}
			cells[k]++
			e++
		}
		for _, k := range order {
			ms.Cells = append(ms.Cells, &clickaggv1.Cell{
				AdId: string(v.ads[r.ad]), Country: string(v.countries[r.country]),
				Ip: fmt.Sprintf("%016x", k[0]), UserId: fmt.Sprintf("%016x", k[1]), Count: cells[k],
			})
		}
	}
	slices.SortFunc(ms.Cells, compareCells)
	if v.hasHashes {
		ms.EventHashes = decodeFixed(v.hashes)
	}
	return ms
}

// hx is how decodeMinute shows an ip or user_id: its hash.
func hx(s string) string { return fmt.Sprintf("%016x", hashField(s)) }

// encodeState encodes a message made by decodeMinute, perhaps changed, in
// the minute format: the inverse of decodeMinute. It keeps whatever the
// message holds, valid or not, in the canonical order.
func encodeState(t testing.TB, ms *clickaggv1.MinuteState) []byte {
	t.Helper()
	type row struct{ ad, country string }
	var rows []row
	events := map[row][][2]uint64{}
	counts := map[row]int64{}
	for _, c := range ms.Cells {
		r := row{c.AdId, c.Country}
		if _, ok := counts[r]; !ok {
			rows = append(rows, r)
		}
		counts[r] += c.Count
		var ip, user uint64
		if _, err := fmt.Sscanf(c.Ip+" "+c.UserId, "%x %x", &ip, &user); err != nil {
			t.Fatal(err)
		}
		for range c.Count {
			events[r] = append(events[r], [2]uint64{user, ip})
		}
	}
	cmpAd := func(a, b string) int {
		return cmp.Or(cmp.Compare(xxhash.Sum64String(a), xxhash.Sum64String(b)), strings.Compare(a, b))
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Or(cmpAd(a.ad, b.ad), strings.Compare(a.country, b.country)) })
	var ads, countries []string
	for _, r := range rows {
		if !slices.Contains(ads, r.ad) {
			ads = append(ads, r.ad)
		}
		if !slices.Contains(countries, r.country) {
			countries = append(countries, r.country)
		}
	}
	slices.Sort(countries)
	out := []byte{minuteFormat}
	out = binary.AppendVarint(out, ms.Minute)
	out = binary.AppendUvarint(out, uint64(ms.Revision))
	flags := uint64(0)
	if ms.EventHashes != nil {
		flags = 1
	}
	out = binary.AppendUvarint(out, flags)
	out = binary.AppendUvarint(out, uint64(len(countries)))
	for _, c := range countries {
		out = appendString(out, c)
	}
	out = binary.AppendUvarint(out, uint64(len(ads)))
	for _, a := range ads {
		out = appendString(out, a)
	}
	out = binary.AppendUvarint(out, uint64(len(rows)))
	var users, ips []uint64
	for i, r := range rows {
		step := uint64(0)
		if i > 0 && rows[i-1].ad != r.ad {
			step = 1
		}
		out = binary.AppendUvarint(out, step)
		out = binary.AppendUvarint(out, uint64(slices.Index(countries, r.country)))
		out = binary.AppendUvarint(out, uint64(counts[r]))
		for _, e := range events[r] {
			users = append(users, e[0])
			ips = append(ips, e[1])
		}
	}
	out = appendFixed(out, users)
	out = appendFixed(out, ips)
	if flags == 1 {
		out = binary.AppendUvarint(out, uint64(len(ms.EventHashes)))
		out = appendFixed(out, ms.EventHashes)
	}
	return out
}

func decodeMeta(t testing.TB, b []byte) *clickaggv1.SnapshotMeta {
	t.Helper()
	var m clickaggv1.SnapshotMeta
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// store merges snapshots the way the snapshot store does: later minutes
// overwrite earlier ones and delete their late parts, late parts overwrite
// earlier ones, dropped minutes are deleted with their late parts, the meta
// is replaced.
type store struct {
	meta          []byte
	minutes, late map[int64][]byte
}

func (s *store) save(snap Snap) {
	if s.minutes == nil {
		s.minutes, s.late = map[int64][]byte{}, map[int64][]byte{}
	}
	s.meta = snap.Meta
	for m, b := range snap.Minutes {
		s.minutes[m] = b
		delete(s.late, m)
	}
	maps.Copy(s.late, snap.Late)
	for _, m := range snap.Drop {
		delete(s.minutes, m)
		delete(s.late, m)
	}
}

func (s *store) clone() store {
	return store{meta: slices.Clone(s.meta), minutes: maps.Clone(s.minutes), late: maps.Clone(s.late)}
}

// truthCell is a cell of the ground truth, with plain strings.
type truthCell struct{ ad, country, ip, user string }

// truthClick is a click's identity, written out: the pair (ad_id, event_id).
type truthClick struct{ ad, id string }

// truth recomputes a partition's answers from the rules written out with
// plain maps, independently of the package's data structures.
type truth struct {
	opts      Options
	watermark int64
	offset    string
	stats     Stats
	seen      map[int64]map[truthClick]bool // minute → clicks counted
	cells     map[int64]map[truthCell]int64
	revision  map[int64]int64
}

func newTruth(opts Options) *truth {
	return &truth{opts: opts, seen: map[int64]map[truthClick]bool{}, cells: map[int64]map[truthCell]int64{}, revision: map[int64]int64{}}
}

// floorDiv is floor division written differently from floorMinute.
func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func (tr *truth) apply(e entry) {
	tr.offset = e.id
	for _, c := range e.clicks {
		m := floorDiv(c.ms, 60000)
		end := (m + 1) * 60000
		if end <= tr.watermark-tr.opts.DedupHorizon.Milliseconds() {
			tr.stats.Expired++
			continue
		}
		if tr.seen[m] == nil {
			tr.seen[m] = map[truthClick]bool{}
			tr.cells[m] = map[truthCell]int64{}
		}
		if tr.seen[m][truthClick{c.ad, c.id}] {
			tr.stats.Duplicates++
			continue
		}
		tr.seen[m][truthClick{c.ad, c.id}] = true
		tr.cells[m][truthCell{c.ad, c.country, c.ip, c.user}]++
		tr.stats.EventsApplied++
		if end <= tr.watermark {
			tr.stats.Late++
			tr.revision[m]++
		}
	}
	if e.tick != 0 && e.tick-tr.opts.AllowedLateness.Milliseconds() > tr.watermark {
		tr.watermark = e.tick - tr.opts.AllowedLateness.Milliseconds()
	}
}

// inMemory reports whether minute m is still queryable.
func (tr *truth) inMemory(m int64) bool {
	_, ok := tr.cells[m]
	return ok && (m+1)*60000 > tr.watermark-tr.opts.Retention.Milliseconds()
}

func (tr *truth) minutesInMemory() []int64 {
	var out []int64
	for m := range tr.cells {
		if tr.inMemory(m) {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}

func (f Filter) matches(c truthCell) bool {
	return (f.Country == "" || f.Country == c.country) &&
		(f.IP == "" || f.IP == c.ip) &&
		(f.UserID == "" || f.UserID == c.user)
}

func (tr *truth) perAd(from, to int64, f Filter) map[string]int64 {
	out := map[string]int64{}
	for m, cells := range tr.cells {
		if m < from || m >= to || !tr.inMemory(m) {
			continue
		}
		for c, n := range cells {
			if f.matches(c) {
				out[c.ad] += n
			}
		}
	}
	return out
}

func (tr *truth) top(from, to int64, n int, f Filter) []AdCount {
	return topOf(tr.perAd(from, to, f), n)
}

// topOf ranks the ads of perAd and returns the first n.
func topOf(perAd map[string]int64, n int) []AdCount {
	var all []AdCount
	for ad, c := range perAd {
		all = append(all, AdCount{AdID: ad, Count: c})
	}
	slices.SortFunc(all, func(a, b AdCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.AdID, b.AdID))
	})
	if len(all) > n {
		all = all[:n]
	}
	return all
}

// fullMinutes encodes every minute in memory, clean or not.
func fullMinutes(p *Partition) map[int64][]byte {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := map[int64][]byte{}
	for _, m := range p.order {
		out[m] = p.encodeMinute(p.minutes[m])
	}
	return out
}

func compareCells(a, b *clickaggv1.Cell) int {
	for _, c := range [][2]string{{a.AdId, b.AdId}, {a.Country, b.Country}, {a.Ip, b.Ip}, {a.UserId, b.UserId}} {
		if c := strings.Compare(c[0], c[1]); c != 0 {
			return c
		}
	}
	return 0
}
