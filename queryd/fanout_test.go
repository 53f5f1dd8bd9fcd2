package queryd

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testserver"
)

// queryConfig keeps the publisher nearly idle: these tests are about
// queries.
func queryConfig() Config {
	c := testConfig()
	c.PollInterval = time.Hour
	return c
}

func newPartitioner(t *testing.T) *ring.Partitioner {
	parts, err := ring.NewPartitioner(partitions)
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

func protoAds(ads []*clickaggv1.AdCount) []AdCount { return fromProtoAds(ads) }

type window struct{ from, to int64 }

// TestQueriesExact checks GetAggregatedCount and GetPopularAds, over gRPC
// and over HTTP, against brute force on the generated clicks, for several
// windows, counts and filters, ties included.
func TestQueriesExact(t *testing.T) {
	tr := newTruth(newPartitioner(t), 1, 6000, 300, nowOffset+1)
	// Partition 0 lags: windows ending after base+12 are complete nowhere,
	// windows ending at or before it everywhere.
	tr.setAllWatermarks((base + 15) * minuteMs)
	tr.setWatermark(0, (base+12)*minuteMs)
	e := newEnv(t, tr, queryConfig())
	e.start()

	windows := []window{{base, base + nowOffset + 1}, {base + 5, base + 6}, {base + 10, base + 20}, {base, base + 12}, {base + 29, base + 31}}
	filters := []struct {
		req  *clickaggv1.Filter
		want Filter
	}{
		{nil, Filter{}},
		{&clickaggv1.Filter{Country: "us"}, Filter{Country: "US"}},
		{&clickaggv1.Filter{Ip: "::ffff:10.0.0.1"}, Filter{IP: "10.0.0.1"}},
		{&clickaggv1.Filter{Ip: "2001:DB8::2"}, Filter{IP: "2001:db8::2"}},
		{&clickaggv1.Filter{UserId: "u3"}, Filter{UserID: "u3"}},
		{&clickaggv1.Filter{Country: "de", UserId: "u5"}, Filter{Country: "DE", UserID: "u5"}},
		{&clickaggv1.Filter{Country: "FR", Ip: "192.168.7.9", UserId: "u1"}, Filter{Country: "FR", IP: "192.168.7.9", UserID: "u1"}},
	}
	ads := []string{"ad-000", "ad-007", "ad-042", "ad-150", "ad-299", "ad-nonexistent"}
	for p := range partitions {
		ads = append(ads, e.adIn(p))
	}

	t.Run("count", func(t *testing.T) {
		for _, w := range windows {
			for _, f := range filters {
				for _, ad := range ads {
					resp, err := e.qc.GetAggregatedCount(e.ctx, &clickaggv1.GetAggregatedCountRequest{
						AdId: ad, From: ts(w.from, 0, 0), To: ts(w.to, 0, 0), Filter: f.req,
					})
					if err != nil {
						t.Fatalf("%s %v %v: %v", ad, w, f.want, err)
					}
					want := tr.count(ad, w.from, w.to, f.want)
					complete := tr.wm[e.parts.Partition(ad)] >= w.to*minuteMs
					if resp.GetCount() != want || resp.GetComplete() != complete || resp.GetAdId() != ad ||
						resp.GetFrom().GetSeconds() != w.from*60 || resp.GetTo().GetSeconds() != w.to*60 {
						t.Errorf("%s %v %+v: got %v, want count %d complete %v", ad, w, f.want, resp, want, complete)
					}
				}
			}
		}
	})

	t.Run("count-last-minutes", func(t *testing.T) {
		cur := base + nowOffset
		for _, last := range []int32{1, 2, 10, 31, 1440} {
			for _, ad := range ads[:5] {
				resp, err := e.qc.GetAggregatedCount(e.ctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, LastMinutes: last, Filter: &clickaggv1.Filter{Country: "jp"}})
				if err != nil {
					t.Fatal(err)
				}
				from := cur - int64(last) + 1
				want := tr.count(ad, from, cur+1, Filter{Country: "JP"})
				if resp.GetCount() != want || resp.GetFrom().GetSeconds() != from*60 || resp.GetTo().GetSeconds() != (cur+1)*60 || resp.GetComplete() {
					t.Errorf("%s last %d: got %v, want %d over [%d, %d) incomplete", ad, last, resp, want, from, cur+1)
				}
			}
		}
	})

	t.Run("popular", func(t *testing.T) {
		// A top list is only a real test of the tie order when the cut
		// falls inside a run of equal counts.
		tieAtCut := 0
		for _, w := range windows {
			for _, f := range filters {
				for _, n := range []int32{1, 5, 37, 100, 1000} {
					resp, err := e.qc.GetPopularAds(e.ctx, &clickaggv1.GetPopularAdsRequest{
						Count: n, WindowMinutes: int32(w.to - w.from), End: ts(w.to, 0, 0), Filter: f.req,
					})
					if err != nil {
						t.Fatalf("%v %+v %d: %v", w, f.want, n, err)
					}
					want := tr.top(w.from, w.to, int(n), f.want)
					all := tr.top(w.from, w.to, 100000, f.want)
					if len(all) > int(n) && all[n-1].Count == all[n].Count {
						tieAtCut++
					}
					complete := slices.Min(tr.wm) >= w.to*minuteMs
					if got := protoAds(resp.GetAds()); !slices.Equal(got, want) || resp.GetComplete() != complete ||
						resp.GetFrom().GetSeconds() != w.from*60 || resp.GetTo().GetSeconds() != w.to*60 {
						t.Errorf("%v %+v count %d:\n got %v complete %v\nwant %v complete %v", w, f.want, n, got, resp.GetComplete(), want, complete)
					}
				}
			}
		}
		if tieAtCut < 10 {
			t.Errorf("only %d top lists were cut inside a tie; the data does not exercise the tie order", tieAtCut)
		}
	})

	t.Run("popular-defaults", func(t *testing.T) {
		// count 100, one window minute ending with the current minute.
		resp, err := e.qc.GetPopularAds(e.ctx, &clickaggv1.GetPopularAdsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		cur := base + nowOffset
		want := tr.top(cur, cur+1, 100, Filter{})
		if got := protoAds(resp.GetAds()); !slices.Equal(got, want) || len(want) == 0 || resp.GetFrom().GetSeconds() != cur*60 {
			t.Errorf("got %v from %v, want %v from minute %d", got, resp.GetFrom(), want, cur)
		}
	})

	t.Run("http", func(t *testing.T) {
		h, err := NewHTTPHandler(e.ctx, NewServer(e.q))
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(h)
		defer hs.Close()
		get := func(path string, v url.Values, into *clickaggv1.GetPopularAdsResponse, intoCount *clickaggv1.GetAggregatedCountResponse) int {
			resp, err := http.Get(hs.URL + path + "?" + v.Encode())
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode == http.StatusOK {
				if into != nil {
					err = protojson.Unmarshal(body, into)
				} else {
					err = protojson.Unmarshal(body, intoCount)
				}
				if err != nil {
					t.Fatalf("decode %s: %v", body, err)
				}
			}
			return resp.StatusCode
		}
		rfc := func(m int64) string { return time.Unix(m*60, 0).UTC().Format(time.RFC3339) }
		for _, w := range windows[:3] {
			for _, ad := range ads[:6] {
				var got clickaggv1.GetAggregatedCountResponse
				code := get("/v1/ads/"+ad+"/aggregated_count", url.Values{"from": {rfc(w.from)}, "to": {rfc(w.to)}, "filter.country": {"us"}}, nil, &got)
				grpcResp, err := e.qc.GetAggregatedCount(e.ctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, From: ts(w.from, 0, 0), To: ts(w.to, 0, 0), Filter: &clickaggv1.Filter{Country: "US"}})
				if err != nil {
					t.Fatal(err)
				}
				want := tr.count(ad, w.from, w.to, Filter{Country: "US"})
				if code != http.StatusOK || got.GetCount() != want || grpcResp.GetCount() != want || got.GetComplete() != grpcResp.GetComplete() {
					t.Errorf("HTTP %s %v: status %d %v; gRPC %v; want %d", ad, w, code, &got, grpcResp, want)
				}
			}
			var got clickaggv1.GetPopularAdsResponse
			code := get("/v1/ads/popular_ads", url.Values{
				"count": {"20"}, "window_minutes": {fmt.Sprint(w.to - w.from)}, "end": {rfc(w.to)}, "filter.country": {"fr"}, "filter.userId": {"u2"},
			}, &got, nil)
			want := tr.top(w.from, w.to, 20, Filter{Country: "FR", UserID: "u2"})
			grpcResp, err := e.qc.GetPopularAds(e.ctx, &clickaggv1.GetPopularAdsRequest{Count: 20, WindowMinutes: int32(w.to - w.from), End: ts(w.to, 0, 0), Filter: &clickaggv1.Filter{Country: "FR", UserId: "u2"}})
			if err != nil {
				t.Fatal(err)
			}
			if code != http.StatusOK || !slices.Equal(protoAds(got.GetAds()), want) || !slices.Equal(protoAds(grpcResp.GetAds()), want) || len(want) == 0 {
				t.Errorf("HTTP popular %v: status %d %v; gRPC %v; want %v", w, code, protoAds(got.GetAds()), protoAds(grpcResp.GetAds()), want)
			}
		}
		// last_minutes, the default window and the snake_case spelling.
		var got clickaggv1.GetAggregatedCountResponse
		if code := get("/v1/ads/ad-007/aggregated_count", url.Values{"last_minutes": {"15"}, "filter.user_id": {"u3"}}, nil, &got); code != http.StatusOK ||
			got.GetCount() != tr.count("ad-007", base+nowOffset-14, base+nowOffset+1, Filter{UserID: "u3"}) {
			t.Errorf("HTTP last_minutes: status %d %v", code, &got)
		}
		// Refusals keep their gRPC code: INVALID_ARGUMENT is 400.
		for _, v := range []url.Values{
			{"count": {"1001"}},
			{"filter.ip": {"10.0.0.256"}},
			{"end": {"yesterday"}},
		} {
			if code := get("/v1/ads/popular_ads", v, nil, nil); code != http.StatusBadRequest {
				t.Errorf("HTTP popular %v: status %d, want 400", v, code)
			}
		}
		if code := get("/v1/ads/ad-007/aggregated_count", url.Values{"from": {rfc(base)}}, nil, nil); code != http.StatusBadRequest {
			t.Errorf("HTTP count with from only: status %d, want 400", code)
		}
	})
}

