package queryd

import (
	"context"
	"flag"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
)

// ts is minute m plus sec seconds and nanos nanoseconds.
func ts(m, sec int64, nanos int32) *timestamppb.Timestamp {
	return &timestamppb.Timestamp{Seconds: m*60 + sec, Nanos: nanos}
}

// noStream is a WatchPopularAds stream for requests that must be refused
// before anything is sent.
type noStream struct {
	grpc.ServerStream
	t *testing.T
}

func (s noStream) Send(*clickaggv1.GetPopularAdsResponse) error {
	s.t.Errorf("a refused watch sent an answer")
	return nil
}

func (s noStream) Context() context.Context { return context.Background() }

// offlineQueryd has no etcd, Redis or aggregators: every request the table
// below sends must be refused before any of them is needed.
func offlineQueryd(t testing.TB) *Queryd {
	parts, err := ring.NewPartitioner(partitions)
	if err != nil {
		t.Fatal(err)
	}
	return New(testConfig(), parts, nil, nil, nil, testLogger(t), testNow)
}

// TestBadInputs covers every row of docs/bad-inputs-query.md: each refused
// request gets INVALID_ARGUMENT with exactly this message.
func TestBadInputs(t *testing.T) {
	srv := NewServer(offlineQueryd(t))
	ctx := context.Background()
	window := func(from, to int64) *clickaggv1.GetAggregatedCountRequest {
		return &clickaggv1.GetAggregatedCountRequest{AdId: "ad-1", From: ts(from, 0, 0), To: ts(to, 0, 0)}
	}
	withFilter := func(r *clickaggv1.GetAggregatedCountRequest, f *clickaggv1.Filter) *clickaggv1.GetAggregatedCountRequest {
		r.Filter = f
		return r
	}
	type call func() error
	count := func(r *clickaggv1.GetAggregatedCountRequest) call {
		return func() error { _, err := srv.GetAggregatedCount(ctx, r); return err }
	}
	top := func(r *clickaggv1.GetPopularAdsRequest) call {
		return func() error { _, err := srv.GetPopularAds(ctx, r); return err }
	}
	watch := func(r *clickaggv1.WatchPopularAdsRequest) call {
		return func() error { return srv.WatchPopularAds(r, noStream{t: t}) }
	}
	tests := []struct {
		name string
		call call
		msg  string
	}{
		// GetAggregatedCount
		{"count/missing-ad-id", count(&clickaggv1.GetAggregatedCountRequest{LastMinutes: 5}),
			"ad_id is required"},
		{"count/no-window", count(&clickaggv1.GetAggregatedCountRequest{AdId: "ad-1"}),
			"set from and to, or last_minutes"},
		{"count/from-without-to", count(&clickaggv1.GetAggregatedCountRequest{AdId: "ad-1", From: ts(base, 0, 0)}),
			"from and to must be set together"},
		{"count/to-without-from", count(&clickaggv1.GetAggregatedCountRequest{AdId: "ad-1", To: ts(base, 0, 0)}),
			"from and to must be set together"},
		{"count/both-window-kinds", count(&clickaggv1.GetAggregatedCountRequest{AdId: "ad-1", From: ts(base, 0, 0), To: ts(base+1, 0, 0), LastMinutes: 5}),
			"set either from and to, or last_minutes, not both"},
		{"count/last-minutes-negative", count(&clickaggv1.GetAggregatedCountRequest{AdId: "ad-1", LastMinutes: -5}),
			"last_minutes -5: must be in [1, 1440]"},
		{"count/last-minutes-too-long", count(&clickaggv1.GetAggregatedCountRequest{AdId: "ad-1", LastMinutes: 1441}),
			"last_minutes 1441: must be in [1, 1440]"},
		{"count/from-not-minute-aligned", count(&clickaggv1.GetAggregatedCountRequest{AdId: "ad-1", From: ts(base, 30, 0), To: ts(base+1, 0, 0)}),
			"from 2025-02-19T21:20:30Z is not minute-aligned: seconds and fractions must be zero"},
		{"count/to-has-fraction", count(&clickaggv1.GetAggregatedCountRequest{AdId: "ad-1", From: ts(base, 0, 0), To: ts(base+1, 0, 1)}),
			"to 2025-02-19T21:21:00.000000001Z is not minute-aligned: seconds and fractions must be zero"},
		{"count/from-bad-nanos", count(&clickaggv1.GetAggregatedCountRequest{AdId: "ad-1", From: ts(base, 0, -1), To: ts(base+1, 0, 0)}),
			"from is not a valid timestamp: nanos -1 is outside [0, 999999999]"},
		{"count/to-after-year-9999", count(&clickaggv1.GetAggregatedCountRequest{AdId: "ad-1", From: ts(base, 0, 0), To: &timestamppb.Timestamp{Seconds: 253402300800}}),
			"to is not a valid timestamp: seconds 253402300800 is outside the years 0001 to 9999"},
		{"count/empty-window", count(window(base, base)),
			"from 2025-02-19T21:20:00Z must be before to 2025-02-19T21:20:00Z"},
		{"count/reversed-window", count(window(base+1, base)),
			"from 2025-02-19T21:21:00Z must be before to 2025-02-19T21:20:00Z"},
		{"count/window-too-long", count(window(base, base+1441)),
			"window from 2025-02-19T21:20:00Z to 2025-02-20T21:21:00Z is 1441 minutes long, at most 1440 allowed"},
		{"count/ad-id-too-long", count(&clickaggv1.GetAggregatedCountRequest{AdId: strings.Repeat("a", 200_000), LastMinutes: 5}),
			"ad_id is 200000 bytes long, at most 128 allowed"},
		{"count/ad-id-invalid-utf8", count(&clickaggv1.GetAggregatedCountRequest{AdId: "\xff", LastMinutes: 5}),
			"ad_id is not valid UTF-8"},
		{"count/ad-id-nul", count(&clickaggv1.GetAggregatedCountRequest{AdId: "ad\x00", LastMinutes: 5}),
			"ad_id contains control character U+0000 at byte 2"},
		{"count/user-id-too-long", count(withFilter(window(base, base+1), &clickaggv1.Filter{UserId: strings.Repeat("u", 129)})),
			"filter.user_id is 129 bytes long, at most 128 allowed"},
		{"count/user-id-newline", count(withFilter(window(base, base+1), &clickaggv1.Filter{UserId: "u\n"})),
			"filter.user_id contains control character U+000A at byte 1"},
		{"count/country-three-letters", count(withFilter(window(base, base+1), &clickaggv1.Filter{Country: "USA"})),
			`filter.country "USA" is not an ISO 3166-1 alpha-2 code (two letters, such as "US")`},
		{"count/country-not-letters", count(withFilter(window(base, base+1), &clickaggv1.Filter{Country: "U1"})),
			`filter.country "U1" is not an ISO 3166-1 alpha-2 code (two letters, such as "US")`},
		{"count/country-non-ascii", count(withFilter(window(base, base+1), &clickaggv1.Filter{Country: "ÜS"})),
			`filter.country "ÜS" is not an ISO 3166-1 alpha-2 code (two letters, such as "US")`},
		{"count/ip-invalid", count(withFilter(window(base, base+1), &clickaggv1.Filter{Ip: "10.0.0.256"})),
			`filter.ip "10.0.0.256" is not a valid IPv4 or IPv6 address`},
		{"count/ip-prefix", count(withFilter(window(base, base+1), &clickaggv1.Filter{Ip: "10.0.0.0/8"})),
			`filter.ip "10.0.0.0/8" is not a valid IPv4 or IPv6 address`},
		{"count/ip-zone", count(withFilter(window(base, base+1), &clickaggv1.Filter{Ip: "fe80::1%eth0"})),
			`filter.ip "fe80::1%eth0" has an IPv6 zone ("eth0"), which events never have`},

		// GetPopularAds
		{"top/count-negative", top(&clickaggv1.GetPopularAdsRequest{Count: -1}),
			"count -1: must be in [1, 1000] (0 means 100)"},
		{"top/count-too-large", top(&clickaggv1.GetPopularAdsRequest{Count: 1001}),
			"count 1001: must be in [1, 1000] (0 means 100)"},
		{"top/window-negative", top(&clickaggv1.GetPopularAdsRequest{WindowMinutes: -1}),
			"window_minutes -1: must be in [1, 1440] (0 means 1)"},
		{"top/window-too-long", top(&clickaggv1.GetPopularAdsRequest{WindowMinutes: 1441}),
			"window_minutes 1441: must be in [1, 1440] (0 means 1)"},
		{"top/end-not-minute-aligned", top(&clickaggv1.GetPopularAdsRequest{End: ts(base, 1, 0)}),
			"end 2025-02-19T21:20:01Z is not minute-aligned: seconds and fractions must be zero"},
		{"top/end-bad-nanos", top(&clickaggv1.GetPopularAdsRequest{End: ts(base, 0, 1_000_000_000)}),
			"end is not a valid timestamp: nanos 1000000000 is outside [0, 999999999]"},
		{"top/country-invalid", top(&clickaggv1.GetPopularAdsRequest{Filter: &clickaggv1.Filter{Country: "u"}}),
			`filter.country "u" is not an ISO 3166-1 alpha-2 code (two letters, such as "US")`},
		{"top/user-id-invalid-utf8", top(&clickaggv1.GetPopularAdsRequest{Filter: &clickaggv1.Filter{UserId: "u\xc3"}}),
			"filter.user_id is not valid UTF-8"},
		{"top/ip-invalid", top(&clickaggv1.GetPopularAdsRequest{Filter: &clickaggv1.Filter{Ip: "localhost"}}),
			`filter.ip "localhost" is not a valid IPv4 or IPv6 address`},

		// WatchPopularAds
		{"watch/count-negative", watch(&clickaggv1.WatchPopularAdsRequest{Count: -3}),
			"count -3: must be in [1, 1000] (0 means 100)"},
		{"watch/count-too-large", watch(&clickaggv1.WatchPopularAdsRequest{Count: 5000}),
			"count 5000: must be in [1, 1000] (0 means 100)"},
		{"watch/country-invalid", watch(&clickaggv1.WatchPopularAdsRequest{Filter: &clickaggv1.Filter{Country: "FRA"}}),
			`filter.country "FRA" is not an ISO 3166-1 alpha-2 code (two letters, such as "US")`},
		{"watch/user-id-c1-control", watch(&clickaggv1.WatchPopularAdsRequest{Filter: &clickaggv1.Filter{UserId: "u\u0085"}}),
			"filter.user_id contains control character U+0085 at byte 1"},
		{"watch/ip-invalid", watch(&clickaggv1.WatchPopularAdsRequest{Filter: &clickaggv1.Filter{Ip: "1.2.3"}}),
			`filter.ip "1.2.3" is not a valid IPv4 or IPv6 address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument || st.Message() != tt.msg {
				t.Errorf("got %v %q\nwant %v %q", st.Code(), st.Message(), codes.InvalidArgument, tt.msg)
			}
		})
	}
}

// TestParse checks what accepted requests resolve to: windows, defaults and
// the canonical filters the aggregators are asked with.
func TestParse(t *testing.T) {
	q := offlineQueryd(t)
	cur := base + nowOffset
	t.Run("count", func(t *testing.T) {
		tests := []struct {
			name     string
			req      *clickaggv1.GetAggregatedCountRequest
			from, to int64
			filter   Filter
		}{
			{"from-to", &clickaggv1.GetAggregatedCountRequest{AdId: "a", From: ts(base, 0, 0), To: ts(base+7, 0, 0)}, base, base + 7, Filter{}},
			{"longest-window", &clickaggv1.GetAggregatedCountRequest{AdId: "a", From: ts(base, 0, 0), To: ts(base+1440, 0, 0)}, base, base + 1440, Filter{}},
			{"last-1", &clickaggv1.GetAggregatedCountRequest{AdId: "a", LastMinutes: 1}, cur, cur + 1, Filter{}},
			{"last-10", &clickaggv1.GetAggregatedCountRequest{AdId: "a", LastMinutes: 10}, cur - 9, cur + 1, Filter{}},
			{"last-1440", &clickaggv1.GetAggregatedCountRequest{AdId: "a", LastMinutes: 1440}, cur - 1439, cur + 1, Filter{}},
			{"country-lower", &clickaggv1.GetAggregatedCountRequest{AdId: "a", LastMinutes: 1, Filter: &clickaggv1.Filter{Country: "de"}}, cur, cur + 1, Filter{Country: "DE"}},
			{"ipv4-mapped", &clickaggv1.GetAggregatedCountRequest{AdId: "a", LastMinutes: 1, Filter: &clickaggv1.Filter{Ip: "::ffff:10.0.0.1"}}, cur, cur + 1, Filter{IP: "10.0.0.1"}},
			{"ipv6-upper", &clickaggv1.GetAggregatedCountRequest{AdId: "a", LastMinutes: 1, Filter: &clickaggv1.Filter{Ip: "2001:DB8:0:0::1"}}, cur, cur + 1, Filter{IP: "2001:db8::1"}},
			{"user-as-is", &clickaggv1.GetAggregatedCountRequest{AdId: "a", LastMinutes: 1, Filter: &clickaggv1.Filter{UserId: " U7 ", Country: "Us"}}, cur, cur + 1, Filter{UserID: " U7 ", Country: "US"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cq, err := q.parseCount(tt.req)
				want := countQuery{adID: "a", from: tt.from, to: tt.to, filter: tt.filter}
				if err != nil || cq != want {
					t.Errorf("parseCount = %+v, %v; want %+v", cq, err, want)
				}
			})
		}
	})
	t.Run("top", func(t *testing.T) {
		tests := []struct {
			name string
			req  *clickaggv1.GetPopularAdsRequest
			want topQueryReq
		}{
			{"defaults", &clickaggv1.GetPopularAdsRequest{}, topQueryReq{n: 100, from: cur, to: cur + 1}},
			{"window", &clickaggv1.GetPopularAdsRequest{Count: 7, WindowMinutes: 60}, topQueryReq{n: 7, from: cur - 59, to: cur + 1}},
			{"end", &clickaggv1.GetPopularAdsRequest{Count: 1000, WindowMinutes: 3, End: ts(base+5, 0, 0)}, topQueryReq{n: 1000, from: base + 2, to: base + 5}},
			{"filter", &clickaggv1.GetPopularAdsRequest{Count: 1, Filter: &clickaggv1.Filter{Country: "jp", Ip: "::ffff:192.168.7.9", UserId: "u1"}},
				topQueryReq{n: 1, from: cur, to: cur + 1, filter: Filter{Country: "JP", IP: "192.168.7.9", UserID: "u1"}}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := q.parseTop(tt.req)
				if err != nil || got != tt.want {
					t.Errorf("parseTop = %+v, %v; want %+v", got, err, tt.want)
				}
			})
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"default", func(*Config) {}, true},
		{"max-count-zero", func(c *Config) { c.MaxCount = 0 }, false},
		{"max-count-huge", func(c *Config) { c.MaxCount = 100_001 }, false},
		{"default-above-max", func(c *Config) { c.DefaultCount = 1001 }, false},
		{"window-fraction", func(c *Config) { c.MaxWindow = 90 * time.Second }, false},
		{"window-short", func(c *Config) { c.MaxWindow = 0 }, false},
		{"timeout-zero", func(c *Config) { c.CallTimeout = 0 }, false},
		{"poll-zero", func(c *Config) { c.PollInterval = 0 }, false},
		{"publish-above-max", func(c *Config) { c.PublishCount = 1001 }, false},
		{"republish-negative", func(c *Config) { c.RepublishMinutes = -1 }, false},
		{"republish-zero", func(c *Config) { c.RepublishMinutes = 0 }, true},
		{"republish-large", func(c *Config) { c.RepublishMinutes = 61 }, false},
		{"horizon-negative", func(c *Config) { c.RepublishHorizon = -time.Minute }, false},
		{"horizon-zero", func(c *Config) { c.RepublishHorizon = 0 }, true},
		{"ttl-negative", func(c *Config) { c.PublishTTL = -time.Second }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.change(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestBadInputsHTTP covers the HTTP rows of docs/bad-inputs-query.md: query
// parameters that do not parse are refused by the gateway with 400 and
// INVALID_ARGUMENT, and the gRPC refusals keep their message.
func TestBadInputsHTTP(t *testing.T) {
	q := offlineQueryd(t)
	h, err := NewHTTPHandler(context.Background(), NewServer(q))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, url string
		msg       string
	}{
		{"http/end-not-a-timestamp", "/v1/ads/popular_ads?end=yesterday",
			`parsing field "end": parsing time "yesterday" as "2006-01-02T15:04:05.999999999Z07:00": cannot parse "yesterday" as "2006"`},
		{"http/count-not-a-number", "/v1/ads/popular_ads?count=abc",
			`parsing field "count": strconv.ParseInt: parsing "abc": invalid syntax`},
		{"http/count-beyond-int32", "/v1/ads/popular_ads?count=99999999999",
			`parsing field "count": strconv.ParseInt: parsing "99999999999": value out of range`},
		{"http/last-minutes-not-a-number", "/v1/ads/ad-1/aggregated_count?last_minutes=ten",
			`parsing field "last_minutes": strconv.ParseInt: parsing "ten": invalid syntax`},
		{"http/empty-ad-id", "/v1/ads//aggregated_count?last_minutes=5",
			"ad_id is required"},
		{"http/grpc-refusal", "/v1/ads/popular_ads?count=1001&filter.country=us",
			"count 1001: must be in [1, 1000] (0 means 100)"},
		{"http/ad-id-invalid-utf8", "/v1/ads/%FF/aggregated_count?last_minutes=5",
			"ad_id is not valid UTF-8"},
		{"http/ad-id-nul", "/v1/ads/ad%00/aggregated_count?last_minutes=5",
			"ad_id contains control character U+0000 at byte 2"},
		{"http/ad-id-200kb", "/v1/ads/" + strings.Repeat("a", 200_000) + "/aggregated_count?last_minutes=5",
			"ad_id is 200000 bytes long, at most 128 allowed"},
		{"http/user-id-invalid-utf8", "/v1/ads/popular_ads?filter.user_id=%FF",
			"filter.user_id is not valid UTF-8"},
		{"http/unknown-parameter-ignored", "/v1/ads/popular_ads?bogus=1&count=-1",
			"count -1: must be in [1, 1000] (0 means 100)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, tt.url, nil))
			var st spb.Status
			if err := protojson.Unmarshal(rr.Body.Bytes(), &st); err != nil {
				t.Fatalf("decode %s: %v", rr.Body, err)
			}
			if rr.Code != http.StatusBadRequest || codes.Code(st.GetCode()) != codes.InvalidArgument || st.GetMessage() != tt.msg {
				t.Errorf("got %d %v %q\nwant 400 INVALID_ARGUMENT %q", rr.Code, codes.Code(st.GetCode()), st.GetMessage(), tt.msg)
			}
		})
	}
	// A bad request is the caller's fault: it must not set off the
	// unavailable alert.
	for rpc, c := range q.m.unavailables {
		if n := testutil.ToFloat64(c); n != 0 {
			t.Errorf("clickagg_queryd_queries_unavailable_total{rpc=%q} = %v after bad requests, want 0", rpc, n)
		}
	}
}

func TestFlagDefaults(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"-queryd.max-count=500", "-queryd.republish-minutes=5"}); err != nil {
		t.Fatal(err)
	}
	want := Config{
		MaxCount: 500, DefaultCount: 100, MaxWindow: 24 * time.Hour, CallTimeout: 5 * time.Second, MoveWait: 3 * time.Second,
		PollInterval: time.Second, PublishCount: 100, RepublishMinutes: 5, RecheckInterval: 10 * time.Second, RepublishHorizon: 6*time.Hour + 30*time.Minute, PublishTTL: 7 * 24 * time.Hour,
	}
	if c != want {
		t.Errorf("flags gave %+v, want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

// TestMaxIDLength: WithMaxIDLength, the routers' -router.max-id-length,
// bounds the ids a query may name; a negative one stops Run.
func TestMaxIDLength(t *testing.T) {
	parts, err := ring.NewPartitioner(partitions)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(New(testConfig(), parts, nil, nil, nil, testLogger(t), testNow, WithMaxIDLength(8)))
	req := &clickaggv1.GetAggregatedCountRequest{AdId: "ad-123456", From: ts(base, 0, 0), To: ts(base+1, 0, 0)}
	_, err = srv.GetAggregatedCount(context.Background(), req)
	if want := "ad_id is 9 bytes long, at most 8 allowed"; status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != want {
		t.Errorf("9-byte ad_id with -router.max-id-length 8: %v, want INVALID_ARGUMENT %q", err, want)
	}
	q := New(testConfig(), parts, nil, nil, nil, testLogger(t), testNow, WithMaxIDLength(-1))
	if err := q.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "-router.max-id-length -1: ") {
		t.Errorf("Run with -router.max-id-length -1 = %v, want an error naming the flag", err)
	}
}
