package tally

import (
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// TestDecodeEventFast: decodeEvent, which tries the fast path first, and
// decodeEventSlow agree on every event, whatever the form: long, non-ASCII
// or invalid strings, repeated, unknown and mistyped fields, truncation.
func TestDecodeEventFast(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	strs := []string{"", "a", "ad-1", "exactly8", "nine byte", "0123456789abcdef", "é", "abcdefgé", "\xff", "abcdefghi\xff",
		strings.Repeat("x", 127), strings.Repeat("y", 128), strings.Repeat("z", 300) + "é"}
	fast := 0
	for i := range 200_000 {
		var b []byte
		for range r.IntN(9) {
			switch x := r.IntN(20); {
			case x < 14:
				num := protowire.Number(1 + r.IntN(6))
				if num == evClickMs {
					b = protowire.AppendTag(b, num, protowire.VarintType)
					b = protowire.AppendVarint(b, r.Uint64()>>r.IntN(64))
				} else {
					b = protowire.AppendTag(b, num, protowire.BytesType)
					b = protowire.AppendString(b, strs[r.IntN(len(strs))])
				}
			case x < 16: // a known field of the other wire type
				num := protowire.Number(1 + r.IntN(6))
				if num == evClickMs {
					b = protowire.AppendTag(b, num, protowire.BytesType)
					b = protowire.AppendString(b, "12")
				} else {
					b = protowire.AppendTag(b, num, protowire.VarintType)
					b = protowire.AppendVarint(b, 7)
				}
			case x < 18: // unknown fields, some with long tags
				num := protowire.Number([]int{0, 7, 15, 16, 1000}[r.IntN(5)])
				b = protowire.AppendTag(b, num, protowire.Type(r.IntN(6)))
				b = protowire.AppendVarint(b, uint64(r.IntN(300)))
			default: // random bytes
				for range 1 + r.IntN(3) {
					b = append(b, byte(r.Uint32()))
				}
			}
		}
		if r.IntN(10) == 0 && len(b) > 0 {
			b = b[:r.IntN(len(b))]
		}
		var got, want, f rawEvent
		err := decodeEvent(&got, b)
		errS := decodeEventSlow(&want, b)
		if (err == nil) != (errS == nil) || (err == nil && got != want) {
			t.Fatalf("case %d %x: decodeEvent %+v, %v; decodeEventSlow %+v, %v", i, b, got, err, want, errS)
		}
		if decodeEventFast(&f, b) {
			fast++
			if errS != nil || f != want {
				t.Fatalf("case %d %x: decodeEventFast %+v; decodeEventSlow %+v, %v", i, b, f, want, errS)
			}
		}
	}
	if fast < 20_000 {
		t.Fatalf("the fast path decoded only %d events", fast)
	}
}

// TestStrtabInsertEmptied: a string interned into an index that is
// allocated but empty (every string freed) is found again.
func TestStrtabInsertEmptied(t *testing.T) {
	tab := newStrtab()
	a := tab.intern("a")
	tab.incref(a)
	tab.decref(a)
	if tab.live() != 0 {
		t.Fatalf("%d live strings", tab.live())
	}
	b := tab.intern("b")
	tab.incref(b)
	if got, ok := tab.lookup("b"); !ok || got != b || tab.str(b) != "b" || tab.guess(tab.hashes[b]) != b {
		t.Fatalf("lookup(b) = %d, %v; want %d", got, ok, b)
	}
	if _, ok := tab.lookup("a"); ok {
		t.Fatal("found a freed string")
	}
}

// TestApplyEncodedBenchLog: ApplyEncoded of the bench-shaped log (500-event
// entries, so warm prepares several chunks of each) and Apply of its
// decoded entries give the same state.
func TestApplyEncodedBenchLog(t *testing.T) {
	l := newEncodedLog(t, 4, 5000, elBatch)
	a, b := newTestPartition(t, benchOpts), newTestPartition(t, benchOpts)
	for i, data := range l.data {
		var e clickaggv1.LogEntry
		if err := proto.Unmarshal(data, &e); err != nil {
			t.Fatal(err)
		}
		a.Apply(l.ids[i], &e)
		if _, err := b.ApplyEncoded(l.ids[i], data, nil); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 || i == len(l.data)-1 {
			if err := equalSnaps(a.Snapshot(1), b.Snapshot(1)); err != nil {
				t.Fatalf("after entry %d: %v", i, err)
			}
		}
	}
	if a.Stats() != b.Stats() || a.Stats().Duplicates == 0 || a.Stats().Late == 0 {
		t.Fatalf("stats %+v, want %+v with duplicates and late events", b.Stats(), a.Stats())
	}
}
