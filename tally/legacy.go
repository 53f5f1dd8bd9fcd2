package tally

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// legacyMinute converts a minute stored by the previous build, an encoded
// clickaggv1.MinuteState with the ip and user_id of each cell as text, to
// minute format 1, so that a cluster upgrades without losing the state its
// trimmed log no longer holds. It reports false if enc is not such a
// message. The events of a row follow the order of its cells, which was
// fixed by their content, so the conversion is deterministic.
func legacyMinute(enc []byte) ([]byte, bool, error) {
	var ms clickaggv1.MinuteState
	if err := proto.Unmarshal(enc, &ms); err != nil {
		return nil, false, nil
	}
	type cell struct {
		h           uint64
		ad, country string
		user, ip, n uint64
	}
	cells := make([]cell, 0, len(ms.GetCells()))
	for _, c := range ms.GetCells() {
		if c.GetCount() <= 0 || c.GetCount() > math.MaxUint32 {
			return nil, true, fmt.Errorf("%w: cell of ad %q has count %d", ErrCorrupt, c.GetAdId(), c.GetCount())
		}
		cells = append(cells, cell{
			h: xxhash.Sum64String(c.GetAdId()), ad: c.GetAdId(), country: c.GetCountry(),
			user: hashField(c.GetUserId()), ip: hashField(c.GetIp()), n: uint64(c.GetCount()),
		})
	}
	slices.SortStableFunc(cells, func(a, b cell) int {
		return cmp.Or(cmp.Compare(a.h, b.h), strings.Compare(a.ad, b.ad), strings.Compare(a.country, b.country))
	})
	var countries []string
	for _, c := range cells {
		countries = append(countries, c.country)
	}
	slices.Sort(countries)
	countries = slices.Compact(countries)

	// Format 0's hashes are of event_ids alone, as format 1's.
	out := []byte{minuteFormatLegacy}
	out = binary.AppendVarint(out, ms.GetMinute())
	out = binary.AppendUvarint(out, uint64(ms.GetRevision()))
	hashes := ms.GetEventHashes()
	if len(hashes) > 0 || len(cells) == 0 {
		out = append(out, 1)
	} else {
		out = append(out, 0)
	}
	out = binary.AppendUvarint(out, uint64(len(countries)))
	for _, c := range countries {
		out = appendString(out, c)
	}
	var ads []string
	for i, c := range cells {
		if i == 0 || cells[i-1].ad != c.ad {
			ads = append(ads, c.ad)
		}
	}
	out = binary.AppendUvarint(out, uint64(len(ads)))
	for _, a := range ads {
		out = appendString(out, a)
	}
	var rows []byte
	var users, ips []uint64
	nRows := 0
	for i := 0; i < len(cells); {
		j := i
		var n uint64
		for ; j < len(cells) && cells[j].ad == cells[i].ad && cells[j].country == cells[i].country; j++ {
			n += cells[j].n
			for range cells[j].n {
				users = append(users, cells[j].user)
				ips = append(ips, cells[j].ip)
			}
		}
		if n > math.MaxUint32 {
			return nil, true, fmt.Errorf("%w: ad %q has %d clicks in one country", ErrCorrupt, cells[i].ad, n)
		}
		step := uint64(0)
		if i > 0 && cells[i-1].ad != cells[i].ad {
			step = 1
		}
		c, _ := slices.BinarySearch(countries, cells[i].country)
		rows = binary.AppendUvarint(rows, step)
		rows = binary.AppendUvarint(rows, uint64(c))
		rows = binary.AppendUvarint(rows, n)
		nRows++
		i = j
	}
	out = binary.AppendUvarint(out, uint64(nRows))
	out = append(out, rows...)
	out = appendFixed(out, users)
	out = appendFixed(out, ips)
	if len(hashes) > 0 || len(cells) == 0 {
		out = binary.AppendUvarint(out, uint64(len(hashes)))
		out = appendFixed(out, hashes)
	}
	return out, true, nil
}
