//go:build chaosbreak

package breakage

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want []Switch
		err  string
	}{
		{v: ""},
		{v: "dedup-off", want: []Switch{DedupOff}},
		{v: " offset-apart , partial-queryd,", want: []Switch{OffsetApart, PartialQueryd}},
		{v: "dedup-off,fencing-off,ack-before-redis,offset-apart,partial-queryd", want: []Switch{DedupOff, OffsetApart, FencingOff, AckBeforeRedis, PartialQueryd}},
		{v: "dedup-off,dedupoff", err: `CLICKAGG_BREAK: unknown switch "dedupoff"; valid: dedup-off, offset-apart, fencing-off, ack-before-redis, partial-queryd`},
	} {
		t.Run(tc.v, func(t *testing.T) {
			set, err := Parse(tc.v)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("Parse(%q): %v, want %q", tc.v, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want uint64
			for _, s := range tc.want {
				want |= 1 << s
			}
			if set != want {
				t.Errorf("Parse(%q) = %b, want %b", tc.v, set, want)
			}
		})
	}
}

func TestSet(t *testing.T) {
	if On(FencingOff) || On(DedupOff) {
		t.Fatalf("switches on without %s: set it to nothing for the tests", EnvVar)
	}
	undo := Set(FencingOff, true)
	undoDedup := Set(DedupOff, true)
	if !On(FencingOff) || !On(DedupOff) || On(OffsetApart) {
		t.Fatal("Set turned on the wrong switches")
	}
	undo()
	if On(FencingOff) || !On(DedupOff) {
		t.Fatal("undoing one Set changed another switch")
	}
	undoDedup()
	if On(DedupOff) {
		t.Fatal("undo left the switch on")
	}
	if names := Names(); strings.Count(names, ",") != 4 {
		t.Errorf("Names() = %q, want all 5", names)
	}
}
