package router

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// validate checks e against the rules in doc.go and returns it in the form
// it is stored, or every problem found, joined by "; ", so that a client
// fixes its event in one round trip.
func (r *Router) validate(e *clickaggv1.ClickEvent, now time.Time) (logEvent, string) {
	if e == nil {
		return logEvent{}, "event is nil"
	}
	var problems []string
	add := func(p string) {
		if p != "" {
			problems = append(problems, p)
		}
	}
	add(idProblem("event_id", e.GetEventId(), r.cfg.MaxIDLength))
	add(idProblem("ad_id", e.GetAdId(), r.cfg.MaxIDLength))
	add(idProblem("user_id", e.GetUserId(), r.cfg.MaxIDLength))
	ip, p := canonicalIP(e.GetIp())
	add(p)
	country, p := canonicalCountry(e.GetCountry())
	add(p)
	ms, p := r.clickTime(e, now)
	add(p)
	if len(problems) > 0 {
		return logEvent{}, strings.Join(problems, "; ")
	}
	return logEvent{
		eventID: e.GetEventId(),
		adID:    e.GetAdId(),
		ms:      ms,
		userID:  e.GetUserId(),
		ip:      ip,
		country: country,
	}, ""
}

// idProblem says what is wrong with an identifier, or "". Control characters
// are refused because ids end up in logs, CSV exports and terminals, where
// they would forge or hide lines.
func idProblem(field, s string, maxLen int) string {
	switch {
	case s == "":
		return field + " is empty"
	case len(s) > maxLen:
		return fmt.Sprintf("%s is %d bytes long, at most %d allowed", field, len(s), maxLen)
	case printableASCII(s):
		return ""
	case !utf8.ValidString(s):
		return field + " is not valid UTF-8"
	}
	for i, c := range s {
		if unicode.IsControl(c) {
			return fmt.Sprintf("%s contains control character %U at byte %d", field, c, i)
		}
	}
	return ""
}

// printableASCII reports whether s is printable ASCII only, as almost every
// id is: the common case skips the rune-by-rune checks.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// canonicalIP returns the one spelling of an address, so that a filter on ip
// matches however the client wrote it: lower-case hex, zeros compressed, and
// IPv4-mapped IPv6 written as IPv4.
func canonicalIP(s string) (string, string) {
	if s == "" {
		return "", "ip is empty"
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", fmt.Sprintf("ip %s is not a valid IPv4 or IPv6 address", quote(s))
	}
	if a.Zone() != "" {
		// A zone names an interface of the sender's host: it means nothing
		// here and would split one address into several.
		return "", fmt.Sprintf("ip %s has an IPv6 zone (%s), which is not accepted", quote(s), quote(a.Zone()))
	}
	// Most clients already send the canonical spelling: keep their string
	// rather than allocate an equal one.
	var buf [64]byte
	if c := a.Unmap().AppendTo(buf[:0]); string(c) != s {
		return string(c), ""
	}
	return s, ""
}

// canonicalCountry returns the upper-case code.
func canonicalCountry(s string) (string, string) {
	if s == "" {
		return "", "country is empty"
	}
	if len(s) != 2 || !asciiLetter(s[0]) || !asciiLetter(s[1]) {
		return "", fmt.Sprintf("country %s is not an ISO 3166-1 alpha-2 code (two letters, such as \"US\")", quote(s))
	}
	up := s
	if !(isUpper(s[0]) && isUpper(s[1])) {
		up = strings.ToUpper(s)
	}
	if !assignedCountry(up) {
		return "", fmt.Sprintf("country %s is not an assigned ISO 3166-1 alpha-2 code", quote(s))
	}
	return up, ""
}

func isUpper(b byte) bool { return 'A' <= b && b <= 'Z' }

func asciiLetter(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z'
}

// clickTime returns the click time in Unix milliseconds. Both bounds are
// inclusive. The horizon bound is what makes dedup exact: the aggregators
// remember clicks (ad_id, event_id) for at least the horizon, so a retry of an event
// they may have forgotten is refused here instead of counted twice.
func (r *Router) clickTime(e *clickaggv1.ClickEvent, now time.Time) (int64, string) {
	ts := e.GetClickTime()
	if ts == nil {
		return 0, "click_time is missing"
	}
	if err := ts.CheckValid(); err != nil {
		// CheckValid's own text prints the message in protobuf text format,
		// whose spacing is randomized on purpose; say it in stable words.
		if n := ts.GetNanos(); n < 0 || n > 999_999_999 {
			return 0, fmt.Sprintf("click_time is not a valid timestamp: nanos %d is outside [0, 999999999]", n)
		}
		return 0, fmt.Sprintf("click_time is not a valid timestamp: seconds %d is outside the years 0001 to 9999", ts.GetSeconds())
	}
	t := ts.AsTime()
	if ahead := t.Sub(now); ahead > r.cfg.MaxSkew {
		return 0, fmt.Sprintf("click_time %s is %s ahead of the router clock, over the allowed clock skew of %v by %s",
			t.Format(time.RFC3339Nano), duration(ahead), r.cfg.MaxSkew, duration(ahead-r.cfg.MaxSkew))
	}
	if age := now.Sub(t); age > r.cfg.Horizon {
		return 0, fmt.Sprintf("click_time %s is %s behind the router clock, over the acceptance horizon of %v by %s",
			t.Format(time.RFC3339Nano), duration(age), r.cfg.Horizon, duration(age-r.cfg.Horizon))
	}
	return t.UnixMilli(), ""
}

// duration prints d, or says it is out of range where time.Time.Sub
// saturated (times centuries away), instead of printing a meaningless
// 2562047h47m16.854775807s.
func duration(d time.Duration) string {
	if d >= math.MaxInt64/2 {
		return "more than 146 years"
	}
	return d.String()
}

// quoteMax bounds how much of a client's value a reason repeats.
const quoteMax = 64

// quote quotes a client's value for a reason: always valid UTF-8 (so the
// reason can be sent in a proto string), at most quoteMax bytes of it.
func quote(s string) string {
	if len(s) <= quoteMax {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:quoteMax], len(s))
}
