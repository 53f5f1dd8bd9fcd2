package shipper

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// csvHeader is the CSV header line, skipped wherever it appears.
const csvHeader = "ad_id,click_timestamp,user_id,ip,country"

// errSkip marks a line that carries no click and is not an error: a blank
// line or a CSV header.
var errSkip = errors.New("no click in line")

// parseLine turns one line (without its newline) into a click. The event_id
// is left empty unless a JSON line carries one. Field contents are judged by
// the router; here only the shape is checked.
func parseLine(format string, line []byte) (*clickaggv1.ClickEvent, error) {
	line = bytes.TrimRight(line, "\r")
	if len(bytes.TrimSpace(line)) == 0 {
		return nil, errSkip
	}
	if format == FormatCSV {
		return parseCSV(string(line))
	}
	return parseJSON(line)
}

type jsonLine struct {
	EventID   *string         `json:"event_id"`
	AdID      *string         `json:"ad_id"`
	ClickTime json.RawMessage `json:"click_time"`
	UserID    *string         `json:"user_id"`
	IP        *string         `json:"ip"`
	Country   *string         `json:"country"`
}

func parseJSON(line []byte) (*clickaggv1.ClickEvent, error) {
	var j jsonLine
	if err := json.Unmarshal(line, &j); err != nil {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	var missing []string
	need := func(name string, p *string) string {
		if p == nil {
			missing = append(missing, name)
			return ""
		}
		return *p
	}
	ev := &clickaggv1.ClickEvent{
		AdId:    need("ad_id", j.AdID),
		UserId:  need("user_id", j.UserID),
		Ip:      need("ip", j.IP),
		Country: need("country", j.Country),
	}
	if j.EventID != nil {
		if *j.EventID == "" {
			return nil, errors.New("event_id is present but empty")
		}
		ev.EventId = *j.EventID
	}
	if len(j.ClickTime) == 0 || string(j.ClickTime) == "null" {
		missing = append(missing, "click_time")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	var t time.Time
	var err error
	if j.ClickTime[0] == '"' {
		var s string
		if err := json.Unmarshal(j.ClickTime, &s); err != nil {
			return nil, fmt.Errorf("click_time: %v", err)
		}
		t, err = parseTime(s)
	} else {
		t, err = parseMillis(string(j.ClickTime))
	}
	if err != nil {
		return nil, err
	}
	ev.ClickTime = timestamppb.New(t)
	return ev, nil
}

func parseCSV(line string) (*clickaggv1.ClickEvent, error) {
	if line == csvHeader {
		return nil, errSkip
	}
	var f []string
	if strings.IndexByte(line, '"') < 0 {
		f = strings.Split(line, ",")
	} else {
		r := csv.NewReader(strings.NewReader(line))
		r.FieldsPerRecord = -1
		var err error
		if f, err = r.Read(); err != nil {
			return nil, fmt.Errorf("not a CSV record: %v", err)
		}
	}
	if len(f) != 5 {
		return nil, fmt.Errorf("%d fields, want 5 (%s)", len(f), csvHeader)
	}
	t, err := parseTime(f[1])
	if err != nil {
		return nil, err
	}
	return &clickaggv1.ClickEvent{AdId: f[0], ClickTime: timestamppb.New(t), UserId: f[2], Ip: f[3], Country: f[4]}, nil
}

// parseTime parses RFC 3339 or Unix epoch milliseconds.
func parseTime(s string) (time.Time, error) {
	if s != "" && (s[0] >= '0' && s[0] <= '9' || s[0] == '-') && !strings.ContainsAny(s, "T:") {
		return parseMillis(s)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("click time %q is neither RFC 3339 nor epoch milliseconds", s)
	}
	return t, nil
}

func parseMillis(s string) (time.Time, error) {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("click time %q is neither RFC 3339 nor epoch milliseconds", s)
	}
	return time.UnixMilli(ms), nil
}
