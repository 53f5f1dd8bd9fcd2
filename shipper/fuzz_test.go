package shipper

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// FuzzParseLine feeds the log line parser arbitrary lines in both formats.
// It must never panic, and a click it accepts, written again as a line of
// the same format, must parse to the same click. Lines never hold a
// newline (the tailer splits on it), so only those without one are
// written again.
func FuzzParseLine(f *testing.F) {
	for _, s := range []struct {
		csv  bool
		line string
	}{
		{false, `{"ad_id":"a1","click_time":"2026-11-26T01:02:03.456Z","user_id":"u","ip":"10.0.0.1","country":"US"}`},
		{false, `{"event_id":"e-7","ad_id":"a1","click_time":1795654923456,"user_id":"u","ip":"10.0.0.1","country":"US"}`},
		{false, `{"ad_id":"a1","click_time":"1795654923456","user_id":"u","ip":"::1","country":"us"}` + "\r"},
		{false, `{"ad_id":"a1","user_id":"u"}`},
		{true, "a1,2026-11-26T01:02:03.456Z,u,10.0.0.1,US"},
		{true, "a1,2026-11-26T02:02:03.456789+01:00,u,10.0.0.1,US"},
		{true, `"a,1",-1795654923456,u,10.0.0.1,US`},
		{true, csvHeader},
		{true, "  "},
	} {
		f.Add(s.csv, []byte(s.line))
	}
	f.Fuzz(func(t *testing.T, isCSV bool, line []byte) {
		format := FormatJSON
		if isCSV {
			format = FormatCSV
		}
		ev, err := parseLine(format, line)
		if err != nil {
			if ev != nil {
				t.Fatalf("error %v with click %v", err, ev)
			}
			return
		}
		if ev.GetClickTime() == nil {
			t.Fatalf("accepted click without a click_time: %v", ev)
		}
		if bytes.IndexByte(line, '\n') >= 0 {
			return
		}
		again := formatLine(t, format, ev)
		got, err := parseLine(format, again)
		if err != nil {
			t.Fatalf("line %q, written again as %q, does not parse: %v", line, again, err)
		}
		if !proto.Equal(got, ev) {
			t.Fatalf("line %q parses to %v; written again as %q, to %v", line, ev, again, got)
		}
	})
}

// formatLine writes ev as a line of format: the click time in epoch
// milliseconds when it has no finer part (a JSON number), else in RFC 3339
// (a JSON string).
func formatLine(t *testing.T, format string, ev *clickaggv1.ClickEvent) []byte {
	ct := ev.GetClickTime().AsTime()
	clickTime := strconv.FormatInt(ct.UnixMilli(), 10)
	var jsonTime any = json.RawMessage(clickTime)
	if ct.Nanosecond()%int(time.Millisecond) != 0 {
		clickTime = ct.Format(time.RFC3339Nano)
		jsonTime = clickTime
	}
	if format == FormatCSV {
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		if err := w.Write([]string{ev.GetAdId(), clickTime, ev.GetUserId(), ev.GetIp(), ev.GetCountry()}); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	}
	m := map[string]any{"ad_id": ev.GetAdId(), "click_time": jsonTime, "user_id": ev.GetUserId(), "ip": ev.GetIp(), "country": ev.GetCountry()}
	if id := ev.GetEventId(); id != "" {
		m["event_id"] = id
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
