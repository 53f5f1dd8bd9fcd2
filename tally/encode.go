package tally

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of clickaggv1.MinuteState and clickaggv1.Cell.
const (
	fieldMinuteMinute   protowire.Number = 1
	fieldMinuteRevision protowire.Number = 2
	fieldMinuteCells    protowire.Number = 3
	fieldMinuteHashes   protowire.Number = 4

	fieldCellAd      protowire.Number = 1
	fieldCellCountry protowire.Number = 2
	fieldCellIP      protowire.Number = 3
	fieldCellUser    protowire.Number = 4
	fieldCellCount   protowire.Number = 5
)

// encodeMinute encodes m as a clickaggv1.MinuteState, byte for byte what
// deterministic proto.Marshal of the same message gives (a test checks
// that), without building a message per cell: snapshots re-encode the
// filling minutes every time, and this is most of their cost.
func (p *Partition) encodeMinute(m *minute) []byte {
	order := make([]int32, len(m.cells.keys))
	for i := range order {
		order[i] = int32(i)
	}
	ads, attrs := p.ads.strs, p.attrs.strs
	keys := m.cells.keys
	slices.SortFunc(order, func(i, j int32) int {
		a, b := keys[i], keys[j]
		if a.ad != b.ad {
			return strings.Compare(ads[a.ad], ads[b.ad])
		}
		if a.country != b.country {
			return strings.Compare(attrs[a.country], attrs[b.country])
		}
		if a.ip != b.ip {
			return strings.Compare(attrs[a.ip], attrs[b.ip])
		}
		return strings.Compare(attrs[a.user], attrs[b.user])
	})
	var hashes []uint64
	if m.seen != nil {
		hashes = m.seen.appendTo(make([]uint64, 0, m.seen.len()))
		slices.Sort(hashes)
	}

	var b []byte
	if m.start != 0 {
		b = protowire.AppendTag(b, fieldMinuteMinute, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.start))
	}
	if m.revision != 0 {
		b = protowire.AppendTag(b, fieldMinuteRevision, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.revision))
	}
	for _, i := range order {
		k := keys[i]
		ad, country, ip, user := ads[k.ad], attrs[k.country], attrs[k.ip], attrs[k.user]
		count := m.cells.counts[i]
		b = protowire.AppendTag(b, fieldMinuteCells, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(stringFieldSize(fieldCellAd, ad)+
			stringFieldSize(fieldCellCountry, country)+
			stringFieldSize(fieldCellIP, ip)+
			stringFieldSize(fieldCellUser, user)+
			varintFieldSize(fieldCellCount, count)))
		b = appendStringField(b, fieldCellAd, ad)
		b = appendStringField(b, fieldCellCountry, country)
		b = appendStringField(b, fieldCellIP, ip)
		b = appendStringField(b, fieldCellUser, user)
		if count != 0 {
			b = protowire.AppendTag(b, fieldCellCount, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(count))
		}
	}
	if len(hashes) > 0 {
		b = protowire.AppendTag(b, fieldMinuteHashes, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(8*len(hashes)))
		for _, h := range hashes {
			b = protowire.AppendFixed64(b, h)
		}
	}
	return b
}

func stringFieldSize(n protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(n) + protowire.SizeBytes(len(s))
}

func varintFieldSize(n protowire.Number, v int64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(n) + protowire.SizeVarint(uint64(v))
}

func appendStringField(b []byte, n protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendString(b, s)
}
