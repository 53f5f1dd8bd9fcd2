package tally

// Memory is what a partition's state holds, split into its three budgets
// (see the package documentation), and what Top caches. The byte figures are computed from the
// sizes of its tables and columns, not measured on the heap: they leave out
// the headers of Go objects and the allocator's rounding.
type Memory struct {
	// Keys is the number of (ad, minute) keys in memory.
	Keys int64
	// RowBytes holds the clicks per ad and per (ad, country): the bases'
	// columns, the deltas' tables, and the ad and country tables.
	RowBytes int64
	// Events is the number of counted events in memory; FilterBytes holds
	// their user and ip hashes and the event indexes built so far.
	Events, FilterBytes int64
	// DedupIDs is the number of clicks (ad_id, event_id) remembered for dedup;
	// DedupBytes holds them.
	DedupIDs, DedupBytes int64
	// TopCacheBytes holds what Top caches: per-ad sums of complete minutes
	// and the journal of late events since (see topcache.go).
	TopCacheBytes int64
	// CountryIndexBytes holds the bases' rows grouped by country, built by
	// the first country query that reads each base (8 bytes per row).
	CountryIndexBytes int64
}

// Add adds o's figures to m, to sum partitions.
func (m *Memory) Add(o Memory) {
	m.Keys += o.Keys
	m.RowBytes += o.RowBytes
	m.Events += o.Events
	m.FilterBytes += o.FilterBytes
	m.DedupIDs += o.DedupIDs
	m.DedupBytes += o.DedupBytes
	m.TopCacheBytes += o.TopCacheBytes
	m.CountryIndexBytes += o.CountryIndexBytes
}

// Memory returns what the state holds.
func (p *Partition) Memory() Memory {
	p.mu.RLock()
	defer p.mu.RUnlock()
	u := Memory{
		RowBytes:      int64(p.ads.memBytes() + p.countries.memBytes()),
		TopCacheBytes: int64(p.tops.memBytes() + 16*cap(p.late)),
	}
	for _, m := range p.minutes {
		b := &m.base
		u.Keys += int64(len(b.ads))
		u.Events += int64(len(b.users))
		u.RowBytes += int64(b.memBytes())
		u.FilterBytes += int64(8*cap(b.users) + 8*cap(b.ips) + b.indexBytes())
		u.CountryIndexBytes += int64(b.countryIndexBytes())
		u.DedupIDs += int64(len(b.hashes))
		u.DedupBytes += int64(8 * cap(b.hashes))
		d := m.delta
		if d == nil {
			continue
		}
		u.Events += int64(len(d.users))
		u.RowBytes += int64(d.rows.memBytes() + d.ads.memBytes() + 8*cap(d.heavyRows) + 4*cap(d.heavyAds))
		u.FilterBytes += int64(8*cap(d.keys) + 8*cap(d.users) + 8*cap(d.ips))
		u.DedupIDs += int64(d.seen.len())
		u.DedupBytes += int64(d.seen.memBytes())
		for _, k := range d.ads.keys {
			if k == 0 {
				continue
			}
			if _, ok := p.findAd(b, uint32(k)); !ok {
				u.Keys++ // a key of the delta only
			}
		}
	}
	return u
}
