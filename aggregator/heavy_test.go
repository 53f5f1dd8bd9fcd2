package aggregator

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

// TestPartitionStatusHeavy: PartitionStatus.heavy reports a serving
// partition's heaviest ads with their rate over the sketch's window scaled
// to a minute, exactly while the sketch has a counter for every ad; events
// replayed while the partition was restoring are not reported (a backlog
// applied at once would look like a hot ad).
func TestPartitionStatusHeavy(t *testing.T) {
	e := newEnv(t, 2)
	// On a 10s boundary, so that the sketch's window is exactly the time
	// since the partition's first event.
	t0 := time.Unix(1_800_000_000, 0)
	clk := testsupport.NewClock(t0)
	// Ads whose own partition is 0 (ad-hot, ad-cold) and 1 (ad-old).
	var hot, cold, old string
	for i := 0; hot == "" || cold == "" || old == ""; i++ {
		ad := "ad-" + strconv.Itoa(i)
		switch {
		case e.part.Partition(ad) == 0 && hot == "":
			hot = ad
		case e.part.Partition(ad) == 0 && cold == "":
			cold = ad
		case e.part.Partition(ad) == 1 && old == "":
			old = ad
		}
	}
	events := func(prefix, ad string, n int) []*clickaggv1.LogEvent {
		evs := make([]*clickaggv1.LogEvent, n)
		for i := range evs {
			evs[i] = &clickaggv1.LogEvent{EventId: prefix + strconv.Itoa(i), AdId: ad, ClickTimeMs: t0.UnixMilli() - 60_000, UserId: "u", Ip: "10.0.0.1", Country: "US"}
		}
		return evs
	}
	// A backlog in partition 1 before anyone owns it: replayed on take.
	e.send(events("old-", old, 500))

	n := e.start(testConfig("agg-0"), e.cl, clk.Now)
	m := member(t, e.cl, "agg-0", 0)
	e.assign(owners(2, m, 1))
	n.waitServing(e.last)
	testserver.Eventually(t, wait, func() error {
		st, err := n.client.PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
		if err != nil {
			return err
		}
		for _, p := range st.GetPartitions() {
			if p.GetPartition() == 0 && p.GetState() == "serving" {
				return nil
			}
		}
		return fmt.Errorf("partition 0 not serving: %v", st.GetPartitions())
	})

	// Partition 0 serves before its clicks arrive: they are fed.
	e.send(events("hot-", hot, 600))
	e.send(events("cold-", cold, 30))
	e.send(events("hot-again-", hot, 300))
	n.waitServing(e.last)
	clk.Advance(30 * time.Second)

	want := map[int32][]*clickaggv1.AdCount{
		// 900 and 30 events over 30s, per minute.
		0: {{AdId: hot, Count: 1800}, {AdId: cold, Count: 60}},
		1: nil,
	}
	testserver.Eventually(t, wait, func() error {
		st, err := n.client.PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
		if err != nil {
			return err
		}
		got := map[int32][]*clickaggv1.AdCount{}
		for _, p := range st.GetPartitions() {
			got[p.GetPartition()] = p.GetHeavy()
		}
		if len(got) != 2 {
			return fmt.Errorf("partitions reported: %v", st.GetPartitions())
		}
		if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
			return fmt.Errorf("heavy (-want +got):\n%s", d)
		}
		return nil
	})

	// A minute later the window has slid past every click.
	clk.Advance(time.Minute)
	st, err := n.client.PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.GetPartitions() {
		if len(p.GetHeavy()) != 0 {
			t.Fatalf("partition %d heavy %v a minute after its last click, want none", p.GetPartition(), p.GetHeavy())
		}
	}
}
