package bench

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"runtime/pprof"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/topn"
)

// queryKind is one kind of query whose latency is reported.
type queryKind struct {
	id      string
	label   string
	top     bool
	country bool
	long    bool // over the whole span; else over one minute (top) only
}

func queryKinds(spanMinutes int64) []queryKind {
	span := fmt.Sprintf("%d min", spanMinutes)
	return []queryKind{
		{id: "count", label: "GetAggregatedCount over " + span, long: true},
		{id: "count_country", label: "GetAggregatedCount over " + span + ", by country", long: true, country: true},
		{id: "top1", label: "GetPopularAds(100) over 1 min", top: true},
		{id: "top1_country", label: "GetPopularAds(100) over 1 min, by country", top: true, country: true},
		{id: "top", label: "GetPopularAds(100) over " + span, top: true, long: true},
		{id: "top_country", label: "GetPopularAds(100) over " + span + ", by country", top: true, long: true, country: true},
	}
}

// query is one query of a kind: the ad (counts) and the country filter.
type query struct {
	ad      string
	country string
}

// answer is what a query returned.
type answer struct {
	count int64
	top   []topn.AdCount
}

func (a answer) equal(b answer) bool {
	return a.count == b.count && slices.Equal(a.top, b.top)
}

// keepAnswers is how many answers of each kind are kept to check that the
// cluster and the in-process state agree.
const keepAnswers = 20

// queries returns the i-th query of kind k: ads are drawn with the
// workload's popularity (people ask about the ads that are clicked) and
// countries with theirs. The same k and i always give the same query.
func (r *run) queries(k queryKind, n int) []query {
	seed := r.cfg.Workload.Seed ^ 0x5eed
	for _, c := range k.id {
		seed = seed*31 + uint64(c)
	}
	g := NewGenerator(r.cfg.Workload, 0)
	g.rng = rand.New(rand.NewPCG(seed, seed+1))
	g.zipf = rand.NewZipf(g.rng, r.cfg.Workload.ZipfS, 1, uint64(r.cfg.Workload.Ads-1))
	out := make([]query, n)
	for i := range out {
		var q query
		if !k.top {
			q.ad = r.names.AdID(uint32(g.zipf.Uint64()))
		}
		if k.country {
			q.country = Countries[g.pickCountry()]
		}
		out[i] = q
	}
	return out
}

// window returns the minutes [from, to) a kind covers.
func (r *run) window(k queryKind) (int64, int64) {
	if k.long {
		return r.spanStart / 60_000, r.spanEnd / 60_000
	}
	return r.ingestMid, r.ingestMid + 1
}

// measure runs do for the queries of k, one at a time, for QueryTime (at
// least minN and at most maxN times), and returns the latencies
// and the first answers.
func (r *run) measure(ctx context.Context, k queryKind, qs []query, minN, maxN int, do func(query) (answer, error)) (*Latencies, []answer, error) {
	lat := &Latencies{}
	var answers []answer
	start := time.Now()
	for i := 0; i < maxN; i++ {
		if i >= minN && time.Since(start) >= r.cfg.QueryTime {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		t := time.Now()
		a, err := do(qs[i%len(qs)])
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", k.label, err)
		}
		lat.Add(time.Since(t))
		if len(answers) < keepAnswers {
			answers = append(answers, a)
		}
	}
	return lat, answers, nil
}

// clusterQuery asks queryd.
func (r *run) clusterQuery(ctx context.Context, k queryKind, q query) (answer, error) {
	from, to := r.window(k)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var f *clickaggv1.Filter
	if q.country != "" {
		f = &clickaggv1.Filter{Country: q.country}
	}
	if !k.top {
		c, err := r.query.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{
			AdId: q.ad, From: minuteTS(from), To: minuteTS(to), Filter: f,
		})
		if err != nil {
			return answer{}, err
		}
		return answer{count: c.Count}, nil
	}
	t, err := r.query.GetPopularAds(ctx, &clickaggv1.GetPopularAdsRequest{
		Count: 100, WindowMinutes: int32(to - from), End: minuteTS(to), Filter: f,
	})
	if err != nil {
		return answer{}, err
	}
	out := make([]topn.AdCount, len(t.Ads))
	for i, a := range t.Ads {
		out[i] = topn.AdCount{AdID: a.AdId, Count: a.Count}
	}
	return answer{top: out}, nil
}

func minuteTS(m int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(m*60, 0)) }

// queryResult is the latency of one kind of query on one system.
type queryResult struct {
	lat     *Latencies
	answers []answer
}

// runClusterQueries measures every kind of query on the cluster; with the
// cluster in this process, under the CPU profiler (r.queryProfile).
func (r *run) runClusterQueries(ctx context.Context) (map[string]*queryResult, error) {
	out := map[string]*queryResult{}
	if r.targets.InProcess && r.cfg.ProfileDuration > 0 {
		var buf bytes.Buffer
		if pprof.StartCPUProfile(&buf) == nil {
			defer func() {
				pprof.StopCPUProfile()
				r.queryProfile = buf.Bytes()
			}()
		}
	}
	for _, k := range r.kinds {
		r.progress.set("cluster queries", k.label)
		qs := r.queries(k, r.cfg.QueryMaxSamples)
		lat, ans, err := r.measure(ctx, k, qs, r.cfg.QueryMinSamples, r.cfg.QueryMaxSamples, func(q query) (answer, error) { return r.clusterQuery(ctx, k, q) })
		if err != nil {
			return nil, err
		}
		out[k.id] = &queryResult{lat: lat, answers: ans}
	}
	return out, nil
}
