package bench

// keySet is the (ad, minute) keys of a span, one bit each: the producer
// counts the keys the workload has put in the cluster without keeping the
// events, and the sweep moves with that count.
type keySet struct {
	ads     int64
	minute0 int64
	minutes int64
	bits    []uint64
	n       int64
}

func newKeySet(ads int, spanStartMs, spanEndMs int64) *keySet {
	k := &keySet{
		ads:     int64(ads),
		minute0: floorDiv(spanStartMs, 60_000),
		minutes: floorDiv(spanEndMs-1, 60_000) - floorDiv(spanStartMs, 60_000) + 1,
	}
	k.bits = make([]uint64, (k.ads*k.minutes+63)/64)
	return k
}

// add records e's key and reports whether it is new. Keys outside the span
// or the workload's ads (probes) are not counted.
func (k *keySet) add(e Event) bool {
	m := e.Minute() - k.minute0
	if m < 0 || m >= k.minutes || int64(e.Ad) >= k.ads {
		return false
	}
	i := m*k.ads + int64(e.Ad)
	w, b := i>>6, uint64(1)<<(i&63)
	if k.bits[w]&b != 0 {
		return false
	}
	k.bits[w] |= b
	k.n++
	return true
}

// len is the number of keys added.
func (k *keySet) len() int64 { return k.n }
