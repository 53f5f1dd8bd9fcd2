package router

import (
	"bufio"
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

type validationCase struct {
	name string
	// mod changes a valid event; nil event when nilEvent.
	mod      func(e *clickaggv1.ClickEvent)
	nilEvent bool
	// reason is the exact rejection reason; "" means accepted.
	reason string
	// badID: the event_id itself is invalid, so the rejection does not
	// echo it.
	badID bool
	// storedMod turns stored(event) into what must be appended, for the
	// fields the router canonicalizes.
	storedMod func(e *clickaggv1.LogEvent)
}

// validationCases is every per-event row of docs/bad-inputs-ingest.md, plus
// the accepted inputs next to each boundary. The router runs with the flag
// defaults (skew 1m, horizon 6h, ids up to 128 bytes) at t0.
var validationCases = []validationCase{
	{name: "valid_event"},
	{name: "nil_event", nilEvent: true, reason: "event is nil", badID: true},

	{name: "empty_event_id", mod: func(e *clickaggv1.ClickEvent) { e.EventId = "" }, reason: "event_id is empty", badID: true},
	{name: "long_event_id", mod: func(e *clickaggv1.ClickEvent) { e.EventId = strings.Repeat("e", 129) }, reason: "event_id is 129 bytes long, at most 128 allowed", badID: true},
	{name: "max_length_event_id", mod: func(e *clickaggv1.ClickEvent) { e.EventId = strings.Repeat("e", 128) }},
	{name: "invalid_utf8_event_id", mod: func(e *clickaggv1.ClickEvent) { e.EventId = "e-\xff" }, reason: "event_id is not valid UTF-8", badID: true},
	{name: "control_char_event_id", mod: func(e *clickaggv1.ClickEvent) { e.EventId = "e-1\n" }, reason: "event_id contains control character U+000A at byte 3", badID: true},
	{name: "c1_control_char_event_id", mod: func(e *clickaggv1.ClickEvent) { e.EventId = "e-\u0085" }, reason: "event_id contains control character U+0085 at byte 2", badID: true},
	{name: "unicode_event_id", mod: func(e *clickaggv1.ClickEvent) { e.EventId = "é 1 ✓" }},

	{name: "empty_ad_id", mod: func(e *clickaggv1.ClickEvent) { e.AdId = "" }, reason: "ad_id is empty"},
	{name: "long_ad_id", mod: func(e *clickaggv1.ClickEvent) { e.AdId = strings.Repeat("a", 129) }, reason: "ad_id is 129 bytes long, at most 128 allowed"},
	{name: "invalid_utf8_ad_id", mod: func(e *clickaggv1.ClickEvent) { e.AdId = "ad-\xc3" }, reason: "ad_id is not valid UTF-8"},
	{name: "control_char_ad_id", mod: func(e *clickaggv1.ClickEvent) { e.AdId = "ad\x00" }, reason: "ad_id contains control character U+0000 at byte 2"},

	{name: "empty_user_id", mod: func(e *clickaggv1.ClickEvent) { e.UserId = "" }, reason: "user_id is empty"},
	{name: "long_user_id", mod: func(e *clickaggv1.ClickEvent) { e.UserId = strings.Repeat("u", 200) }, reason: "user_id is 200 bytes long, at most 128 allowed"},
	{name: "invalid_utf8_user_id", mod: func(e *clickaggv1.ClickEvent) { e.UserId = "\xc3(" }, reason: "user_id is not valid UTF-8"},
	{name: "control_char_user_id", mod: func(e *clickaggv1.ClickEvent) { e.UserId = "u\t1" }, reason: "user_id contains control character U+0009 at byte 1"},
	{name: "del_char_user_id", mod: func(e *clickaggv1.ClickEvent) { e.UserId = "u1\x7f" }, reason: "user_id contains control character U+007F at byte 2"},

	{name: "empty_ip", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "" }, reason: "ip is empty"},
	{name: "ip_octet_out_of_range", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "300.1.1.1" }, reason: `ip "300.1.1.1" is not a valid IPv4 or IPv6 address`},
	{name: "ip_three_octets", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "1.2.3" }, reason: `ip "1.2.3" is not a valid IPv4 or IPv6 address`},
	{name: "ip_leading_zero", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "010.1.1.1" }, reason: `ip "010.1.1.1" is not a valid IPv4 or IPv6 address`},
	{name: "ip_hostname", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "localhost" }, reason: `ip "localhost" is not a valid IPv4 or IPv6 address`},
	{name: "ip_cidr", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "192.0.2.0/24" }, reason: `ip "192.0.2.0/24" is not a valid IPv4 or IPv6 address`},
	{name: "ip_with_port", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "192.0.2.1:80" }, reason: `ip "192.0.2.1:80" is not a valid IPv4 or IPv6 address`},
	{name: "ip_with_space", mod: func(e *clickaggv1.ClickEvent) { e.Ip = " 192.0.2.1" }, reason: `ip " 192.0.2.1" is not a valid IPv4 or IPv6 address`},
	{name: "ip_with_newline", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "192.0.2.1\n" }, reason: `ip "192.0.2.1\n" is not a valid IPv4 or IPv6 address`},
	{name: "ip_very_long", mod: func(e *clickaggv1.ClickEvent) { e.Ip = strings.Repeat("9", 300) }, reason: `ip "` + strings.Repeat("9", 64) + `"... (300 bytes) is not a valid IPv4 or IPv6 address`},
	{name: "ip_with_zone", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "fe80::1%eth0" }, reason: `ip "fe80::1%eth0" has an IPv6 zone ("eth0"), which is not accepted`},
	{name: "ipv4_mapped_ipv6", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "::ffff:192.0.2.7" }, storedMod: func(e *clickaggv1.LogEvent) { e.Ip = "192.0.2.7" }},
	{name: "ipv6_upper_case_uncompressed", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "2001:0DB8:0:0:0:0:0:0001" }, storedMod: func(e *clickaggv1.LogEvent) { e.Ip = "2001:db8::1" }},
	{name: "ipv6_canonical", mod: func(e *clickaggv1.ClickEvent) { e.Ip = "2001:db8::1" }},

	{name: "empty_country", mod: func(e *clickaggv1.ClickEvent) { e.Country = "" }, reason: "country is empty"},
	{name: "country_alpha3", mod: func(e *clickaggv1.ClickEvent) { e.Country = "USA" }, reason: `country "USA" is not an ISO 3166-1 alpha-2 code (two letters, such as "US")`},
	{name: "country_one_letter", mod: func(e *clickaggv1.ClickEvent) { e.Country = "U" }, reason: `country "U" is not an ISO 3166-1 alpha-2 code (two letters, such as "US")`},
	{name: "country_digit", mod: func(e *clickaggv1.ClickEvent) { e.Country = "U1" }, reason: `country "U1" is not an ISO 3166-1 alpha-2 code (two letters, such as "US")`},
	{name: "country_non_ascii_letter", mod: func(e *clickaggv1.ClickEvent) { e.Country = "ÜS" }, reason: `country "ÜS" is not an ISO 3166-1 alpha-2 code (two letters, such as "US")`},
	{name: "country_unassigned_XX", mod: func(e *clickaggv1.ClickEvent) { e.Country = "XX" }, reason: `country "XX" is not an assigned ISO 3166-1 alpha-2 code`},
	{name: "country_unassigned_ZZ", mod: func(e *clickaggv1.ClickEvent) { e.Country = "zz" }, reason: `country "zz" is not an assigned ISO 3166-1 alpha-2 code`},
	{name: "country_reserved_UK", mod: func(e *clickaggv1.ClickEvent) { e.Country = "UK" }, reason: `country "UK" is not an assigned ISO 3166-1 alpha-2 code`},
	{name: "country_reserved_EU", mod: func(e *clickaggv1.ClickEvent) { e.Country = "EU" }, reason: `country "EU" is not an assigned ISO 3166-1 alpha-2 code`},
	{name: "country_user_assigned_XK", mod: func(e *clickaggv1.ClickEvent) { e.Country = "XK" }, reason: `country "XK" is not an assigned ISO 3166-1 alpha-2 code`},
	{name: "country_lower_case", mod: func(e *clickaggv1.ClickEvent) { e.Country = "us" }, storedMod: func(e *clickaggv1.LogEvent) { e.Country = "US" }},
	{name: "country_mixed_case", mod: func(e *clickaggv1.ClickEvent) { e.Country = "gB" }, storedMod: func(e *clickaggv1.LogEvent) { e.Country = "GB" }},

	{name: "missing_click_time", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime = nil }, reason: "click_time is missing"},
	{name: "click_time_nanos_too_large", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime.Nanos = 1_000_000_000 }, reason: "click_time is not a valid timestamp: nanos 1000000000 is outside [0, 999999999]"},
	{name: "click_time_negative_nanos", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime.Nanos = -1 }, reason: "click_time is not a valid timestamp: nanos -1 is outside [0, 999999999]"},
	{name: "click_time_before_year_1", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime = &timestamppb.Timestamp{Seconds: -62135596801} }, reason: "click_time is not a valid timestamp: seconds -62135596801 is outside the years 0001 to 9999"},
	{name: "click_time_after_year_9999", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime = &timestamppb.Timestamp{Seconds: 253402300800} }, reason: "click_time is not a valid timestamp: seconds 253402300800 is outside the years 0001 to 9999"},
	{name: "click_time_at_max_skew", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime = timestamppb.New(t0.Add(time.Minute)) }},
	{name: "click_time_past_max_skew", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime = timestamppb.New(t0.Add(time.Minute + time.Millisecond)) },
		reason: "click_time 2026-03-01T12:01:00.001Z is 1m0.001s ahead of the router clock, over the allowed clock skew of 1m0s by 1ms"},
	{name: "click_time_far_future", mod: func(e *clickaggv1.ClickEvent) {
		e.ClickTime = timestamppb.New(time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC))
	}, reason: "click_time 9000-01-01T00:00:00Z is more than 146 years ahead of the router clock, over the allowed clock skew of 1m0s by more than 146 years"},
	{name: "click_time_at_horizon", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime = timestamppb.New(t0.Add(-6 * time.Hour)) }},
	{name: "click_time_five_hours_late", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime = timestamppb.New(t0.Add(-5 * time.Hour)) }},
	{name: "click_time_past_horizon", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime = timestamppb.New(t0.Add(-6*time.Hour - time.Millisecond)) },
		reason: "click_time 2026-03-01T05:59:59.999Z is 6h0m0.001s behind the router clock, over the acceptance horizon of 6h0m0s by 1ms"},
	{name: "click_time_unix_epoch", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime = &timestamppb.Timestamp{} },
		reason: "click_time 1970-01-01T00:00:00Z is 492324h0m0s behind the router clock, over the acceptance horizon of 6h0m0s by 492318h0m0s"},
	{name: "click_time_sub_millisecond", mod: func(e *clickaggv1.ClickEvent) { e.ClickTime = timestamppb.New(t0.Add(-1500 * time.Microsecond)) },
		storedMod: func(e *clickaggv1.LogEvent) { e.ClickTimeMs = t0.UnixMilli() - 2 }},

	{name: "several_problems", mod: func(e *clickaggv1.ClickEvent) { e.AdId, e.Ip, e.Country = "", "x", "XX" },
		reason: `ad_id is empty; ip "x" is not a valid IPv4 or IPv6 address; country "XX" is not an assigned ISO 3166-1 alpha-2 code`},
}

