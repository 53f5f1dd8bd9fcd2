package shipper

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseLine(t *testing.T) {
	ct := time.Date(2026, 11, 26, 1, 2, 3, 456e6, time.UTC)
	for _, c := range []struct {
		name, format, line string
		wantID, wantAd     string
		wantErr            string // substring; "skip" for errSkip
	}{
		{name: "json rfc3339", format: FormatJSON, line: `{"ad_id":"a1","click_time":"2026-11-26T01:02:03.456Z","user_id":"u","ip":"10.0.0.1","country":"US"}`, wantAd: "a1"},
		{name: "json millis", format: FormatJSON, line: `{"ad_id":"a1","click_time":1795654923456,"user_id":"u","ip":"10.0.0.1","country":"US"}`, wantAd: "a1"},
		{name: "json millis string", format: FormatJSON, line: `{"ad_id":"a1","click_time":"1795654923456","user_id":"u","ip":"10.0.0.1","country":"US"}`, wantAd: "a1"},
		{name: "json event id kept", format: FormatJSON, line: `{"event_id":"e-7","ad_id":"a1","click_time":1795654923456,"user_id":"u","ip":"10.0.0.1","country":"US"}`, wantAd: "a1", wantID: "e-7"},
		{name: "json crlf", format: FormatJSON, line: "{\"ad_id\":\"a1\",\"click_time\":1795654923456,\"user_id\":\"u\",\"ip\":\"10.0.0.1\",\"country\":\"US\"}\r", wantAd: "a1"},
		{name: "json empty event id", format: FormatJSON, line: `{"event_id":"","ad_id":"a1","click_time":1795654923456,"user_id":"u","ip":"10.0.0.1","country":"US"}`, wantErr: "event_id is present but empty"},
		{name: "json missing fields", format: FormatJSON, line: `{"ad_id":"a1","user_id":"u"}`, wantErr: "missing ip, country, click_time"},
		{name: "json garbage", format: FormatJSON, line: `{"ad_id":`, wantErr: "not a JSON object"},
		{name: "json bad time", format: FormatJSON, line: `{"ad_id":"a1","click_time":"yesterday","user_id":"u","ip":"10.0.0.1","country":"US"}`, wantErr: "neither RFC 3339 nor epoch milliseconds"},
		{name: "json float time", format: FormatJSON, line: `{"ad_id":"a1","click_time":1.5,"user_id":"u","ip":"10.0.0.1","country":"US"}`, wantErr: "neither"},
		{name: "blank", format: FormatJSON, line: "  ", wantErr: "skip"},
		{name: "csv rfc3339", format: FormatCSV, line: "a1,2026-11-26T01:02:03.456Z,u,10.0.0.1,US", wantAd: "a1"},
		{name: "csv millis", format: FormatCSV, line: "a1,1795654923456,u,10.0.0.1,US", wantAd: "a1"},
		{name: "csv offset time", format: FormatCSV, line: "a1,2026-11-26T02:02:03.456+01:00,u,10.0.0.1,US", wantAd: "a1"},
		{name: "csv quoted", format: FormatCSV, line: `"a,1",1795654923456,u,10.0.0.1,US`, wantAd: "a,1"},
		{name: "csv header", format: FormatCSV, line: "ad_id,click_timestamp,user_id,ip,country", wantErr: "skip"},
		{name: "csv fields", format: FormatCSV, line: "a1,1795654923456,u", wantErr: "3 fields, want 5"},
		{name: "csv bad time", format: FormatCSV, line: "a1,noon,u,10.0.0.1,US", wantErr: `click time "noon"`},
		{name: "csv bad quote", format: FormatCSV, line: `"a1,1795654923456,u,10.0.0.1,US`, wantErr: "not a CSV record"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev, err := parseLine(c.format, []byte(c.line))
			switch {
			case c.wantErr == "skip":
				if !errors.Is(err, errSkip) {
					t.Fatalf("err = %v, want a skipped line", err)
				}
				return
			case c.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, c.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if ev.AdId != c.wantAd || ev.EventId != c.wantID || ev.UserId != "u" || ev.Ip != "10.0.0.1" || ev.Country != "US" {
				t.Errorf("event %v", ev)
			}
			if !ev.ClickTime.AsTime().Equal(ct) {
				t.Errorf("click time %v, want %v", ev.ClickTime.AsTime(), ct)
			}
		})
	}
}
