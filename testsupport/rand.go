package testsupport

import "math/rand/v2"

// NewRand returns a generator whose sequence depends only on seed, so a
// failing test replays with the same data. It is not safe for concurrent
// use; give each goroutine its own.
func NewRand(seed uint64) *rand.Rand {
	// The second PCG word is derived from the seed so one number names the
	// stream; the constant is the 64-bit golden ratio, as loadgen uses.
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}