// TestIngestValidation sends each case alone to a router over a real Redis
// and checks the exact reason, or exactly what was appended.
func TestIngestValidation(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	parts := partitioner(t, 4)
	r := New(testConfig(t), testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))

	total := func() int64 {
		var n int64
		for p := range parts.Partitions() {
			l, err := rdb.XLen(ctx, partlog.Key(testPrefix, p)).Result()
			if err != nil {
				t.Fatal(err)
			}
			n += l
		}
		return n
	}
	for i, tc := range validationCases {
		t.Run(tc.name, func(t *testing.T) {
			var e *clickaggv1.ClickEvent
			if !tc.nilEvent {
				e = click("e-"+tc.name, "ad-"+tc.name, t0.Add(-time.Duration(i)*time.Second))
				if tc.mod != nil {
					tc.mod(e)
				}
			}
			before := total()
			accepted, rejected, err := r.Ingest(ctx, []*clickaggv1.ClickEvent{e})
			if err != nil {
				t.Fatalf("Ingest: %v", err)
			}
			appended := total() - before
			if tc.reason != "" {
				wantID := e.GetEventId()
				if tc.badID {
					wantID = ""
				}
				want := []*clickaggv1.Rejection{{Index: 0, EventId: wantID, Reason: tc.reason}}
				if accepted != 0 || !equalRejections(rejected, want) || appended != 0 {
					t.Fatalf("got accepted %d, %d entries appended, rejected %v;\nwant 0, 0, %v", accepted, appended, rejected, want)
				}
				return
			}
			if accepted != 1 || len(rejected) != 0 || appended != 1 {
				t.Fatalf("got accepted %d, %d entries appended, rejected %v; want 1, 1, none", accepted, appended, rejected)
			}
			want := stored(e)
			if tc.storedMod != nil {
				tc.storedMod(want)
			}
			msgs, err := rdb.XRevRangeN(ctx, partlog.Key(testPrefix, parts.Partition(e.AdId)), "+", "-", 1).Result()
			if err != nil || len(msgs) != 1 {
				t.Fatalf("last entry of the ad's partition: %v, %v", msgs, err)
			}
			got := &clickaggv1.LogEntry{}
			if err := proto.Unmarshal([]byte(msgs[0].Values["d"].(string)), got); err != nil {
				t.Fatal(err)
			}
			wantEntry := &clickaggv1.LogEntry{RouterId: "router-test", Events: []*clickaggv1.LogEvent{want}}
			if !proto.Equal(got, wantEntry) {
				t.Fatalf("appended %v\nwant %v", prototext.Format(got), prototext.Format(wantEntry))
			}
		})
	}
}

