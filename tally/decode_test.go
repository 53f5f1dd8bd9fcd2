package tally

import (
	"errors"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// TestApplyEncodedMatchesApply: ApplyEncoded of an entry's wire form and
// Apply of the decoded entry give the same state (the same snapshots), and
// ApplyEncoded reports every event's ad.
func TestApplyEncodedMatchesApply(t *testing.T) {
	entries := snapLog()
	a, b := newTestPartition(t, snapOpts), newTestPartition(t, snapOpts)
	var st store
	for i, e := range entries {
		le := e.proto()
		data, err := proto.Marshal(le)
		if err != nil {
			t.Fatal(err)
		}
		var decoded clickaggv1.LogEntry
		if err := proto.Unmarshal(data, &decoded); err != nil {
			t.Fatal(err)
		}
		a.Apply(e.id, &decoded)
		ads, err := b.ApplyEncoded(e.id, data, []string{"before"})
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		want := []string{"before"}
		for _, ev := range le.Events {
			want = append(want, ev.AdId)
		}
		if !slices.Equal(ads, want) {
			t.Fatalf("entry %d: ads %v, want %v", i, ads, want)
		}
		if i%97 == 0 || i == len(entries)-1 {
			sa, sb := a.Snapshot(1), b.Snapshot(1)
			if err := equalSnaps(sa, sb); err != nil {
				t.Fatalf("after entry %d: %v", i, err)
			}
			a.MarkSaved(sa)
			b.MarkSaved(sb)
			st.save(sb)
		}
	}
	if a.Stats() != b.Stats() {
		t.Fatalf("stats %+v, want %+v", b.Stats(), a.Stats())
	}
}

// TestApplyEncodedRefusesMalformed: bytes proto.Unmarshal refuses are
// refused, and nothing of them is applied; what it accepts (unknown
// fields, known fields of another wire type) is accepted the same way.
func TestApplyEncodedRefusesMalformed(t *testing.T) {
	const t0 = int64(1_772_366_400_000) // a whole minute
	good := &clickaggv1.LogEntry{RouterId: "r", TickMs: t0 + 60_000, Events: []*clickaggv1.LogEvent{
		{EventId: "e1", AdId: "ad-1", ClickTimeMs: t0, UserId: "u", Ip: "192.0.2.1", Country: "US"},
		{EventId: "e2", AdId: "ad-2", ClickTimeMs: t0, UserId: "u", Ip: "192.0.2.1", Country: "US"},
	}}
	data, err := proto.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	// An event whose ad_id is not UTF-8, after a good event.
	bad := protowire.AppendTag(nil, entryEvents, protowire.BytesType)
	inner := protowire.AppendTag(nil, evEventID, protowire.BytesType)
	inner = protowire.AppendString(inner, "e3")
	inner = protowire.AppendTag(inner, evAdID, protowire.BytesType)
	inner = protowire.AppendBytes(inner, []byte{0xff, 0xfe})
	bad = protowire.AppendBytes(bad, inner)
	// Unknown fields and a known field of the wrong wire type.
	extra := protowire.AppendTag(nil, 99, protowire.VarintType)
	extra = protowire.AppendVarint(extra, 7)
	extra = protowire.AppendTag(extra, entryTick, protowire.BytesType)
	extra = protowire.AppendString(extra, "not a tick")
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"good", data, true},
		{"truncated", data[:len(data)-3], false},
		{"bad-utf8", append(slices.Clone(data), bad...), false},
		{"bad-tag", append(slices.Clone(data), 0x80), false},
		{"unknown-fields", append(slices.Clone(data), extra...), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want clickaggv1.LogEntry
			protoErr := proto.Unmarshal(tc.data, &want)
			if (protoErr == nil) != tc.ok {
				t.Fatalf("proto.Unmarshal: %v, the test expects ok=%v", protoErr, tc.ok)
			}
			p := newTestPartition(t, testOpts)
			ads, err := p.ApplyEncoded("1-1", tc.data, nil)
			if !tc.ok {
				if !errors.Is(err, ErrEntry) || len(ads) != 0 || p.Offset() != "" || p.Stats() != (Stats{}) {
					t.Fatalf("ApplyEncoded: %v, ads %v, offset %q, stats %+v; want ErrEntry and nothing applied", err, ads, p.Offset(), p.Stats())
				}
				return
			}
			ref := newTestPartition(t, testOpts)
			ref.Apply("1-1", &want)
			if err != nil || len(ads) != len(want.Events) || p.Stats() != ref.Stats() || p.Watermark() != ref.Watermark() {
				t.Fatalf("ApplyEncoded: %v, ads %v, stats %+v watermark %d; want %+v %d", err, ads, p.Stats(), p.Watermark(), ref.Stats(), ref.Watermark())
			}
		})
	}
}
