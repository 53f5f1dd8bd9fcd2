package queryd

import (
	"net/netip"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// fuzzTime is a fuzzed optional timestamp.
func fuzzTime(has bool, secs int64, nanos int32) *timestamppb.Timestamp {
	if !has {
		return nil
	}
	return &timestamppb.Timestamp{Seconds: secs, Nanos: nanos}
}

// checkAcceptedFilter checks the filter an accepted request resolved to:
// the user_id as sent and a valid id, the country the upper-case form of
// the one sent, and the ip the canonical spelling of the address sent,
// which is how the routers store them (package router).
func checkAcceptedFilter(t *testing.T, q *Queryd, sent *clickaggv1.Filter, got Filter) {
	t.Helper()
	if got.UserID != sent.GetUserId() {
		t.Fatalf("filter.user_id %q resolved to %q", sent.GetUserId(), got.UserID)
	}
	if got.UserID != "" {
		checkAcceptedID(t, q, "filter.user_id", got.UserID)
	}
	if c := got.Country; c != strings.ToUpper(sent.GetCountry()) || c != "" && (len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z') {
		t.Fatalf("filter.country %q resolved to %q", sent.GetCountry(), c)
	}
	if got.IP == "" {
		if sent.GetIp() != "" {
			t.Fatalf("filter.ip %q dropped", sent.GetIp())
		}
		return
	}
	a, err := netip.ParseAddr(got.IP)
	sentAddr, _ := netip.ParseAddr(sent.GetIp())
	if err != nil || a.Zone() != "" || a.Is4In6() || a.String() != got.IP || a != sentAddr.Unmap() {
		t.Fatalf("filter.ip %q resolved to %q, not its canonical spelling", sent.GetIp(), got.IP)
	}
}

// checkAcceptedID checks an accepted id against the routers' rules.
func checkAcceptedID(t *testing.T, q *Queryd, field, s string) {
	t.Helper()
	if len(s) > q.maxIDLength() || !utf8.ValidString(s) {
		t.Fatalf("accepted %s %q", field, s)
	}
	for _, c := range s {
		if unicode.IsControl(c) {
			t.Fatalf("accepted %s %q with a control character", field, s)
		}
	}
}

// FuzzParseCount feeds GetAggregatedCount's validation arbitrary requests.
// It must never panic, and an accepted request must name a valid ad_id and
// a window of 1 to MaxWindow whole minutes: the last_minutes ending with
// the current minute, or exactly the minute-aligned from and to sent.
func FuzzParseCount(f *testing.F) {
	f.Add("a", "", "", "", int32(0), true, base*60, int32(0), true, (base+7)*60, int32(0))
	f.Add("a", " U7 ", "Us", "::ffff:10.0.0.1", int32(10), false, int64(0), int32(0), false, int64(0), int32(0))
	f.Add("a", "u\u0085", "FRA", "fe80::1%eth0", int32(1441), true, base*60+1, int32(5), true, int64(-1), int32(-1))
	f.Add("", "", "", "", int32(-1), false, int64(0), int32(0), true, int64(253402300800), int32(0))
	q := offlineQueryd(f)
	maxW := q.cfg.maxWindowMinutes()
	cur := testNow().Unix() / 60
	f.Fuzz(func(t *testing.T, adID, userID, country, ip string, last int32, hasFrom bool, fromS int64, fromN int32, hasTo bool, toS int64, toN int32) {
		filter := &clickaggv1.Filter{UserId: userID, Country: country, Ip: ip}
		req := &clickaggv1.GetAggregatedCountRequest{AdId: adID, LastMinutes: last, From: fuzzTime(hasFrom, fromS, fromN), To: fuzzTime(hasTo, toS, toN), Filter: filter}
		cq, err := q.parseCount(req)
		if err != nil {
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("message is not valid UTF-8: %q", err)
			}
			return
		}
		if cq.adID != adID || adID == "" {
			t.Fatalf("ad_id %q resolved to %q", adID, cq.adID)
		}
		checkAcceptedID(t, q, "ad_id", adID)
		checkAcceptedFilter(t, q, filter, cq.filter)
		if w := cq.to - cq.from; w < 1 || w > maxW {
			t.Fatalf("accepted window [%d, %d) of %d minutes", cq.from, cq.to, w)
		}
		switch {
		case last != 0:
			if hasFrom || hasTo || cq.to != cur+1 || cq.to-cq.from != int64(last) {
				t.Fatalf("last_minutes %d resolved to [%d, %d), current minute %d", last, cq.from, cq.to, cur)
			}
		case fromN != 0 || toN != 0 || fromS%60 != 0 || toS%60 != 0 || cq.from != fromS/60 || cq.to != toS/60:
			t.Fatalf("from %d.%09d to %d.%09d resolved to minutes [%d, %d)", fromS, fromN, toS, toN, cq.from, cq.to)
		}
	})
}

// FuzzParseTop feeds GetPopularAds' and WatchPopularAds' validation
// arbitrary requests. They must never panic, and an accepted request must
// ask for 1 to MaxCount ads (DefaultCount for 0) over a window of 1 to
// MaxWindow minutes ending at the minute-aligned end sent, or after the
// current minute.
func FuzzParseTop(f *testing.F) {
	f.Add(int32(0), int32(0), false, int64(0), int32(0), "", "", "")
	f.Add(int32(1000), int32(1440), true, (base+3)*60, int32(0), "u", "de", "2001:DB8:0:0::1")
	f.Add(int32(-3), int32(-1), true, base*60+30, int32(1), "u\n", "F", "1.2.3")
	q := offlineQueryd(f)
	maxW := q.cfg.maxWindowMinutes()
	cur := testNow().Unix() / 60
	f.Fuzz(func(t *testing.T, count, window int32, hasEnd bool, endS int64, endN int32, userID, country, ip string) {
		filter := &clickaggv1.Filter{UserId: userID, Country: country, Ip: ip}
		wantN := int(count)
		if count == 0 {
			wantN = q.cfg.DefaultCount
		}
		n, wf, err := q.parseWatch(&clickaggv1.WatchPopularAdsRequest{Count: count, Filter: filter})
		if err == nil {
			if n != wantN || n < 1 || n > q.cfg.MaxCount {
				t.Fatalf("watch count %d resolved to %d", count, n)
			}
			checkAcceptedFilter(t, q, filter, wf)
		}
		tq, err := q.parseTop(&clickaggv1.GetPopularAdsRequest{Count: count, WindowMinutes: window, End: fuzzTime(hasEnd, endS, endN), Filter: filter})
		if err != nil {
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("message is not valid UTF-8: %q", err)
			}
			return
		}
		if tq.n != wantN || tq.n < 1 || tq.n > q.cfg.MaxCount {
			t.Fatalf("count %d resolved to %d", count, tq.n)
		}
		checkAcceptedFilter(t, q, filter, tq.filter)
		w := tq.to - tq.from
		if w < 1 || w > maxW || window != 0 && w != int64(window) || window == 0 && w != 1 {
			t.Fatalf("window_minutes %d resolved to [%d, %d)", window, tq.from, tq.to)
		}
		end := cur + 1
		if hasEnd {
			if endN != 0 || endS%60 != 0 {
				t.Fatalf("accepted end %d.%09d, not minute-aligned", endS, endN)
			}
			end = endS / 60
		}
		if tq.to != end {
			t.Fatalf("end %v resolved to minute %d, want %d", fuzzTime(hasEnd, endS, endN), tq.to, end)
		}
	})
}
