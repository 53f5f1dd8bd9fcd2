//go:build race

package tally

// raceEnabled scales the heaviest sequential tests down under the race
// detector, which slows them about tenfold without adding anything there:
// only TestConcurrentReaders runs goroutines.
const raceEnabled = true
