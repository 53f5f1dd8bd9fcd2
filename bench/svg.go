package bench

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Chart geometry, in SVG user units.
const (
	chartW, chartH           = 960, 420
	padL, padR, padT, padB   = 80, 80, 50, 60
	plotW, plotH             = chartW - padL - padR, chartH - padT - padB
	colorAcked, colorApplied = "#1f77b4", "#2ca02c"
	colorFresh, colorSpan    = "#ff7f0e", "#eeeeee"
	colorGrid, colorAxis     = "#dddddd", "#333333"
	font                     = `font-family="sans-serif" font-size="12"`
)

// niceStep returns a step of 1, 2 or 5 times a power of ten that divides
// [0, max] into about n intervals.
func niceStep(maxV float64, n int) float64 {
	if maxV <= 0 || math.IsNaN(maxV) || math.IsInf(maxV, 0) {
		return 1
	}
	raw := maxV / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// ChartSVG draws events acknowledged and applied per second (left axis) and
// every freshness probe (right axis) over the run, with its phases shaded.
func ChartSVG(tl Timeline, title string) string {
	c := newChart(tl)
	c.frame(tl, title)
	c.series(tl)
	c.legend()
	c.p("</svg>\n")
	return c.b.String()
}

// chart is an SVG chart being drawn, and its scales: time on x, the rates
// and freshness (whole decades of milliseconds, a log scale) on y.
type chart struct {
	b            strings.Builder
	tStep, tTop  float64
	rateTop      float64
	loDec, hiDec float64
}

// newChart sets the scales to fit tl.
func newChart(tl Timeline) *chart {
	c := &chart{}
	maxT, maxRate, maxFresh := 1.0, 0.0, 0.0
	for _, pt := range tl.Points {
		maxT = max(maxT, pt.T)
		maxRate = max(maxRate, pt.Acked)
		if !math.IsNaN(pt.Applied) {
			maxRate = max(maxRate, pt.Applied)
		}
	}
	for _, s := range tl.Freshness {
		maxT = max(maxT, s.T)
		maxFresh = max(maxFresh, s.Latency.Seconds()*1000)
	}
	for _, s := range tl.Spans {
		maxT = max(maxT, s.To)
	}
	rateStep := niceStep(maxRate, 5)
	c.rateTop = math.Max(rateStep, math.Ceil(maxRate/rateStep)*rateStep)
	// Freshness spans milliseconds when the pipeline keeps up and seconds
	// when it does not: a log scale, whole decades of milliseconds.
	minFresh := math.Inf(1)
	for _, s := range tl.Freshness {
		if ms := s.Latency.Seconds() * 1000; ms > 0 {
			minFresh = math.Min(minFresh, ms)
		}
	}
	c.loDec, c.hiDec = 0.0, 1.0 // 1 ms to 10 ms when there is nothing to show
	if !math.IsInf(minFresh, 1) {
		c.loDec = math.Floor(math.Log10(minFresh))
		c.hiDec = math.Max(c.loDec+1, math.Ceil(math.Log10(maxFresh)))
	}
	c.tStep = niceStep(maxT, 10)
	c.tTop = math.Ceil(maxT/c.tStep) * c.tStep

	return c
}

func (c *chart) p(format string, args ...any) { fmt.Fprintf(&c.b, format, args...) }

func (c *chart) x(t float64) float64 { return padL + t/c.tTop*plotW }

func (c *chart) yRate(v float64) float64 { return padT + plotH - v/c.rateTop*plotH }

func (c *chart) yFresh(ms float64) float64 {
	d := c.loDec
	if ms > 0 {
		d = math.Max(c.loDec, math.Log10(ms))
	}
	return padT + plotH - (d-c.loDec)/(c.hiDec-c.loDec)*plotH
}

// frame draws the title, the phases, the grid and the axes.
func (c *chart) frame(tl Timeline, title string) {
	c.p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n", chartW, chartH, chartW, chartH)
	c.p(`<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	c.p(`<text x="%d" y="22" font-family="sans-serif" font-size="15" font-weight="bold">%s</text>`+"\n", padL, html.EscapeString(title))

	for _, s := range tl.Spans {
		x0, x1 := c.x(s.From), c.x(s.To)
		c.p(`<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0, padT, math.Max(0, x1-x0), plotH, colorSpan)
		c.p(`<text x="%.1f" y="%d" %s fill="#666666">%s</text>`+"\n", x0+4, padT+14, font, html.EscapeString(s.Name))
		c.p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#bbbbbb"/>`+"\n", x0, padT, x0, padT+plotH)
	}
	// Horizontal grid with the rate labels on the left; freshness decades
	// on the right, with tick marks.
	for i := 0; i <= 5; i++ {
		frac := float64(i) / 5
		y := padT + plotH - frac*plotH
		c.p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", padL, y, padL+plotW, y, colorGrid)
		c.p(`<text x="%d" y="%.1f" %s text-anchor="end" fill="%s">%s</text>`+"\n", padL-6, y+4, font, colorAcked, si(frac*c.rateTop)+"/s")
	}
	for d := c.loDec; d <= c.hiDec; d++ {
		y := c.yFresh(math.Pow(10, d))
		c.p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", padL+plotW, y, padL+plotW+4, y, colorFresh)
		c.p(`<text x="%d" y="%.1f" %s fill="%s">%s</text>`+"\n", padL+plotW+6, y+4, font, colorFresh, formatSeconds(math.Pow(10, d)/1000))
	}
	for t := 0.0; t <= c.tTop+1e-9; t += c.tStep {
		c.p(`<text x="%.1f" y="%d" %s text-anchor="middle">%s</text>`+"\n", c.x(t), padT+plotH+18, font, trimFloat(t))
	}
	c.p(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="%s"/>`+"\n", padL, padT, plotW, plotH, colorAxis)
	c.p(`<text x="%d" y="%d" %s text-anchor="middle">seconds since the run started</text>`+"\n", padL+plotW/2, chartH-14, font)
	c.p(`<text x="18" y="%d" %s text-anchor="middle" fill="%s" transform="rotate(-90 18 %d)">events per second</text>`+"\n", padT+plotH/2, font, colorAcked, padT+plotH/2)
	c.p(`<text x="%d" y="%d" %s text-anchor="middle" fill="%s" transform="rotate(90 %d %d)">freshness, log scale</text>`+"\n", chartW-14, padT+plotH/2, font, colorFresh, chartW-14, padT+plotH/2)

}

// series draws the rates' lines and the probes' points.
func (c *chart) series(tl Timeline) {
	var acked, applied []string
	for _, pt := range tl.Points {
		acked = append(acked, fmt.Sprintf("%.1f,%.1f", c.x(pt.T), c.yRate(pt.Acked)))
		if !math.IsNaN(pt.Applied) {
			applied = append(applied, fmt.Sprintf("%.1f,%.1f", c.x(pt.T), c.yRate(pt.Applied)))
		}
	}
	if len(applied) > 0 {
		c.p(`<polyline id="applied" fill="none" stroke="%s" stroke-width="1.5" stroke-dasharray="5,3" points="%s"/>`+"\n", colorApplied, strings.Join(applied, " "))
	}
	if len(acked) > 0 {
		c.p(`<polyline id="acked" fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colorAcked, strings.Join(acked, " "))
	}
	c.p(`<g id="freshness" fill="%s">`+"\n", colorFresh)
	for _, s := range tl.Freshness {
		c.p(`<circle cx="%.1f" cy="%.1f" r="2"/>`+"\n", c.x(s.T), c.yFresh(s.Latency.Seconds()*1000))
	}
	c.p("</g>\n")

}

// legend draws the legend above the plot.
func (c *chart) legend() {
	lx, ly := padL, 42
	c.p(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/><text x="%d" y="%d" %s>acknowledged/s</text>`+"\n", lx, ly, lx+24, ly, colorAcked, lx+30, ly+4, font)
	lx += 150
	c.p(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="1.5" stroke-dasharray="5,3"/><text x="%d" y="%d" %s>applied by aggregators/s</text>`+"\n", lx, ly, lx+24, ly, colorApplied, lx+30, ly+4, font)
	lx += 200
	c.p(`<circle cx="%d" cy="%d" r="3" fill="%s"/><text x="%d" y="%d" %s>freshness of one probe (right axis)</text>`+"\n", lx+12, ly, colorFresh, lx+30, ly+4, font)
}

func trimFloat(f float64) string {
	s := fmt.Sprintf("%.2f", f)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