// unavailable asserts that err is UNAVAILABLE naming exactly the partitions.
func unavailable(t *testing.T, err error, parts []int) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("got %v %q, want UNAVAILABLE", st.Code(), st.Message())
	}
	var prefix string
	if len(parts) == 1 {
		prefix = fmt.Sprintf("partition %d unavailable: ", parts[0])
	} else {
		prefix = fmt.Sprintf("partitions %v unavailable: ", parts)
	}
	if !strings.HasPrefix(st.Message(), prefix) {
		t.Fatalf("message %q does not start with %q", st.Message(), prefix)
	}
}

// TestUnavailableNeverPartial stops an aggregator, unassigns a partition and
// deregisters an owner, and checks that every affected query fails with
// UNAVAILABLE naming the partitions while unaffected counts stay exact.
func TestUnavailableNeverPartial(t *testing.T) {
	tr := newTruth(newPartitioner(t), 2, 2000, 100, 10)
	tr.setAllWatermarks((base + 20) * minuteMs)
	e := newEnv(t, tr, queryConfig())
	e.start()
	topReq := &clickaggv1.GetPopularAdsRequest{Count: 10, WindowMinutes: 10, End: ts(base+10, 0, 0)}
	countOf := func(ad string) (int64, error) {
		resp, err := e.qc.GetAggregatedCount(e.ctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, From: ts(base, 0, 0), To: ts(base+10, 0, 0)})
		return resp.GetCount(), err
	}
	if resp, err := e.qc.GetPopularAds(e.ctx, topReq); err != nil || !slices.Equal(protoAds(resp.GetAds()), tr.top(base, base+10, 10, Filter{})) {
		t.Fatalf("before any failure: %v, %v", resp, err)
	}

	t.Run("unassigned", func(t *testing.T) {
		p := 3
		saved := e.owners[p]
		e.owners[p] = cluster.Owner{}
		e.writeAssignment()
		_, err := countOf(e.adIn(p))
		unavailable(t, err, []int{p})
		_, err = e.qc.GetPopularAds(e.ctx, topReq)
		unavailable(t, err, []int{p})
		other := e.adIn(p + 1)
		if n, err := countOf(other); err != nil || n != tr.count(other, base, base+10, Filter{}) {
			t.Errorf("count of %s in an assigned partition: %d, %v", other, n, err)
		}
		e.owners[p] = saved
		e.writeAssignment()
	})

	t.Run("stopped-aggregator", func(t *testing.T) {
		a := e.aggs[1]
		a.srv.Stop()
		lost := e.partitionsOf(a.id)
		_, err := e.qc.GetPopularAds(e.ctx, topReq)
		unavailable(t, err, lost)
		for _, p := range lost {
			_, err := countOf(e.adIn(p))
			unavailable(t, err, []int{p})
		}
		for p := range partitions {
			if slices.Contains(lost, p) {
				continue
			}
			ad := e.adIn(p)
			if n, err := countOf(ad); err != nil || n != tr.count(ad, base, base+10, Filter{}) {
				t.Errorf("count of %s in live partition %d: %d, %v", ad, p, n, err)
			}
		}
	})

	t.Run("deregistered-owner", func(t *testing.T) {
		a := e.aggs[2]
		if err := e.regs[a.id].Close(e.ctx); err != nil {
			t.Fatal(err)
		}
		delete(e.regs, a.id)
		lost := e.partitionsOf(a.id)
		testserver.Eventually(t, 20*time.Second, func() error {
			if r := e.q.dir.Load().route(lost[0]); r.addr != "" {
				return fmt.Errorf("partition %d still routed to %s", lost[0], r.addr)
			}
			return nil
		})
		// Partitions without a reachable owner fail the query before any
		// call, so the stopped aggregator's partitions are not listed.
		_, err := e.qc.GetPopularAds(e.ctx, topReq)
		unavailable(t, err, lost)
		st, _ := status.FromError(err)
		if !strings.Contains(st.Message(), "owner agg-2 is not a registered aggregator") {
			t.Errorf("message %q does not say why", st.Message())
		}
	})
}

