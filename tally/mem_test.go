package tally

// memUsage is Memory as the benchmarks use it.
type memUsage struct {
	keys, rowBytes, filterBytes, dedupBytes, dedupIDs int
}

func memOf(p *Partition) memUsage {
	m := p.Memory()
	return memUsage{keys: int(m.Keys), rowBytes: int(m.RowBytes), filterBytes: int(m.FilterBytes), dedupBytes: int(m.DedupBytes), dedupIDs: int(m.DedupIDs)}
}
