package tally

import (
	"fmt"
	"math/rand/v2"
)

// genConfig describes a synthetic partition log.
type genConfig struct {
	seed    uint64
	events  int     // distinct events before duplication
	minutes int     // span of the routers' clock
	ads     int     // ads, Zipf distributed
	dupRate float64 // share of events re-sent later
	// sharedIDRate is the share of events that take the event_id of an
	// earlier one, mostly of another ad: different clicks, since a click is
	// the pair (ad_id, event_id).
	sharedIDRate float64
}

// genLog builds a log that looks like a router's output: events roughly in
// click-time order but shuffled within windows, mostly a few seconds behind
// the clock, some minutes behind (late), a few beyond the dedup horizon;
// duplicates re-sent soon or much later; ticks interleaved, sometimes in the
// same entry as a batch, sometimes from a router whose clock lags.
func genLog(cfg genConfig) []entry {
	r := rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15))
	zipf := rand.NewZipf(r, 1.15, 2, uint64(cfg.ads-1))
	countries := []string{"US", "US", "US", "DE", "DE", "FR", "GB", "JP", "BR", "IN"}
	start := at(0, 0) + r.Int64N(60_000)
	step := float64(cfg.minutes*60_000) / float64(cfg.events)

	var sent []click
	var entries []entry
	var window []click
	nextID := 1000
	newID := func() string {
		nextID++
		return fmt.Sprintf("%d-%d", nextID, r.IntN(3))
	}
	flush := func(clock int64) {
		r.Shuffle(len(window), func(i, j int) { window[i], window[j] = window[j], window[i] })
		for len(window) > 0 {
			n := min(len(window), 1+r.IntN(64))
			entries = append(entries, entry{id: newID(), clicks: window[:n:n]})
			window = window[n:]
		}
		window = nil
		switch x := r.Float64(); {
		case x < 0.5:
			entries = append(entries, entry{id: newID(), tick: clock})
		case x < 0.7:
			entries[len(entries)-1].tick = clock
		case x < 0.8:
			entries = append(entries, entry{id: newID(), tick: clock - 5_000 - r.Int64N(30_000)})
		}
	}
	for i := range cfg.events {
		clock := start + int64(float64(i)*step)
		if len(sent) > 0 && r.Float64() < cfg.dupRate {
			var d click
			if r.IntN(10) < 6 {
				d = sent[max(0, len(sent)-2000)+r.IntN(min(len(sent), 2000))]
			} else {
				d = sent[r.IntN(len(sent))]
			}
			window = append(window, d)
		}
		var delay int64
		switch x := r.Float64(); {
		case x < 0.90:
			delay = r.Int64N(3_000)
		case x < 0.97:
			delay = r.Int64N(90_000)
		case x < 0.995:
			delay = r.Int64N(8 * 60_000)
		default:
			delay = r.Int64N(20 * 60_000)
		}
		c := click{
			id:      fmt.Sprintf("ev-%d-%d", cfg.seed, i),
			ad:      fmt.Sprintf("ad%04d", zipf.Uint64()),
			ms:      clock - delay,
			country: countries[r.IntN(len(countries))],
			ip:      fmt.Sprintf("10.0.%d.%d", r.IntN(4), r.IntN(100)),
			user:    fmt.Sprintf("u%d", r.IntN(1500)),
		}
		if cfg.sharedIDRate > 0 && len(sent) > 0 && r.Float64() < cfg.sharedIDRate {
			c.id = sent[max(0, len(sent)-500)+r.IntN(min(len(sent), 500))].id
		}
		sent = append(sent, c)
		window = append(window, c)
		if len(window) >= 300 {
			flush(clock)
		}
	}
	flush(start + int64(float64(cfg.events)*step))
	return entries
}
