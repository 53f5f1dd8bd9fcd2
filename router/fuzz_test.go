package router

import (
	"net/netip"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// FuzzValidate feeds the router's event validation arbitrary events. It
// must never panic, and an accepted event must hold every invariant the
// aggregators and queryd rely on without checking again: ids non-empty,
// bounded, valid UTF-8 without control characters; the ip in its one
// canonical spelling; the country an assigned upper-case code; the click
// time within [now - horizon, now + skew]; and the stored encoding decodes,
// as proto.Unmarshal reads it, to exactly those fields.
func FuzzValidate(f *testing.F) {
	for i, c := range validationCases {
		if c.nilEvent {
			continue
		}
		e := click("e-"+c.name, "ad-"+c.name, t0.Add(-time.Duration(i)*time.Second))
		if c.mod != nil {
			c.mod(e)
		}
		ts := e.GetClickTime()
		f.Add(e.EventId, e.AdId, e.UserId, e.Ip, e.Country, ts != nil, ts.GetSeconds(), ts.GetNanos())
	}
	cfg := testConfig(f)
	r := New(cfg, testID, nil, nil, nil, fixedClock(t0))
	f.Fuzz(func(t *testing.T, eventID, adID, userID, ip, country string, hasTime bool, secs int64, nanos int32) {
		e := &clickaggv1.ClickEvent{EventId: eventID, AdId: adID, UserId: userID, Ip: ip, Country: country}
		if hasTime {
			e.ClickTime = &timestamppb.Timestamp{Seconds: secs, Nanos: nanos}
		}
		ev, reason := r.validate(e, t0)
		if reason != "" {
			if !utf8.ValidString(reason) {
				t.Fatalf("reason is not valid UTF-8: %q", reason)
			}
			return
		}
		for _, id := range []struct{ field, s string }{{"event_id", ev.eventID}, {"ad_id", ev.adID}, {"user_id", ev.userID}} {
			if id.s == "" || len(id.s) > cfg.MaxIDLength || !utf8.ValidString(id.s) {
				t.Fatalf("accepted %s %q", id.field, id.s)
			}
			for _, c := range id.s {
				if unicode.IsControl(c) {
					t.Fatalf("accepted %s %q with a control character", id.field, id.s)
				}
			}
		}
		if ev.eventID != eventID || ev.adID != adID || ev.userID != userID {
			t.Fatalf("ids changed: %q %q %q", ev.eventID, ev.adID, ev.userID)
		}
		a, err := netip.ParseAddr(ev.ip)
		if err != nil || a.Zone() != "" || a.Is4In6() || a.String() != ev.ip {
			t.Fatalf("stored ip %q (from %q) is not canonical: %v", ev.ip, ip, err)
		}
		if in, _ := netip.ParseAddr(ip); in.Unmap() != a {
			t.Fatalf("stored ip %q is not the address of %q", ev.ip, ip)
		}
		if len(ev.country) != 2 || !isUpper(ev.country[0]) || !isUpper(ev.country[1]) || !assignedCountry(ev.country) {
			t.Fatalf("stored country %q (from %q)", ev.country, country)
		}
		at := time.Unix(secs, int64(nanos))
		if ev.ms != at.UnixMilli() {
			t.Fatalf("stored click time %d ms, want %d", ev.ms, at.UnixMilli())
		}
		if lo, hi := t0.Add(-cfg.Horizon), t0.Add(cfg.MaxSkew); at.Before(lo) || at.After(hi) {
			t.Fatalf("accepted click time %v outside [%v, %v]", at, lo, hi)
		}
		var got clickaggv1.LogEntry
		if err := proto.Unmarshal(ev.appendTo(appendRouterID(nil, testID)), &got); err != nil {
			t.Fatalf("stored encoding does not decode: %v", err)
		}
		want := &clickaggv1.LogEntry{RouterId: testID, Events: []*clickaggv1.LogEvent{{
			EventId: ev.eventID, AdId: ev.adID, ClickTimeMs: ev.ms, UserId: ev.userID, Ip: ev.ip, Country: ev.country,
		}}}
		if !proto.Equal(&got, want) {
			t.Fatalf("stored encoding decodes to %v, want %v", &got, want)
		}
	})
}
