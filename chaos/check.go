package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// question is one query of the checks: a count of ad over minutes
// [from, to) with f, or, when n > 0, the top n ads of that window.
type question struct {
	ad       int
	from, to int64
	n        int
	f        filter
}

func (q question) String() string {
	if q.n > 0 {
		return fmt.Sprintf("top %d of [%d, %d) filter %s", q.n, q.from, q.to, q.f)
	}
	return fmt.Sprintf("count of %s over [%d, %d) filter %s", adID(q.ad), q.from, q.to, q.f)
}

// answer is what a queryd answered to a question.
type answer struct {
	count int64
	ads   []*clickaggv1.AdCount
	// complete is the answer's own claim that its minutes are complete.
	complete bool
}

// exactly reports how a differs from the truth, or "" when it equals it.
func (tr *truth) exactly(q question, a answer) string {
	if q.n == 0 {
		if want := tr.count(q.ad, q.from, q.to, q.f); a.count != want {
			return fmt.Sprintf("%s = %d, want %d", q, a.count, want)
		}
		return ""
	}
	want := tr.top(q.from, q.to, q.n, q.f)
	if d := firstDiff(a.ads, want); d != "" {
		return fmt.Sprintf("%s: %d ads, want %d; %s", q, len(a.ads), len(want), d)
	}
	return ""
}

// notAbove reports how a, answered before the data was final, is above
// the truth, or "". Counts only grow toward the truth while clicks are
// being counted (a retried request may still come), so a count below it
// is not wrong then, and a top list may name other ads; but no count may
// ever be above the final truth, and a top list may not be longer than
// asked.
func (tr *truth) notAbove(q question, a answer) string {
	if q.n == 0 {
		if want := tr.count(q.ad, q.from, q.to, q.f); a.count > want {
			return fmt.Sprintf("%s = %d mid-run, above the final %d", q, a.count, want)
		}
		return ""
	}
	if len(a.ads) > q.n {
		return fmt.Sprintf("%s mid-run: %d ads", q, len(a.ads))
	}
	per := tr.perAd(q.from, q.to, q.f)
	for _, c := range a.ads {
		ad := parseAd(c.AdId)
		if ad < 0 || c.Count > per[ad] {
			return fmt.Sprintf("%s mid-run: %s = %d, above the final %d", q, c.AdId, c.Count, per[ad])
		}
	}
	return ""
}

// firstDiff describes the first difference of two top lists, or "".
func firstDiff(got, want []*clickaggv1.AdCount) string {
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = fmt.Sprintf("%s=%d", got[i].AdId, got[i].Count)
		}
		if i < len(want) {
			w = fmt.Sprintf("%s=%d", want[i].AdId, want[i].Count)
		}
		if g != w {
			return fmt.Sprintf("#%d got %q want %q", i, g, w)
		}
	}
	return ""
}

func minuteTS(m int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(m*60, 0)) }

// asker asks one queryd, over gRPC or HTTP.
type asker interface {
	ask(ctx context.Context, q question) (answer, error)
	String() string
}

type grpcAsker struct {
	name string
	qc   clickaggv1.QueryServiceClient
}

func (g grpcAsker) String() string { return g.name + " grpc" }

func (g grpcAsker) ask(ctx context.Context, q question) (answer, error) {
	if q.n > 0 {
		resp, err := g.qc.GetPopularAds(ctx, &clickaggv1.GetPopularAdsRequest{
			Count: int32(q.n), WindowMinutes: int32(q.to - q.from), End: minuteTS(q.to), Filter: q.f.proto(),
		})
		if err != nil {
			return answer{}, err
		}
		if resp.From.AsTime().Unix() != q.from*60 || resp.To.AsTime().Unix() != q.to*60 {
			return answer{}, fmt.Errorf("%s: answered for [%v, %v)", q, resp.From.AsTime(), resp.To.AsTime())
		}
		return answer{ads: resp.Ads, complete: resp.Complete}, nil
	}
	resp, err := g.qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{
		AdId: adID(q.ad), From: minuteTS(q.from), To: minuteTS(q.to), Filter: q.f.proto(),
	})
	if err != nil {
		return answer{}, err
	}
	return answer{count: resp.Count, complete: resp.Complete}, nil
}