// movingEnv starts 3 aggregators over complete data, for tests that move
// a partition between them.
func movingEnv(t *testing.T, cfg Config) (*env, *truth) {
	tr := newTruth(newPartitioner(t), 3, 2000, 100, 10)
	tr.setAllWatermarks((base + 20) * minuteMs)
	e := newEnv(t, tr, cfg)
	e.start()
	return e, tr
}

// otherThan returns an aggregator other than a.
func (e *env) otherThan(a *fakeAgg) *fakeAgg {
	for _, b := range e.aggs {
		if b != a {
			return b
		}
	}
	return nil
}

// TestRetryAfterMove moves a partition while a count is in flight on its
// old owner, which then refuses: the count is retried once on the new
// owner and is exact.
func TestRetryAfterMove(t *testing.T) {
	e, tr := movingEnv(t, queryConfig())
	p := 5
	ad := e.adIn(p)
	from, to := e.agg(p), e.otherThan(e.agg(p))
	from.mu.Lock()
	from.gate, from.entered = make(chan struct{}), make(chan struct{}, 1)
	from.mu.Unlock()

	type result struct {
		resp *clickaggv1.GetAggregatedCountResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := e.qc.GetAggregatedCount(e.ctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, From: ts(base, 0, 0), To: ts(base+10, 0, 0)})
		done <- result{resp, err}
	}()
	<-from.entered

	// The move: the old owner stops serving p, the new one starts, and the
	// coordinator writes the assignment.
	from.setOwned(slices.DeleteFunc(e.partitionsOf(from.id), func(x int) bool { return x == p }))
	e.owners[p] = cluster.Owner{Member: to.id, Incarnation: e.regs[to.id].Member().Incarnation, Epoch: 2}
	to.setOwned(e.partitionsOf(to.id))
	e.writeAssignment()
	from.mu.Lock()
	close(from.gate)
	from.gate = nil
	from.mu.Unlock()

	r := <-done
	if want := tr.count(ad, base, base+10, Filter{}); r.err != nil || r.resp.GetCount() != want || want == 0 {
		t.Fatalf("count during move: %v, %v; want %d", r.resp, r.err, want)
	}
}

