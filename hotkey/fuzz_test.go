package hotkey

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/tally"
)

// FuzzDecodeTable feeds the split table decoder arbitrary values of its
// etcd key. It must never panic; a table it accepts routes every click to
// a partition in range, one of those Partitions lists for the click's
// ad and minute (the sum over them is the exact count), and encodes to a
// value that decodes to the same table.
func FuzzDecodeTable(f *testing.F) {
	parts, err := ring.NewPartitioner(testPartitions)
	if err != nil {
		f.Fatal(err)
	}
	s := &Store{partitions: testPartitions}
	for _, st := range []stored{
		{Version: 3, Splits: []Interval{{AdID: "hot", Partitions: []int{1, 4, 7}, FromMinute: 29_000_000, ToMinute: 29_000_010, Members: []string{"agg-1"}}, {AdID: "hot", Partitions: []int{2}, FromMinute: 29_000_010}}},
		{Version: 1, Splits: []Interval{{AdID: "a", Partitions: []int{0, 0}, FromMinute: 5}}},
		{Version: 2, Splits: []Interval{{AdID: "a", Partitions: []int{11}, FromMinute: -1 << 62, ToMinute: 1 << 62}}},
	} {
		b, err := json.Marshal(st)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "hot", "e-1", int64(29_000_005)*60_000)
	}
	f.Add([]byte(`{"version":1,"splits":[{"ad_id":"x","partitions":[16]}]}`), "x", "e", int64(0))
	f.Fuzz(func(t *testing.T, v []byte, adID, eventID string, clickMs int64) {
		tab, err := s.decode(v)
		if err != nil {
			return
		}
		p := tab.Route(parts, adID, eventID, clickMs)
		m := tally.MinuteOf(clickMs)
		ps := tab.Partitions(parts, adID, m, m+1)
		if p < 0 || p >= testPartitions || !slices.Contains(ps, p) {
			t.Fatalf("click of %q at %d routed to partition %d; the ad's partitions for minute %d are %v", adID, clickMs, p, m, ps)
		}
		for _, iv := range tab.Splits() {
			q := tab.Route(parts, iv.AdID, eventID, iv.FromMinute*60_000)
			if iv.FromMinute > -1<<40 && iv.FromMinute < 1<<40 && !slices.Contains(iv.Partitions, q) {
				t.Fatalf("click of %q at the start of %+v routed to partition %d", iv.AdID, iv, q)
			}
		}
		enc, err := encode(tab)
		if err != nil {
			t.Fatal(err)
		}
		again, err := s.decode([]byte(enc))
		if err != nil {
			t.Fatalf("table %s encoded as %s does not decode: %v", v, enc, err)
		}
		if again.Version() != tab.Version() || !slices.EqualFunc(again.Splits(), tab.Splits(), func(a, b Interval) bool {
			return a.AdID == b.AdID && a.FromMinute == b.FromMinute && a.ToMinute == b.ToMinute && slices.Equal(a.Partitions, b.Partitions) && slices.Equal(a.Members, b.Members)
		}) {
			t.Fatalf("table %s encoded as %s decodes to another table", v, enc)
		}
	})
}
