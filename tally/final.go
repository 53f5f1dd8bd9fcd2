package tally

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// FinalRow is one (ad, country) row of a minute that can no longer change:
// the minute has left the dedup horizon, so no event can be counted in it
// any more.
type FinalRow struct {
	Minute  int64 // Unix minute
	AdID    string
	Country string
	Clicks  int64
	// Revision is the minute's: how many events it counted after it
	// completed.
	Revision int64
	// UserHashes and IPHashes are the xxhash of the user_id and of the ip
	// of each click of the row, in log order: what filters by user_id and
	// ip compare.
	UserHashes, IPHashes []uint64
}

var (
	// ErrNotFinal is returned by Final for minutes that can still change.
	ErrNotFinal = errors.New("tally: minutes can still change")
	// ErrGone is returned by Final for minutes that may have left memory.
	ErrGone = errors.New("tally: minutes have left memory")
)

// Final returns the rows of the minutes [from, to), ordered by ad_id, then
// minute, then country: the order of the history's files, in which one ad's
// rows are together. It fails with ErrNotFinal unless every minute of the
// range has left the dedup horizon, and with ErrGone if the first may have
// left memory (its rows would be missing). The rows are a function of the
// log alone, so every owner of the partition returns the same ones.
func (p *Partition) Final(from, to int64) ([]FinalRow, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if from >= to {
		return nil, nil
	}
	if minuteEnd(to-1) > subSat(p.watermark, p.horizonMs) {
		return nil, fmt.Errorf("%w: minutes %d to %d, watermark %d", ErrNotFinal, from, to, p.watermark)
	}
	if minuteEnd(from) <= subSat(p.watermark, p.retentionMs) {
		return nil, fmt.Errorf("%w: minutes %d to %d, watermark %d", ErrGone, from, to, p.watermark)
	}
	var rows []FinalRow
	for _, start := range p.window(from, to) {
		m := p.minutes[start]
		// Frozen minutes are merged: the base is all of it.
		b := &m.base
		r, e := 0, 0
		for i, ad := range b.ads {
			for end := r + b.rowsOf(i); r < end; r++ {
				n := b.count(r)
				rows = append(rows, FinalRow{
					Minute: start, AdID: p.ads.str(ad), Country: p.countries.str(b.country(r)),
					Clicks: int64(n), Revision: m.revision,
					UserHashes: slices.Clone(b.users[e : e+n]), IPHashes: slices.Clone(b.ips[e : e+n]),
				})
				e += n
			}
		}
	}
	slices.SortFunc(rows, func(a, b FinalRow) int {
		return cmp.Or(strings.Compare(a.AdID, b.AdID), cmp.Compare(a.Minute, b.Minute), strings.Compare(a.Country, b.Country))
	})
	return rows, nil
}

// FirstMinute returns the first minute in memory, and false when there is
// none.
func (p *Partition) FirstMinute() (int64, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if len(p.order) == 0 {
		return 0, false
	}
	return p.order[0], true
}

// MinuteRevision is a minute's revision: how many events it counted after
// it completed.
type MinuteRevision struct {
	Minute   int64 // Unix minute
	Revision int64
}

// Revisions returns the minutes of [from, to) in memory whose revision is
// above zero, in ascending order. A minute's revision grows with every
// event counted after it completed, so a reader that remembers the
// revisions it saw learns which complete minutes changed since, without
// reading their counts. Revisions are a function of the log alone: every
// owner of the partition that applied the same entries returns the same.
// Minutes that left memory are absent; they can no longer change.
func (p *Partition) Revisions(from, to int64) []MinuteRevision {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []MinuteRevision
	for _, start := range p.window(from, to) {
		if r := p.minutes[start].revision; r > 0 {
			out = append(out, MinuteRevision{Minute: start, Revision: r})
		}
	}
	return out
}