type httpAsker struct {
	name string
	base string
	hc   *http.Client
}

func (h httpAsker) String() string { return h.name + " http" }

func (h httpAsker) ask(ctx context.Context, q question) (answer, error) {
	v := url.Values{}
	if p := q.f.proto(); p != nil {
		if p.Country != "" {
			v.Set("filter.country", p.Country)
		}
		if p.Ip != "" {
			v.Set("filter.ip", p.Ip)
		}
		if p.UserId != "" {
			v.Set("filter.user_id", p.UserId)
		}
	}
	rfc := func(m int64) string { return time.Unix(m*60, 0).UTC().Format(time.RFC3339) }
	var u string
	if q.n > 0 {
		v.Set("count", strconv.Itoa(q.n))
		v.Set("window_minutes", strconv.FormatInt(q.to-q.from, 10))
		v.Set("end", rfc(q.to))
		u = h.base + "/v1/ads/popular_ads?" + v.Encode()
	} else {
		v.Set("from", rfc(q.from))
		v.Set("to", rfc(q.to))
		u = h.base + "/v1/ads/" + url.PathEscape(adID(q.ad)) + "/aggregated_count?" + v.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return answer{}, err
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return answer{}, fmt.Errorf("GET %s: %s: %.200s", u, resp.Status, body)
	}
	// int64 is a JSON string in protojson.
	var r struct {
		Complete bool   `json:"complete"`
		Count    string `json:"count"`
		Ads      []struct {
			AdID  string `json:"adId"`
			Count string `json:"count"`
		} `json:"ads"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return answer{}, fmt.Errorf("GET %s: %w: %.200s", u, err, body)
	}
	a := answer{complete: r.Complete}
	if q.n == 0 {
		if a.count, err = strconv.ParseInt(r.Count, 10, 64); err != nil {
			return answer{}, fmt.Errorf("GET %s: count %q: %w", u, r.Count, err)
		}
		return a, nil
	}
	for _, c := range r.Ads {
		n, err := strconv.ParseInt(c.Count, 10, 64)
		if err != nil {
			return answer{}, fmt.Errorf("GET %s: count %q: %w", u, c.Count, err)
		}
		a.ads = append(a.ads, &clickaggv1.AdCount{AdId: c.AdID, Count: n})
	}
	return a, nil
}

// tally counts the answers checked and keeps the first wrong ones.
type tally struct {
	checked, wrong, failed atomic.Int64
	mu                     sync.Mutex
	first                  []string
}

const keepWrong = 20

// check records one checked answer; why is "" when it was right.
func (t *tally) check(phase string, by fmt.Stringer, why string) {
	t.checked.Add(1)
	if why == "" {
		return
	}
	t.wrong.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.first) < keepWrong {
		t.first = append(t.first, phase+": "+by.String()+": "+why)
	}
}

// wrongs returns the first wrong answers.
func (t *tally) wrongs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.first...)
}

// name is a fmt.Stringer for who answered outside the queryds.
type name string

func (n name) String() string { return string(n) }

// observation is an answer given before the data was final, checked
// against the final truth at the end.
type observation struct {
	q  question
	a  answer
	by asker
}

// filters are the filters the exact checks ask with: every sampled
// country, a few sampled users and ips (IPv6 and v4) and combinations.
func filters() []filter {
	out := []filter{noFilter}
	for _, c := range sampleCountries {
		out = append(out, filter{c, -1, -1})
	}
	for _, u := range []int{0, 1, 2} {
		out = append(out, filter{-1, u, -1})
	}
	for _, ip := range []int{0, 1, 2} {
		out = append(out, filter{-1, -1, ip})
	}
	return append(out, filter{sampleCountries[0], -1, 1}, filter{sampleCountries[0], -1, 0}, filter{sampleCountries[0], 0, -1})
}