// TestWaitsOutHandoff: the owner of a partition has released it and the
// new owner is not in the assignment yet, as in the middle of a live
// handoff. With MoveWait a query waits for the new owner and is exact;
// without it, it fails at once with UNAVAILABLE naming the partition.
func TestWaitsOutHandoff(t *testing.T) {
	for _, wait := range []time.Duration{0, 20 * time.Second} {
		t.Run(fmt.Sprint("move-wait=", wait), func(t *testing.T) {
			cfg := queryConfig()
			cfg.MoveWait = wait
			e, tr := movingEnv(t, cfg)
			p := 5
			ad := e.adIn(p)
			from, to := e.agg(p), e.otherThan(e.agg(p))
			// Released: the old owner no longer serves p.
			from.setOwned(slices.DeleteFunc(e.partitionsOf(from.id), func(x int) bool { return x == p }))
			count := func() (*clickaggv1.GetAggregatedCountResponse, error) {
				return e.qc.GetAggregatedCount(e.ctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, From: ts(base, 0, 0), To: ts(base+10, 0, 0)})
			}
			if wait == 0 {
				_, err := count()
				unavailable(t, err, []int{p})
				return
			}
			done := make(chan struct{})
			var resp *clickaggv1.GetAggregatedCountResponse
			var err error
			go func() {
				defer close(done)
				resp, err = count()
			}()
			time.Sleep(300 * time.Millisecond)
			e.owners[p] = cluster.Owner{Member: to.id, Incarnation: e.regs[to.id].Member().Incarnation, Epoch: 2}
			to.setOwned(e.partitionsOf(to.id))
			e.writeAssignment()
			<-done
			if want := tr.count(ad, base, base+10, Filter{}); err != nil || resp.GetCount() != want || want == 0 {
				t.Fatalf("count across the handoff: %v, %v; want %d", resp, err, want)
			}
		})
	}
}
