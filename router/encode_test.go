package router

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// TestEncodingMatchesProto: the hand-written encoding of a log entry is
// byte for byte what proto.Marshal makes of the same LogEntry, and decodes
// back to it.
func TestEncodingMatchesProto(t *testing.T) {
	events := []logEvent{
		{eventID: "e-1", adID: "ad-1", ms: 1_772_366_400_000, userID: "user-1", ip: "192.0.2.1", country: "US"},
		{eventID: "é-2 ✓", adID: "ad-🙂", ms: 1, userID: "u", ip: "2001:db8::1", country: "FR"},
		{eventID: string(bytes.Repeat([]byte("x"), 300)), adID: "a", ms: 1 << 40, userID: "u2", ip: "10.0.0.1", country: "DE"},
	}
	for _, routerID := range []string{"router-1", ""} {
		b := appendRouterID(nil, routerID)
		want := &clickaggv1.LogEntry{RouterId: routerID}
		for _, e := range events {
			b = e.appendTo(b)
			want.Events = append(want.Events, &clickaggv1.LogEvent{
				EventId: e.eventID, AdId: e.adID, ClickTimeMs: e.ms, UserId: e.userID, Ip: e.ip, Country: e.country,
			})
		}
		wantBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, wantBytes) {
			t.Errorf("router %q: encoded\n%x\nproto.Marshal gives\n%x", routerID, b, wantBytes)
		}
		var got clickaggv1.LogEntry
		if err := proto.Unmarshal(b, &got); err != nil || !proto.Equal(&got, want) {
			t.Errorf("router %q: decoded %v (%v), want %v", routerID, &got, err, want)
		}
	}
}
