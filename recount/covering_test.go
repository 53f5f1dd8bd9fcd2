package recount

import (
	"testing"
	"time"
)

func TestCoveringRoundsOutToWholePeriods(t *testing.T) {
	c := Config{Period: 15}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	minute := func(s string) int64 { return at(s).Unix() / 60 }
	for _, tc := range []struct{ from, to, wantFrom, wantTo string }{
		{"2026-12-01T10:07:30Z", "2026-12-01T10:31:00Z", "2026-12-01T10:00:00Z", "2026-12-01T10:45:00Z"},
		{"2026-12-01T10:00:00Z", "2026-12-01T10:45:00Z", "2026-12-01T10:00:00Z", "2026-12-01T10:45:00Z"},
		{"2026-12-01T10:14:59Z", "2026-12-01T10:45:01Z", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"},
		{"2026-12-01T23:59:00Z", "2026-12-02T00:00:01Z", "2026-12-01T23:45:00Z", "2026-12-02T00:15:00Z"},
	} {
		got := c.Covering(at(tc.from), at(tc.to))
		if want := (Span{From: minute(tc.wantFrom), To: minute(tc.wantTo)}); got != want {
			t.Errorf("Covering(%s, %s) = %+v, want %+v", tc.from, tc.to, got, want)
		}
	}
}
