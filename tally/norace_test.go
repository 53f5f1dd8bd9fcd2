//go:build !race

package tally

const raceEnabled = false
