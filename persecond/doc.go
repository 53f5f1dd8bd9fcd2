// Package persecond counts events in each of the last minute's seconds and
// answers their rate: the aggregators' events applied per second of a
// partition, and the routers' events accepted per second.
//
// A Counter is a ring of Window per-second buckets keyed by the Unix second
// of an injected clock, so the rates are exact counts over whole seconds,
// reproducible in tests, not decaying estimates. A bucket is reused when
// its second comes round again, and a bucket of a second that left the
// window is ignored, however long nothing was added.
package persecond
