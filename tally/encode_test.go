package tally

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// referenceEncoding encodes m the plain way, from its events with their
// strings, independently of merged and encodeMinute: it is the reference
// the encoder is checked against.
func (p *Partition) referenceEncoding(m *minute) []byte {
	type event struct {
		ad, country string
		user, ip    uint64
	}
	var evs []event
	e := 0
	for r, k := range m.base.rowKeys() {
		for range m.base.count(r) {
			evs = append(evs, event{p.ads.str(keyAd(k)), p.countries.str(keyCountry(k)), m.base.users[e], m.base.ips[e]})
			e++
		}
	}
	hashes := slices.Clone(m.base.hashes)
	if d := m.delta; d != nil {
		for i, k := range d.keys {
			evs = append(evs, event{p.ads.str(keyAd(k)), p.countries.str(keyCountry(k)), d.users[i], d.ips[i]})
		}
		hashes = d.seen.appendTo(hashes)
	}
	slices.Sort(hashes)
	slices.SortStableFunc(evs, func(a, b event) int {
		return cmp.Or(cmp.Compare(xxhash.Sum64String(a.ad), xxhash.Sum64String(b.ad)),
			strings.Compare(a.ad, b.ad), strings.Compare(a.country, b.country))
	})
	var ads, countries []string
	for _, ev := range evs {
		if len(ads) == 0 || ads[len(ads)-1] != ev.ad {
			ads = append(ads, ev.ad)
		}
		if !slices.Contains(countries, ev.country) {
			countries = append(countries, ev.country)
		}
	}
	slices.Sort(countries)
	b := []byte{2}
	if m.legacyIDs {
		b[0] = 1
	}
	b = binary.AppendVarint(b, m.start)
	b = binary.AppendUvarint(b, uint64(m.revision))
	if m.frozen {
		b = append(b, 0)
	} else {
		b = append(b, 1)
	}
	b = binary.AppendUvarint(b, uint64(len(countries)))
	for _, c := range countries {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	b = binary.AppendUvarint(b, uint64(len(ads)))
	for _, a := range ads {
		b = binary.AppendUvarint(b, uint64(len(a)))
		b = append(b, a...)
	}
	var rows []byte
	nRows := 0
	for i := 0; i < len(evs); {
		j := i
		for j < len(evs) && evs[j].ad == evs[i].ad && evs[j].country == evs[i].country {
			j++
		}
		step := uint64(0)
		if i > 0 && evs[i-1].ad != evs[i].ad {
			step = 1
		}
		rows = binary.AppendUvarint(rows, step)
		rows = binary.AppendUvarint(rows, uint64(slices.Index(countries, evs[i].country)))
		rows = binary.AppendUvarint(rows, uint64(j-i))
		nRows++
		i = j
	}
	b = binary.AppendUvarint(b, uint64(nRows))
	b = append(b, rows...)
	for _, ev := range evs {
		b = binary.LittleEndian.AppendUint64(b, ev.user)
	}
	for _, ev := range evs {
		b = binary.LittleEndian.AppendUint64(b, ev.ip)
	}
	if !m.frozen {
		b = binary.AppendUvarint(b, uint64(len(hashes)))
		for _, h := range hashes {
			b = binary.LittleEndian.AppendUint64(b, h)
		}
	}
	return b
}

// TestEncodeMinuteMatchesReference checks the encoder against the plain
// reference on every minute of a random log, filling, complete (merged or
// with a delta of late events) and frozen, and on edge cases: minute 0,
// negative minutes, empty strings, non-ASCII strings, the zero hash. Every
// encoding must also restore to a minute that encodes the same.
func TestEncodeMinuteMatchesReference(t *testing.T) {
	p := newTestPartition(t, snapOpts)
	entries := genLog(genConfig{seed: 5, events: 20_000, minutes: 12, ads: 300, dupRate: 0.05, sharedIDRate: 0.03})
	var withDelta, merged, frozen int
	check := func() int {
		p.mu.RLock()
		defer p.mu.RUnlock()
		for _, start := range p.order {
			m := p.minutes[start]
			switch {
			case m.frozen:
				frozen++
			case m.delta != nil && len(m.base.ads) > 0:
				withDelta++
			case m.delta == nil:
				merged++
			}
			want := p.referenceEncoding(m)
			got := p.encodeMinute(m)
			if !bytes.Equal(got, want) {
				t.Fatalf("minute %d: encodeMinute differs from the reference (%d vs %d bytes)", start, len(got), len(want))
			}
			q := NewPartition(0, snapOpts)
			r, err := q.restoreMinute(start, got, nil, m.frozen)
			if err != nil {
				t.Fatalf("minute %d: %v", start, err)
			}
			if again := q.encodeMinute(r); !bytes.Equal(again, got) {
				t.Fatalf("minute %d: restored minute encodes differently", start)
			}
		}
		return len(p.order)
	}
	checked := 0
	for i, e := range entries {
		p.Apply(e.id, e.proto())
		if i%20 == 0 {
			checked += check()
		}
	}
	if checked < 50 || withDelta == 0 || merged == 0 || frozen == 0 {
		t.Fatalf("checked only %d minute states (%d with a delta, %d merged, %d frozen)", checked, withDelta, merged, frozen)
	}

	p = newTestPartition(t, testOpts)
	apply(t, p, entry{id: "1-0", clicks: []click{
		{id: "a", ad: "", ms: 0},
		{id: "b", ad: "äd", ms: 1, country: "ÜS", ip: "::1", user: "ユーザー"},
		{id: "c", ad: "x", ms: -1, user: "u"},
		{id: "d", ad: "x", ms: -60_001, country: "US"},
		{id: "e", ad: "x", ms: at(3, 0)},
	}})
	// No short event id is known to hash to 0, so make the one event of
	// this minute have it.
	p.minutes[m0+3].delta.seen = hashSet{}
	p.minutes[m0+3].delta.seen.add(0)
	if got := check(); got != 4 {
		t.Fatalf("checked %d minutes, want 4", got)
	}
}

// TestParseMinuteErrors checks that a minute in an unknown format is refused
// as such, and that a cut-off minute is an error.
func TestParseMinuteErrors(t *testing.T) {
	p := newTestPartition(t, testOpts)
	apply(t, p, entry{id: "1-0", clicks: []click{clickAt("a", at(0, 0)), clickAt("b", at(0, 1))}})
	good := p.Snapshot(1).Minutes[m0]
	if _, err := parseMinute(good); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{nil, {0x08, 0x01}, {3}, append([]byte{3}, good[1:]...)} {
		if _, err := parseMinute(b); !errors.Is(err, ErrFormat) {
			t.Errorf("parseMinute(% x) = %v, want ErrFormat", b, err)
		}
	}
	for n := 1; n < len(good); n++ {
		if _, err := parseMinute(good[:n]); err == nil {
			t.Errorf("parseMinute of the first %d of %d bytes succeeded", n, len(good))
		}
	}
	if _, err := parseMinute(append(slices.Clone(good), 0)); err == nil {
		t.Error("parseMinute with a stray byte succeeded")
	}
}

// rowKeys returns the key of every row of b.
func (b *base) rowKeys() []uint64 {
	var keys []uint64
	r := 0
	for i, ad := range b.ads {
		for end := r + b.rowsOf(i); r < end; r++ {
			keys = append(keys, rowKey(ad, b.country(r)))
		}
	}
	return keys
}

// TestDecodeFixed reads words at every alignment a minute's columns can
// have in a reply, and gives each column a backing array of its own, with
// no room to append into.
func TestDecodeFixed(t *testing.T) {
	want := []uint64{1, 1 << 63, 0x0102030405060708, 0}
	for off := range 8 {
		b := make([]byte, off, off+8*len(want))
		for _, w := range want {
			b = binary.LittleEndian.AppendUint64(b, w)
		}
		got := decodeFixed(b[off:])
		if !slices.Equal(got, want) || cap(got) != len(want) {
			t.Fatalf("offset %d: %v (cap %d), want %v", off, got, cap(got), want)
		}
		b[off] ^= 0xff
		if got[0] != want[0] {
			t.Fatalf("offset %d: the words share the input's memory", off)
		}
	}
	if got := decodeFixed(nil); got == nil || len(got) != 0 {
		t.Fatalf("no words: %#v, want an empty slice", got)
	}
}