func equalRejections(a, b []*clickaggv1.Rejection) bool {
	return slices.EqualFunc(a, b, func(x, y *clickaggv1.Rejection) bool { return proto.Equal(x, y) })
}

func TestCountryTable(t *testing.T) {
	if len(countryCodes) != 249 {
		t.Fatalf("%d country codes, ISO 3166-1 assigns 249", len(countryCodes))
	}
	for i, c := range countryCodes {
		if len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
			t.Errorf("code %q is not two upper-case letters", c)
		}
		if i > 0 && countryCodes[i-1] >= c {
			t.Errorf("codes %q, %q are not sorted and unique", countryCodes[i-1], c)
		}
	}
	// Cross-check a handful against the standard, both ways: the binary
	// search depends on the order checked above.
	for _, c := range []string{"AD", "FR", "GB", "SS", "US", "ZW", "BQ", "CW", "SX"} {
		if !assignedCountry(c) {
			t.Errorf("assigned code %s refused", c)
		}
	}
	for _, c := range []string{"AA", "UK", "EU", "XK", "XX", "ZZ", "QM", "AN", "YU", "CS"} {
		if assignedCountry(c) {
			t.Errorf("unassigned code %s accepted", c)
		}
	}
}

// TestBadInputsDoc keeps docs/bad-inputs-ingest.md honest: every row names
// tests that exist, a TestIngestValidation row (one test per such row)
// quotes the exact reason of that case, and every rejecting case has a row.
func TestBadInputsDoc(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "docs", "bad-inputs-ingest.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	funcs := testFuncs(t)
	cases := map[string]validationCase{}
	for _, tc := range validationCases {
		cases[tc.name] = tc
	}
	documented := map[string]bool{}
	rows := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "| Input") || strings.HasPrefix(line, "|--") || strings.HasPrefix(line, "| --") {
			continue
		}
		cols := splitRow(line)
		if len(cols) != 4 {
			t.Errorf("row %q has %d columns, want 4", line, len(cols))
			continue
		}
		rows++
		result, reason := cols[1], unquoteCode(cols[2])
		var fn, sub string
		for test := range strings.SplitSeq(cols[3], ",") {
			fn, sub, _ = strings.Cut(strings.Trim(strings.TrimSpace(test), "`"), "/")
			if !funcs[fn] {
				t.Errorf("row %q names test %s, which does not exist", line, fn)
			}
		}
		if fn != "TestIngestValidation" {
			continue
		}
		tc, ok := cases[sub]
		if !ok {
			t.Errorf("row %q names case %s, which is not in validationCases", line, sub)
			continue
		}
		documented[sub] = true
		switch {
		case tc.reason == "" && !strings.HasPrefix(result, "accepted"):
			t.Errorf("row %q says %q, but case %s is accepted", line, result, sub)
		case tc.reason != "" && (result != "rejected" || reason != tc.reason):
			t.Errorf("row %q says %q %q, but case %s is rejected with %q", line, result, reason, sub, tc.reason)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if rows < len(validationCases) {
		t.Errorf("only %d rows in the doc", rows)
	}
	for _, tc := range validationCases {
		if tc.reason != "" && !documented[tc.name] {
			t.Errorf("rejecting case %s has no row in the doc", tc.name)
		}
	}
}

// splitRow splits a Markdown table row on the pipes outside code spans.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(strings.TrimSuffix(line, "|"), "|")
	var cols []string
	var cur strings.Builder
	inCode := false
	for _, c := range line {
		switch {
		case c == '`':
			inCode = !inCode
		case c == '|' && !inCode:
			cols = append(cols, strings.TrimSpace(cur.String()))
			cur.Reset()
			continue
		}
		cur.WriteRune(c)
	}
	return append(cols, strings.TrimSpace(cur.String()))
}

// unquoteCode returns the text of a cell that is one code span, or the cell.
func unquoteCode(s string) string {
	if len(s) >= 2 && strings.HasPrefix(s, "`") && strings.HasSuffix(s, "`") && strings.Count(s, "`") == 2 {
		return s[1 : len(s)-1]
	}
	return s
}

// testFuncs returns the names of the Test functions of this package.
func testFuncs(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && strings.HasPrefix(fd.Name.Name, "Test") {
				out[fd.Name.Name] = true
			}
		}
	}
	return out
}
