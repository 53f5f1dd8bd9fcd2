package archive

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// FuzzDecodeEntry feeds the archiver's log entry decoder arbitrary bytes.
// It must never panic and, checking UTF-8, accept exactly what
// proto.Unmarshal accepts as a LogEntry, with the same events in order and
// the same tick: a click is archived as the aggregators counted it.
func FuzzDecodeEntry(f *testing.F) {
	for _, e := range []*clickaggv1.LogEntry{
		{RouterId: "r1", Events: []*clickaggv1.LogEvent{
			{EventId: "e1", AdId: "ad-1", ClickTimeMs: 1795654923456, UserId: "u", Ip: "10.0.0.1", Country: "US"},
			{EventId: "é ✓", AdId: "ad-ü", ClickTimeMs: -1, UserId: "u2", Ip: "2001:db8::1", Country: "DE"},
		}},
		{TickMs: 1795654920000},
		{Events: []*clickaggv1.LogEvent{{}}},
	} {
		b, err := proto.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, tick, err := decodeEntry(nil, 7, partlog.Entry{ID: "5-1", Data: data}, true)
		var want clickaggv1.LogEntry
		werr := proto.Unmarshal(data, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("decodeEntry error %v, proto.Unmarshal error %v", err, werr)
		}
		if err != nil {
			return
		}
		if tick != want.GetTickMs() || len(rows) != len(want.GetEvents()) {
			t.Fatalf("decoded tick %d, %d events; want %d, %d", tick, len(rows), want.GetTickMs(), len(want.GetEvents()))
		}
		for i, w := range want.GetEvents() {
			r := Row{EventID: w.EventId, AdID: w.AdId, ClickTime: w.ClickTimeMs, UserID: w.UserId, IP: w.Ip, Country: w.Country, LogPartition: 7, LogOffset: "5-1", EntryIndex: int32(i)}
			if rows[i] != r {
				t.Fatalf("event %d decoded as %+v, want %+v", i, rows[i], r)
			}
		}
	})
}
