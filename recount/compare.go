package recount

import (
	"cmp"
	"slices"
	"strings"

	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/tally"
)

// Mismatch is a row of the history that differs from its recount: one
// (minute, ad, country) of a partition.
type Mismatch struct {
	Minute    int64 // Unix minute
	AdID      string
	Country   string
	Served    int64 // clicks in the history file served; 0 if it has no such row
	Recounted int64
	// Clicks is true when the counts differ; false when they agree but
	// the clicks do not (their user_id or ip hashes differ): two counts
	// that agree by chance still differ.
	Clicks bool
}

// Compare returns the rows where served (a history file's rows) and
// recounted (a recount's rows of the same minutes) differ, ordered as the
// files are (ad_id, minute, country). Rows compare by their clicks and by
// the multiset of their clicks' user_id and ip hashes; the revision
// (late clicks) is not compared, as it counts when clicks arrived, not
// which.
func Compare(served []history.Row, recounted []tally.FinalRow) []Mismatch {
	type key struct {
		ad      string
		minute  int64
		country string
	}
	cmpKey := func(a, b key) int {
		return cmp.Or(strings.Compare(a.ad, b.ad), cmp.Compare(a.minute, b.minute), strings.Compare(a.country, b.country))
	}
	s := slices.Clone(served)
	slices.SortFunc(s, func(a, b history.Row) int {
		return cmpKey(key{a.AdID, a.Minute, a.Country}, key{b.AdID, b.Minute, b.Country})
	})
	r := slices.Clone(recounted)
	slices.SortFunc(r, func(a, b tally.FinalRow) int {
		return cmpKey(key{a.AdID, a.Minute * 60_000, a.Country}, key{b.AdID, b.Minute * 60_000, b.Country})
	})
	var out []Mismatch
	i, j := 0, 0
	for i < len(s) || j < len(r) {
		var c int
		switch {
		case i == len(s):
			c = 1
		case j == len(r):
			c = -1
		default:
			c = cmpKey(key{s[i].AdID, s[i].Minute, s[i].Country}, key{r[j].AdID, r[j].Minute * 60_000, r[j].Country})
		}
		switch {
		case c < 0:
			out = append(out, Mismatch{Minute: s[i].Minute / 60_000, AdID: s[i].AdID, Country: s[i].Country, Served: s[i].Clicks, Clicks: true})
			i++
		case c > 0:
			out = append(out, Mismatch{Minute: r[j].Minute, AdID: r[j].AdID, Country: r[j].Country, Recounted: r[j].Clicks, Clicks: true})
			j++
		default:
			if s[i].Clicks != r[j].Clicks || !sameClicks(s[i].UserIDHashes, s[i].IPHashes, r[j].UserHashes, r[j].IPHashes) {
				out = append(out, Mismatch{Minute: r[j].Minute, AdID: r[j].AdID, Country: r[j].Country,
					Served: s[i].Clicks, Recounted: r[j].Clicks, Clicks: s[i].Clicks != r[j].Clicks})
			}
			i++
			j++
		}
	}
	return out
}

// sameClicks reports whether two rows' clicks have the same (user, ip)
// hash pairs, in any order.
func sameClicks(u1, ip1, u2, ip2 []uint64) bool {
	if len(u1) != len(u2) || len(ip1) != len(u1) || len(ip2) != len(u2) {
		return false
	}
	pairs := func(u, ip []uint64) [][2]uint64 {
		out := make([][2]uint64, len(u))
		for i := range u {
			out[i] = [2]uint64{u[i], ip[i]}
		}
		slices.SortFunc(out, func(a, b [2]uint64) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
		return out
	}
	return slices.Equal(pairs(u1, ip1), pairs(u2, ip2))
}
