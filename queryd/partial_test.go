package queryd

import (
	"fmt"
	"slices"
	"testing"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// TestOwnerDownNeverPartial is the normal counterpart of the
// partial-queryd negative control (partial_break_test.go, -tags
// chaosbreak): with an owner down, its partitions' queries fail.
func TestOwnerDownNeverPartial(t *testing.T) {
	checkOwnerDown(t, false)
}

// checkOwnerDown stops one of three aggregators and asks for the top ads
// and the count of an ad of one of its partitions. With partial, both must
// answer OK with what the live owners hold, below the truth; without, both
// must fail with UNAVAILABLE naming the lost partitions.
func checkOwnerDown(t *testing.T, partial bool) {
	tr := newTruth(newPartitioner(t), 2, 2000, 100, 10)
	tr.setAllWatermarks((base + 20) * minuteMs)
	e := newEnv(t, tr, queryConfig())
	e.start()
	a := e.aggs[1]
	lost := e.partitionsOf(a.id)
	live := func(p int) bool { return !slices.Contains(lost, p) }
	ad := ""
	for i := range 100 {
		if c := fmt.Sprintf("ad-%03d", i); !live(e.parts.Partition(c)) && tr.count(c, base, base+10, Filter{}) > 0 {
			ad = c
			break
		}
	}
	if ad == "" {
		t.Fatal("no ad with clicks in the stopped owner's partitions")
	}
	a.srv.Stop()

	top, err := e.qc.GetPopularAds(e.ctx, &clickaggv1.GetPopularAdsRequest{Count: 10, WindowMinutes: 10, End: ts(base+10, 0, 0)})
	count, cerr := e.qc.GetAggregatedCount(e.ctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, From: ts(base, 0, 0), To: ts(base+10, 0, 0)})
	if !partial {
		unavailable(t, err, lost)
		unavailable(t, cerr, []int{e.parts.Partition(ad)})
		return
	}
	if err != nil || cerr != nil {
		t.Fatalf("with partial-queryd: top %v, count %v; want both OK", err, cerr)
	}
	want := rank(tr.counts(base, base+10, Filter{}, live), 10)
	if got := protoAds(top.GetAds()); !slices.Equal(got, want) {
		t.Errorf("top: %v, want the live owners' %v", got, want)
	}
	if slices.Equal(want, tr.top(base, base+10, 10, Filter{})) {
		t.Error("the live owners' top list is the whole truth's: the test shows nothing")
	}
	if n, all := count.GetCount(), tr.count(ad, base, base+10, Filter{}); n != 0 || all == 0 {
		t.Errorf("count of %s: %d of a true %d, want 0 (its only owner is down)", ad, n, all)
	}
}
