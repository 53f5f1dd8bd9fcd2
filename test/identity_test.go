package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
)

// TestClickIdentity checks the documented identity of a click, the pair
// (ad_id, event_id), on a running cluster: one event_id sent with 41 ads
// (some sharing a partition, some not) and with a split ad counts once for
// every ad, before the split, while the ad is split and after the unsplit;
// retries of the same pairs through the other router count nothing. Before
// the fix, ads sharing a partition shared the event_id's dedup slot, and all
// but one of them lost the click.
func TestClickIdentity(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test over three minutes of event time")
	}
	// Mostly waiting for minutes of the clock to pass: it runs beside the
	// other waiting tests (go test -parallel, GOMAXPROCS by default).
	t.Parallel()
	const (
		partitions = 16
		skew       = 5 * time.Second
	)
	c := newTestCluster(t, clusterSpec{
		partitions: partitions, coordinators: 1, routers: 2, aggregators: 3,
		// Short lead times so that a split takes effect within a minute;
		// no automatic splits.
		commonFlags: []string{
			"-router.max-clock-skew=" + skew.String(),
			"-hotkey.max-staleness=2s", "-hotkey.confirm-interval=500ms",
			"-hotkey.safety=4s", "-hotkey.lead-time=6s",
			"-hotkey.split-rate=1000000", "-hotkey.unsplit-rate=1",
		},
	})
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)

	const splitAd = "dupx-split"
	ads := []string{splitAd}
	for i := range 41 {
		ads = append(ads, fmt.Sprintf("dupx-%d", i))
	}
	parts, err := ring.NewPartitioner(partitions)
	if err != nil {
		t.Fatal(err)
	}
	byPartition := map[int]int{}
	for _, ad := range ads {
		byPartition[parts.Partition(ad)]++
	}
	shared := 0
	for _, n := range byPartition {
		shared += n - 1
	}
	if shared == 0 || len(byPartition) < 2 {
		t.Fatalf("the ads must both share partitions and not: %v", byPartition)
	}

	ctx := context.Background()
	ingest := c.ingestClients()
	sent := map[adMinute]map[string]bool{} // ground truth: distinct pairs per (ad, minute)
	// send sends, in minute m, the event_id same-id-42 with every ad, and
	// per ad a few event_ids that other ads use too; then all of it again
	// through the other router.
	send := func(m int64) {
		t.Helper()
		var evs []*clickaggv1.ClickEvent
		for i, ad := range ads {
			ids := []string{"same-id-42", fmt.Sprintf("shared-%d", i%3), fmt.Sprintf("shared-%d", (i+1)%3)}
			for j, id := range ids {
				evs = append(evs, &clickaggv1.ClickEvent{
					EventId: id, AdId: ad, UserId: "user-1", Ip: "192.0.2.1", Country: "US",
					ClickTime: timestamppb.New(time.Unix(m*60, int64(1+i+j)*int64(time.Millisecond))),
				})
				k := adMinute{ad, m}
				if sent[k] == nil {
					sent[k] = map[string]bool{}
				}
				sent[k][id] = true
			}
		}
		for r := range 2 {
			resp, err := ingest[r].Ingest(ctx, &clickaggv1.IngestRequest{Events: evs})
			if err != nil {
				t.Fatalf("ingest minute %d through router %d: %v", m, r, err)
			}
			if resp.Accepted != int64(len(evs)) {
				t.Fatalf("ingest minute %d: accepted %d of %d: %v", m, resp.Accepted, len(evs), resp.Rejected)
			}
		}
	}
	// The routers accept clicks up to -router.max-clock-skew ahead of
	// their clock (this machine's): minute m's from a second after that.
	waitMinute := func(m int64) {
		time.Sleep(time.Until(time.Unix(m*60, 0).Add(-skew + time.Second)))
	}

	split, err := cc.SplitKey(ctx, &clickaggv1.SplitKeyRequest{AdId: splitAd, Ways: 3})
	if err != nil {
		t.Fatal(err)
	}
	from := split.Split.From.AsTime().Unix() / 60
	t.Logf("%s split over partitions %v from minute %d", splitAd, split.Split.Partitions, from)
	// The split's lead time can put its first minute two minutes ahead,
	// when it is asked for late in a minute: the minute before it may not
	// have begun, and its clicks would be ahead of the routers' clocks.
	waitMinute(from - 1)
	send(from - 1)
	waitMinute(from)
	send(from)
	unsplit, err := cc.UnsplitKey(ctx, &clickaggv1.UnsplitKeyRequest{AdId: splitAd})
	if err != nil {
		t.Fatal(err)
	}
	to := unsplit.Split.To.AsTime().Unix() / 60
	t.Logf("%s unsplit from minute %d", splitAd, to)
	waitMinute(to)
	send(to)

	// Nothing more is sent: once every partition has applied its log, the
	// counts are final, whether or not their minutes have completed.
	waitCaughtUp(t, cc, partitions, 2*time.Minute)
	qc := c.queryClient()
	for k, ids := range sent {
		resp, err := qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: k.ad, From: minuteTS(k.minute), To: minuteTS(k.minute + 1)})
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(len(ids)); resp.Count != want {
			t.Errorf("%s minute %d: count %d, want %d", k.ad, k.minute, resp.Count, want)
		}
	}
	t.Logf("%d (ad, minute) counts exact, each event_id on %d ads in %d partitions, before, during and after a split", len(sent), len(ads), len(byPartition))
}
